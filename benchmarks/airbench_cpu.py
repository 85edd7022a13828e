"""airbench94 (pip `airbench`, unchanged) on the CPU: a shim for its CUDA calls, nothing else.

Run in .venv-torch (benchmarks/requirements-torch.txt pins torch and airbench):

    .venv-torch/bin/python benchmarks/airbench_cpu.py --precision bfloat16 --seed 0

The package's training code is used as published. The shim only maps what a CPU lacks:
- `.cuda()` on tensors and modules: a no-op;
- `.half()`: float32 (`--precision float32`), or float32 under `torch.autocast("cpu", bfloat16)`
  (`--precision bfloat16`: convolutions and the linear layer run in bfloat16, as airbench's fp16 on a GPU);
- `torch.cuda.Event` / `torch.cuda.synchronize`: a wall clock (CPU work is synchronous);
- `torch.load(map_location=0)`: the CPU;
- `torchvision`: airbench imports it, but uses only `transforms.Normalize` once its cifar10/train.pt and
  test.pt exist. Those files are written here from CIFAR-10's canonical pickles (`--data-dir`, default
  $TFCNN_DATA_DIR or ../shared/data), so a 4-line Normalize stands in for the package, which PyPI's wheels
  cannot install beside torch 2.13's CPU wheel.

airbench's own clock (whitening init + training epochs + the final TTA pass; not its per-epoch evaluations) is
the time reported. The last line is JSON: time_s, acc (single view), tta_acc, precision, seed, torch version.
"""
import argparse
import json
import os
import pickle
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _fake_torchvision():
    """The one piece of torchvision airbench uses once its data files exist."""

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

        def __call__(self, x):
            mean = self.mean.to(x.dtype).view(-1, 1, 1)
            std = self.std.to(x.dtype).view(-1, 1, 1)
            return (x - mean) / std

    def no_download(*args, **kwargs):
        raise RuntimeError("airbench_cpu: cifar10/train.pt should have been written from the local pickles")

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Normalize = Normalize
    tv.datasets = types.SimpleNamespace(CIFAR10=no_download)
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.transforms", tv.transforms)


class _WallEvent:
    def __init__(self, enable_timing=True):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.t - self.t)


class _CpuDeviceTorch(types.ModuleType):
    """torch, except that device(<int>) is the CPU."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(spec, *args):
        return torch.device("cpu") if isinstance(spec, int) else torch.device(spec, *args)


def _autocast_call(precision, fn, *args, **kwargs):
    if precision != "bfloat16":
        return fn(*args, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(*args, **kwargs)


def install_shim():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.half = lambda self, *a, **k: self.float()
    torch.nn.Module.half = lambda self: self.float()
    torch.cuda.Event = _WallEvent
    torch.cuda.synchronize = lambda *a, **k: None
    real_load = torch.load
    torch.load = lambda *a, **k: real_load(*a, **{**k, "map_location": "cpu"})
    try:
        import torchvision  # noqa: F401
    except Exception:
        _fake_torchvision()


def write_cifar10(data_dir, out_dir):
    """airbench's cifar10/{train,test}.pt ({'images': uint8 NHWC, 'labels', 'classes'}) from the pickles."""
    out = Path(out_dir) / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(Path(data_dir) / "cifar-10-python.tar.gz") as tar:
        def batch(name):
            d = pickle.load(tar.extractfile(f"cifar-10-batches-py/{name}"), encoding="bytes")
            return d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d[b"labels"])

        for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
            parts = [batch(n) for n in names]
            images = torch.tensor(np.concatenate([p[0] for p in parts]))
            labels = torch.tensor(np.concatenate([p[1] for p in parts]))
            torch.save({"images": images, "labels": labels, "classes": CLASSES}, out / f"{split}.pt")
    return out.parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16",
                    help="float32, or bfloat16 autocast on the CPU (default bfloat16)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before training (default 0)")
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", "../shared/data"),
                    help="folder with cifar-10-python.tar.gz (default $TFCNN_DATA_DIR or ../shared/data)")
    ap.add_argument("--epochs", type=float, default=None,
                    help="train94's own `epochs` argument (default: airbench's 9.9); fewer epochs time the precisions "
                         "against each other in minutes, not an accuracy run")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch table (airbench's verbose=False skips TTA, "
                                                         "so this only hides its prints)")
    args = ap.parse_args(argv)
    install_shim()
    import contextlib
    import io

    import airbench
    import airbench.utils

    # utils.CifarLoader calls torch.device(0) (the first GPU), which a CPU build refuses before torch.load
    # sees it: that one module sees a torch whose device(int) is the CPU.
    airbench.utils.torch = _CpuDeviceTorch()

    work = tempfile.mkdtemp(prefix="airbench-cpu-")
    write_cifar10(args.data_dir, work)
    os.chdir(work)
    torch.manual_seed(args.seed)
    def make_net():
        # Autocast around the network's forward only, as a GPU's fp16 covers the net: the whitening init's
        # covariance and eigendecomposition stay float32 (under a global bfloat16 autocast they give NaN).
        net = airbench.make_net94()
        forward = net.forward
        net.forward = lambda *a, **k: _autocast_call(args.precision, forward, *a, **k)
        return net

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        epochs = {} if args.epochs is None else {"epochs": args.epochs}
        model = airbench.train94(make_net=make_net, verbose=True, **epochs)
    table = out.getvalue()
    if not args.quiet:
        print(table, end="", flush=True)
    # airbench prints its clock and accuracies in the last table row; the same numbers come back here.
    rows = [r for r in table.splitlines() if r.startswith("|")]
    final = [c.strip() for c in rows[-1].strip("|").split("|")]
    cols = [c.strip() for c in rows[0].strip("|").split("|")]
    values = dict(zip(cols, final))
    # Single view of the final (lookahead-averaged) weights, outside airbench's clock.
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    acc = airbench.evaluate(model, test_loader, tta_level=0)
    result = {"side": "airbench94", "precision": args.precision, "seed": args.seed, "epochs": args.epochs,
              "time_s": float(values["total_time_seconds"]), "tta_acc": float(values["tta_val_acc"]),
              "acc": acc, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
