"""PyTorch peers of tfcnn's models: training images/s on random in-memory data, one JSON line.

    .venv-torch/bin/python benchmarks/torch_peers.py --arch resnet --stack-n 5 --channels-last
    .venv-torch/bin/python benchmarks/torch_peers.py --arch resnet --channels-last --precision bfloat16 --compile
    .venv-torch/bin/python benchmarks/torch_peers.py --arch lenet5 --dataset mnist --steps 100

Variants: --channels-last (memory format), --precision bfloat16 (the forward pass under
torch.autocast("cpu", dtype=torch.bfloat16), as PyTorch's CPU mixed-precision recipe does; weights,
gradients and the optimizer stay float32) and --compile (torch.compile of the model with the default
inductor backend, which needs a C compiler; the first warm-up step compiles; its time is reported
as first_step_s). A variant that cannot run here prints {"error": ...} as its JSON line and exits 0, so the
caller can report it and go on.

resnet is the shared reference network (../shared/bench/torch_resnet_cifar.py beside the repo, imported, not
copied; SGD Nesterov 0.1, weight decay 1e-4). lenet5 and two_conv mirror tfcnn.models with
PyTorch's default layers, trained with Adam as the MNIST/notMNIST labs do. Runs in the
separate PyTorch venv (benchmarks/requirements-torch.txt); needs no tfcnn import.
"""
import argparse
import contextlib
import importlib.util
import json
import os
from pathlib import Path
import sys
import time

import torch
import torch.nn as nn

# Relative to the repository, so a fresh clone with ../shared beside it finds it.
REFERENCE = os.environ.get("TORCH_RESNET_REFERENCE") or str(
    Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "torch_resnet_cifar.py")
SHAPES = {"mnist": (1, 28, 28), "notmnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def lenet5(channels=1, classes=10, modern=False):
    """tfcnn.models.lenet5 defaults: tanh, average pooling, C1 padded 'same', 120-84 dense;
    modern=True is the MNIST lab's suggested change (activation="relu", pool="max" in tfcnn)."""
    act, pool = (nn.ReLU, nn.MaxPool2d) if modern else (nn.Tanh, nn.AvgPool2d)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), act(), pool(2),
        nn.Conv2d(6, 16, 5), act(), pool(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, classes))


def two_conv(channels=1, classes=10, width=5000, size=28):
    """tfcnn.models.two_conv: two 3x3 ReLU convs (16, 32), no pooling, one wide Dense layer."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * size * size, width), nn.ReLU(), nn.Linear(width, classes))


def reference_resnet(stack_n):
    spec = importlib.util.spec_from_file_location("torch_resnet_cifar", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile (dynamo) looks the module up by name
    spec.loader.exec_module(module)
    return module.resnet(stack_n)


def build(arch, dataset, stack_n, width):
    channels, size, _ = SHAPES[dataset]
    if arch == "resnet":
        model = reference_resnet(stack_n)
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model = lenet5(channels) if arch == "lenet5" else two_conv(channels, width=width, size=size)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3 if arch == "lenet5" else 1e-4)


def _step_fn(model, opt, x, y, bf16):
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def _error(args, message):
    return {"peer": "pytorch", "torch": torch.__version__, "arch": args.arch, "channels_last": args.channels_last,
            "precision": args.precision, "compile": args.compile, "error": message}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=("resnet", "lenet5", "two_conv"), default="resnet")
    ap.add_argument("--dataset", choices=sorted(SHAPES), default="cifar10")
    ap.add_argument("--stack-n", type=int, default=5)
    ap.add_argument("--width", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--channels-last", action="store_true", help="channels_last memory format (default NCHW)")
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                    help="bfloat16: autocast the forward pass to bfloat16 (default float32)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (default: eager)")
    ap.add_argument("--profile", action="store_true",
                    help="run the timed steps under torch.profiler and add each op's self CPU ms per step")
    a = ap.parse_args()
    model, opt = build(a.arch, a.dataset, a.stack_n, a.width)
    x = torch.rand(a.batch_size, *SHAPES[a.dataset])
    y = torch.randint(0, 10, (a.batch_size,))
    if a.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    step = _step_fn(torch.compile(model) if a.compile else model, opt, x, y, a.precision == "bfloat16")
    start = time.perf_counter()
    try:
        step()  # compiles with --compile
    except Exception as exc:  # inductor without a C compiler, an unsupported op, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:3]
        print(json.dumps(_error(a, f"{exc.__class__.__name__}: {' | '.join(lines)}"[:300])))
        return
    first_step_s = time.perf_counter() - start
    for _ in range(a.warmup - 1):
        step()
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if a.profile \
        else contextlib.nullcontext()
    marks, cpu0 = [time.perf_counter()], time.process_time()
    with profiler:
        for _ in range(a.steps):
            step()
            marks.append(time.perf_counter())
    cpu_ms_per_image = 1e3 * (time.process_time() - cpu0) / (a.steps * a.batch_size)  # all threads
    dt = marks[-1] - marks[0]
    median_step = sorted(end - start for start, end in zip(marks, marks[1:]))[a.steps // 2]
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "arch": a.arch, "dataset": a.dataset,
                      "stack_n": a.stack_n if a.arch == "resnet" else None, "channels_last": a.channels_last,
                      "precision": a.precision, "compile": a.compile, "first_step_s": round(first_step_s, 2),
                      "batch_size": a.batch_size, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "train_images_per_s": round(a.steps * a.batch_size / dt, 1),
                      "median_step_images_per_s": round(a.batch_size / median_step, 1),
                      "cpu_ms_per_image": round(cpu_ms_per_image, 3),
                      **({"profile_ms_per_step": {e.key: e.self_cpu_time_total / 1e3 / a.steps
                                                  for e in profiler.key_averages() if e.self_cpu_time_total > 0}}
                         if a.profile else {})}))


if __name__ == "__main__":
    main()
