"""tfcnn.bench's peers, each run in a child process that prints one JSON line: the PyTorch reference
(benchmarks/torch_peers.py in its own venv) in its variants, and plain Keras (python -m tfcnn.bench --naive-child)."""
import json
import os
import subprocess
from pathlib import Path

from tfcnn.errors import TfcnnError
from tfcnn.hardware import load_average

REPO = Path(__file__).resolve().parents[1]
TORCH_PEERS = REPO / "benchmarks" / "torch_peers.py"
DEFAULT_TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"
TORCH_SETUP = ("python3 -m venv .venv-torch && .venv-torch/bin/pip install -r benchmarks/requirements-torch.txt")
# PyTorch variants: (label, torch_peers.py flags, precision). channels_last only matters for convolutions.
TORCH_VARIANTS = {
    "resnet": (("channels_last", ["--channels-last"], "float32"),
               ("NCHW", [], "float32"),
               ("channels_last bf16", ["--channels-last", "--precision", "bfloat16"], "bfloat16"),
               ("compile channels_last", ["--channels-last", "--compile"], "float32"),
               ("compile channels_last bf16", ["--channels-last", "--compile", "--precision", "bfloat16"],
                "bfloat16")),
    "other": (("eager", [], "float32"),
              ("bf16", ["--precision", "bfloat16"], "bfloat16"),
              ("compile", ["--compile"], "float32"),
              ("compile bf16", ["--compile", "--precision", "bfloat16"], "bfloat16")),
}


def child_json(cmd, what, env=None):
    """Run a peer benchmark; its last stdout line is one JSON object."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    except OSError as exc:
        raise TfcnnError(f"could not start {what} ({cmd[0]}: {exc.strerror})") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TfcnnError(f"{what} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def torch_cmd(torch_python, arch, dataset, batch_size, steps, stack_n, width, flags):
    cmd = [str(torch_python), str(TORCH_PEERS), "--arch", arch, "--dataset", dataset, "--batch-size", str(batch_size),
           "--steps", str(steps)]
    if stack_n:
        cmd += ["--stack-n", str(stack_n)]
    if width:
        cmd += ["--width", str(width)]
    return cmd + list(flags)


def torch_variants(arch, wanted):
    """The PyTorch variants to time: all of TORCH_VARIANTS for the arch, or the comma list `wanted`."""
    variants = TORCH_VARIANTS["resnet" if arch == "resnet" else "other"]
    if not wanted:
        return variants
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    known = {v[0]: v for v in variants}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise TfcnnError(f"--pytorch-variants takes a comma list of {', '.join(known)}; got {wanted!r}")
    return [known[n] for n in names]


def torch_env(policy):
    """The PyTorch child's environment. libgomp's worker threads spin while they wait; when other
    processes share the cores, a spinning thread holds a core another thread needs, and PyTorch's
    ResNet-32 step slows down several times over (docs/results/performance.md).
    "auto" picks PASSIVE when the 1-minute load average is at least the core count, else
    leaves libgomp's default."""
    env = dict(os.environ)
    if policy == "auto":
        load = load_average()
        policy = "PASSIVE" if load and load[0] >= (os.cpu_count() or 1) else "default"
    if policy == "default":
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = policy
    return env, policy


class DidNotRun(Exception):
    """A peer variant that cannot run on this machine (e.g. torch.compile without a C compiler)."""


def child_rates(cmd, what, window_key, env=None):
    out = child_json(cmd, what, env=env)
    if "error" in out:
        raise DidNotRun(out["error"])
    return out[window_key], out["median_step_images_per_s"], out.get("cpu_ms_per_image")
