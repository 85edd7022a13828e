"""Where does a training step's time go? tfcnn (TF profiler) vs PyTorch (torch.profiler), by op kind.

    .venv/bin/python benchmarks/step_profile.py --stack-n 5 --mixed-precision float32 --steps 5

The tfcnn side profiles `--steps` steps of the trainer's model and compile (tfcnn.bench's session,
synthetic in-memory batches, so no input pipeline) with TF's profiler and sums each op type's
self time (framework_op_stats). The PyTorch side runs the shared reference network
(benchmarks/torch_peers.py --profile, channels_last unless --nchw, bf16 autocast with --mixed-precision bfloat16) under torch.profiler and sums
each aten op's self CPU time. Both are mapped to the same groups (convolution forward, convolution
backward, batch norm, relu, elementwise, optimizer, ...), printed as ms per step and share
of the profiled op time, so the two frameworks' costs can be compared group by group. Only the
shares are comparable across a busy machine; the 1-minute load average is printed with them.
"""
import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (group, substrings of TF op types / aten op names), first match wins; matched case-insensitively
GROUPS = (
    # PyTorch computes both gradients of a convolution in one op (aten::convolution_backward), TF in two
    ("conv backward (data + weights)", ("backpropfilter", "backpropinput", "convolution_backward")),
    ("conv forward", ("conv2d", "convolution", "conv")),
    ("batch norm", ("batchnorm", "batch_norm")),
    ("optimizer update", ("apply", "assign", "sgd", "_foreach", "momentum", "readvariable", "resourcegather")),
    ("weight decay", ("l2loss",)),
    ("relu", ("relu", "threshold", "clamp_min")),
    ("add / elementwise", ("add", "mul", "sub", "div", "neg", "sqrt", "square", "maximum", "cast", "copy", "to_copy",
                           "fill", "zero", "select")),
    ("layout / reorder", ("transpose", "reorder", "contiguous", "clone", "reshape", "view")),
    ("loss / softmax / matmul", ("softmax", "cross_entropy", "nll", "log", "matmul", "mm", "addmm", "linear")),
    ("reductions / pooling", ("sum", "mean", "pool", "reduce", "prod")),
)


def group_of(name):
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other"


def _tf_profile(args):
    sys.path.insert(0, str(REPO))
    from tfcnn import bench

    overrides = {"mixed_precision": args.mixed_precision} if args.mixed_precision else {}
    session = bench.Session("resnet", "cifar10", batch_size=args.batch_size, data_dir=args.data_dir,
                             config_overrides=overrides, stack_n=args.stack_n)
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    model = bench.trainer_model(session.config, session.pipes, session.num_classes, session.steps_per_epoch)
    spec = bench.Spec(session.pipes.image_shape, session.num_classes, session.pipes.mean, session.pipes.std,
                       session.pipes.train_size)
    batches = bench.synthetic_batches(spec, args.batch_size, session.config.label_smoothing > 0)
    model.fit(batches, epochs=1, steps_per_epoch=bench.WARMUP_STEPS, shuffle=False, verbose=0)
    with tempfile.TemporaryDirectory(prefix="tfcnn-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        model.fit(batches, epochs=1, steps_per_epoch=args.steps, shuffle=False, verbose=0)
        tf.profiler.experimental.stop()
        xplane = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
        data, ok = _pywrap_profiler_plugin.xspace_to_tools_data([xplane], "framework_op_stats", {})
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    by_type = collections.Counter()
    for row in table["rows"]:
        values = dict(zip(cols, (c["v"] for c in row["c"])))
        if values.get("host_or_device") in ("Host", "Device") and values["type"] != "IDLE":
            by_type[values["type"]] += values["total_self_time"] / 1e3 / args.steps  # ms per step
    return {"framework": f"tfcnn (TF {tf.__version__}), precision {session.precision}", "by_op": dict(by_type)}


def _torch_profile(args):
    cmd = [args.torch_python, str(REPO / "benchmarks" / "torch_peers.py"), "--arch", "resnet", "--stack-n",
           str(args.stack_n), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--profile"]
    cmd += [] if args.nchw else ["--channels-last"]
    # Like for like: tfcnn in bfloat16 against PyTorch's bf16 autocast, float32 against float32.
    precision = "bfloat16" if args.mixed_precision == "bfloat16" else "float32"
    cmd += ["--precision", precision]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    if done.returncode != 0:
        sys.exit(f"the PyTorch side failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    layout = "NCHW" if args.nchw else "channels_last"
    return {"framework": f"PyTorch {out['torch']} {layout} {precision}", "by_op": out["profile_ms_per_step"]}


def _report(side, top):
    groups = collections.Counter()
    for name, ms in side["by_op"].items():
        groups[group_of(name)] += ms
    total = sum(groups.values())
    print(f"\n{side['framework']}: {total:.1f} ms of op self time per step")
    for group, ms in groups.most_common():
        print(f"  {group:32} {ms:8.1f} ms {100 * ms / total:5.1f}%")
    print("  top ops:")
    for name, ms in collections.Counter(side["by_op"]).most_common(top):
        print(f"    {name:46} {ms:8.1f} ms  [{group_of(name)}]")
    return {"framework": side["framework"], "total_ms": total, "groups": dict(groups), "by_op": side["by_op"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stack-n", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps (after tfcnn.bench's warm-up)")
    ap.add_argument("--mixed-precision", choices=("auto", "float32", "bfloat16"), default="float32")
    ap.add_argument("--nchw", action="store_true", help="PyTorch in NCHW (default channels_last)")
    ap.add_argument("--top", type=int, default=12, help="ops listed per side (default 12)")
    ap.add_argument("--torch-python", default=str(REPO / ".venv-torch" / "bin" / "python"))
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--json", help="also write both profiles to this JSON file")
    args = ap.parse_args()
    load = {"before": [round(v, 2) for v in os.getloadavg()]}
    sides = [_tf_profile(args)]
    if Path(args.torch_python).exists():
        sides.append(_torch_profile(args))
    else:
        print(f"no PyTorch interpreter at {args.torch_python}: tfcnn only", file=sys.stderr)
    load["after"] = [round(v, 2) for v in os.getloadavg()]
    print(f"ResNet-{6 * args.stack_n + 2}, batch {args.batch_size}, {args.steps} profiled steps; "
          f"load average {load['before']} -> {load['after']}")
    reports = [_report(side, args.top) for side in sides]
    if args.json:
        Path(args.json).write_text(json.dumps({"load_avg": load, "steps": args.steps, "profiles": reports}) + "\n")


if __name__ == "__main__":
    main()
