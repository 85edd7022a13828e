"""Training throughput: the trainer's own path vs synthetic data, per device, and vs PyTorch.

    python -m tfcnn.bench --arch resnet --stack-n 5 --steps 30            # readable table
    python -m tfcnn.bench --arch resnet --stack-n 5 --vs-pytorch --vs-naive --repeat 3 --json
    python -m tfcnn.bench --arch lenet5 --dataset mnist --steps 100

"pipeline" is what `train_and_evaluate` runs: data.load + pipelines.make_pipelines + train_epochs (decode
cache, shuffle, augmentation) feeding model.fit of the model and compile the trainer builds, under
configure_runtime's thread and precision settings. "synthetic" is the same model on
SYNTHETIC_BATCHES distinct random batches held in memory and cycled (in-memory data with no
decode or augmentation); "one_batch" repeats a single batch, the compute-only ceiling. The
model trains ~4% faster on one repeated batch than on any stream of distinct batches, even
distinct batches cached in memory (measured: docs/results/performance.md), so "synthetic" is
the baseline the pipeline is held to. `--vs-naive` runs plain Keras in a child
process (model.fit(x, y) on numpy arrays, TF's default threads); `--vs-pytorch` runs the PyTorch
reference (benchmarks/torch_peers.py) in the separate PyTorch venv. Runs alternate, `--repeat`
times, so load from other processes hits all of them alike; medians are reported, both of the
timed window's images/s and of the median-step rate (batch / median step time), which other
processes' bursts disturb less on a shared machine.

Distance to the limit: each round also takes a short TF matmul probe (float32, and bfloat16 where
the CPU has it natively) in this process, under the training's thread settings; the table shows
each run's achieved GFLOP/s (the model's counted forward FLOPs per image x 3 for forward and
backward, x images/s) and its fraction of the matching peak (bfloat16 for bfloat16 runs). On a
machine other processes also use, both are stretched unevenly, so the same is also given per
CPU-second: a run's FLOPs over the CPU time its process got (CPU ms/img) against the probe's.

`--inference --model saved_models/NAME` times the exports of a saved model instead
(tfcnn/bench_inference.py).

Notebook API: `time_training("resnet", "cifar10", stack_n=5)` -> dict; `devices()` -> names.
"""
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcnn import bench_inference, bench_peers as peers, config as config_lib, data, models, pipelines, train  # noqa: E402
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli  # noqa: E402
from tfcnn.hardware import PEAK_SIZE, cpu_info, describe_cpu, load_average, matmul_peak  # noqa: E402

SOURCES = ("pipeline", "synthetic", "one_batch")
SYNTHETIC_BATCHES = 8
WARMUP_STEPS = 5  # the first steps trace and compile the train function; never timed


def devices():
    """Logical devices model.fit can train on, e.g. ['/device:CPU:0', '/device:GPU:0']."""
    return [d.name for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU")]


def forward_flops(model):
    """FLOPs of one image's forward pass: 2 x the multiply-accumulates of every convolution and Dense
    layer (nested models included), from the built model's layer shapes. BatchNorm, activations,
    pooling and additions are not counted (the usual convention; they are a few % of a ResNet's)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
            continue
        if not isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                                  keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Dense)):
            continue
        out = math.prod(layer.output.shape[1:])  # output elements per image
        if isinstance(layer, keras.layers.Dense):
            total += 2 * out * layer.input.shape[-1]
            continue
        channels_in = layer.input.shape[-1 if layer.data_format == "channels_last" else 1]
        window = math.prod(layer.kernel_size)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * out * window
        elif isinstance(layer, keras.layers.SeparableConv2D):
            spatial = out // layer.filters
            total += 2 * spatial * channels_in * layer.depth_multiplier * (window + layer.filters)
        else:
            total += 2 * out * window * channels_in // layer.groups
    return total


class _StepClock(keras.callbacks.Callback):
    """perf_counter after each executed batch (one entry per execution with steps_per_execution > 1),
    and the process's CPU time (all its threads) at the same points in `cpu_marks`."""

    def on_train_begin(self, logs=None):
        self.marks, self.cpu_marks = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((batch, time.perf_counter()))
        self.cpu_marks.append((batch, time.process_time()))


def _config(arch, dataset, batch_size, data_dir, overrides, model_options):
    values = {"arch": arch, "dataset": dataset, "batch_size": batch_size, "data_dir": data_dir,
              "verbose": 0, "tensorboard": False, **(overrides or {}), **model_options}
    return config_lib.make_config(values)


def trainer_model(config, pipes, num_classes, steps_per_epoch, compile_options=None):
    """The model and compile train_and_evaluate builds (optionally recompiled with extra options)."""
    model, plain, _ = train.build_model(config, pipes, num_classes)
    train.compile_model(model, plain, config, steps_per_epoch)
    if compile_options:  # experiments only (benchmarks/ablation.py): same optimizer and loss
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], **compile_options)
    return model


class Spec:
    """What a synthetic run needs from a loaded dataset (shape, classes, normalisation statistics)."""

    def __init__(self, image_shape, num_classes, mean, std, train_size):
        self.image_shape, self.mean, self.std, self.train_size = tuple(image_shape), mean, std, train_size
        self.num_classes = num_classes


def synthetic_batches(spec, batch_size, one_hot, batches=SYNTHETIC_BATCHES, seed=0, weighted=False):
    """`batches` distinct random batches (raw 0-255 pixels) held in memory, cycled forever; `weighted` adds
    per-image loss weights (as the pipeline's with --class-weight)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batches, batch_size, *spec.image_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, (batches, batch_size)).astype(np.int32)
    y = np.eye(spec.num_classes, dtype=np.float32)[y] if one_hot else y
    w = rng.uniform(0.5, 2, (batches, batch_size)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y, w) if weighted else (x, y)).cache().repeat()


def _rates(marks, batch_size, warmup):
    """(window, median-step) images/s from (step index, time) marks after `warmup` steps.

    window: all timed steps over their wall time (what a run takes). median step: the batch
    size over the median step time; other processes' bursts only add time to some steps, so
    on a shared machine this tracks the uncontended speed better. With steps_per_execution > 1
    a mark comes once per execution and its steps share it.
    """
    marks = [m for m in marks if m[0] >= warmup - 1]
    if len(marks) < 3:
        raise TfcnnError("too few timed steps; raise --steps")
    (first, t0), (last, t1) = marks[0], marks[-1]
    per_step = [(b - a) / (j - i) for (i, a), (j, b) in zip(((s, t) for s, t in marks[:-1]), marks[1:])]
    return batch_size * (last - first) / (t1 - t0), batch_size / statistics.median(per_step)


def _cpu_ms_per_image(cpu_marks, batch_size, warmup):
    """CPU time (all threads of the process) per image over the timed steps, in ms. Other processes
    on the same cores stretch wall time but hardly this, so it compares frameworks on a busy machine
    (threads that spin while they wait count as busy, though)."""
    marks = [m for m in cpu_marks if m[0] >= warmup - 1]
    (first, c0), (last, c1) = marks[0], marks[-1]
    return 1e3 * (c1 - c0) / (batch_size * (last - first))


def _measure(model, batches, total_steps, batch_size, warmup):
    """(window, median-step) images/s and CPU ms per image of `total_steps` steps after `warmup`."""
    clock = _StepClock()
    model.fit(batches, epochs=1, steps_per_epoch=total_steps, shuffle=False, verbose=0, callbacks=[clock])
    return (*_rates(clock.marks, batch_size, warmup), _cpu_ms_per_image(clock.cpu_marks, batch_size, warmup))


class Session:
    """Loads data once; each `run(source, device)` builds a fresh model and times it: (window, median-step) images/s.
    Data, pipelines, model and compile come from the trainer's own functions (tfcnn.train), so "pipeline" times
    what a run of the same Config trains (its augmentation, cutout and class weights included)."""

    def __init__(self, arch, dataset, *, batch_size, data_dir=None, config_overrides=None, compile_options=None,
                 **model_options):
        self.config = _config(arch, dataset, batch_size, data_dir, config_overrides, model_options)
        _, self.precision = train.configure_runtime(self.config)  # returns (strategy, precision)
        self.batch_size = batch_size
        self.compile_options = compile_options
        ds = train.load_data(self.config)
        self.pipes = train.make_pipelines(self.config, ds)
        self.num_classes = ds.num_classes
        self.steps_per_epoch = math.ceil(self.pipes.train_size / batch_size)

    def batches(self, source, total):
        """`total` train batches of `source`: "pipeline" the run's own (its first epochs, as train_and_evaluate
        feeds model.fit), else in-memory random batches of the same structure."""
        if source == "pipeline":
            return pipelines.train_epochs(self.pipes, epochs=math.ceil(total / self.steps_per_epoch), seed=self.config.seed)
        spec = Spec(self.pipes.image_shape, self.num_classes, self.pipes.mean, self.pipes.std, self.pipes.train_size)
        return synthetic_batches(spec, self.batch_size, self.config.label_smoothing > 0,
                                  batches=1 if source == "one_batch" else SYNTHETIC_BATCHES,
                                  weighted=len(self.pipes.train.element_spec) == 3)

    def run(self, source, steps, device=None, warmup=WARMUP_STEPS):
        total = warmup + steps
        with tf.device(device) if device else _nullcontext():
            model = trainer_model(self.config, self.pipes, self.num_classes, self.steps_per_epoch,
                                   self.compile_options)
            batches = self.batches(source, total)
            window, median, self.cpu_ms_per_image = _measure(model, batches, total, self.batch_size, warmup)
        keras.backend.clear_session()
        return window, median


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def time_training(arch, dataset, *, batch_size=128, steps=30, data_dir=None, device=None, source="pipeline",
                  **model_options):
    """Time `steps` training steps of the trainer's path on one device; a dict for notebooks.

    Keys: device, source, images_per_s (timed steps over their wall time), median_step_images_per_s
    (batch over the median step time: steadier on a shared machine), epoch_time_s (the dataset's
    train split at images_per_s, training only), train_size, steps, batch_size, precision.
    `source="synthetic"` feeds distinct in-memory batches instead of the data pipeline,
    `source="one_batch"` one repeated batch.
    """
    if source not in SOURCES:
        raise TfcnnError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    session = Session(arch, dataset, batch_size=batch_size, data_dir=data_dir, **model_options)
    device = device or devices()[0]
    window, median = session.run(source, steps, device)
    return {"device": device, "source": source, "images_per_s": round(window, 1),
            "median_step_images_per_s": round(median, 1),
            "epoch_time_s": round(session.pipes.train_size / window, 2), "train_size": session.pipes.train_size,
            "steps": steps, "batch_size": batch_size, "precision": session.precision}


def _naive_keras(arch, dataset, batch_size, steps, data_dir, model_options):
    """Plain Keras as a newcomer writes it: TF's default threads, model.fit(x, y) on float arrays,
    Keras' own BatchNormalization (this runs in its own process, so the swap touches nothing else)."""
    models.FusedBatchNormalization.call = keras.layers.BatchNormalization.call

    ds = data.load(dataset, data_dir)
    n = batch_size * (WARMUP_STEPS + steps)
    idx = np.arange(n) % len(ds.y_train)
    x, y = ds.x_train[idx].astype("float32"), ds.y_train[idx]
    mean, std = data.normalization_stats(ds.x_train)
    model = models.build(arch, ds.image_shape, ds.num_classes, normalization=(mean.tolist(), std.tolist()),
                         **model_options)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True) if arch == "resnet" else keras.optimizers.Adam()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = _StepClock()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
    return (*_rates(clock.marks, batch_size, WARMUP_STEPS),
            _cpu_ms_per_image(clock.cpu_marks, batch_size, WARMUP_STEPS))


# ---------------------------------------------------------------- CLI

def _model_options(args):
    opts = {}
    if args.stack_n is not None:
        opts["stack_n"] = args.stack_n
    if args.width is not None:
        opts["width"] = args.width
    return opts


def _overrides(args):
    return {k: v for k, v in (("mixed_precision", args.mixed_precision), ("cpu_threads", args.cpu_threads),
                              ("augment", args.augment)) if v is not None}


def _parser():
    parser = ArgumentParser(prog="python -m tfcnn.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet", help=f"one of: {', '.join(models.available())} (default resnet)")
    parser.add_argument("--dataset", help="default: the arch's dataset (resnet: cifar10)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run, after %d warm-up steps (default 30)"
                        % WARMUP_STEPS)
    parser.add_argument("--stack-n", type=int, help="resnet depth 6n+2 (default 5: ResNet-32)")
    parser.add_argument("--width", type=int, help="two_conv / pooled hidden width")
    parser.add_argument("--data-dir", help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--mixed-precision", choices=("auto", "float32", "bfloat16", "float16"),
                        help="override the config's policy (default auto)")
    parser.add_argument("--cpu-threads", type=int, help="intra-op threads (default: TensorFlow's own)")
    parser.add_argument("--augment", action=__import__("argparse").BooleanOptionalAction, default=None,
                        help="time the pipeline with or without augmentation (default: the arch's training default)")
    parser.add_argument("--sources", default="pipeline,synthetic",
                        help="comma list of pipeline,synthetic,one_batch (default pipeline,synthetic)")
    parser.add_argument("--repeat", type=int, help="alternate all runs this many times; report medians "
                        "(default 1; with --inference 3)")
    parser.add_argument("--vs-naive", action="store_true", help="also time plain Keras fit(x, y) in a child process")
    parser.add_argument("--vs-pytorch", action="store_true",
                        help="also time the PyTorch peer in each of its variants (resnet: " +
                        ", ".join(v[0] for v in peers.TORCH_VARIANTS["resnet"]) + "; other archs: " +
                        ", ".join(v[0] for v in peers.TORCH_VARIANTS["other"]) + ") and name the fastest")
    parser.add_argument("--pytorch-variants", help="comma list: only these PyTorch variants (default all)")
    parser.add_argument("--torch-omp-wait-policy", choices=("auto", "PASSIVE", "ACTIVE", "default"), default="auto",
                        help="OMP_WAIT_POLICY of the PyTorch child; auto (the default): PASSIVE when the 1-minute "
                        "load average is at least the core count (spinning OpenMP threads lose badly on shared "
                        "cores), else libgomp's default")
    parser.add_argument("--torch-python", default=str(peers.DEFAULT_TORCH_PYTHON),
                        help="python of a venv with torch (default .venv-torch/bin/python)")
    parser.add_argument("--no-peak", dest="peak", action="store_false",
                        help="skip the matmul peak probe (default: one probe per round, float32 and, where the CPU "
                        "has it natively, bfloat16)")
    parser.add_argument("--inference", action="store_true",
                        help="time the exports of --model (Keras, SavedModel, ONNX Runtime, TFLite) instead of "
                        "training; see tfcnn/bench_inference.py")
    parser.add_argument("--model", help="with --inference: a saved model folder, e.g. saved_models/lenet5-mnist")
    parser.add_argument("--latency-calls", type=int, default=200,
                        help="with --inference: batch-1 calls per export per round (default 200)")
    parser.add_argument("--throughput-batch", type=int, default=256,
                        help="with --inference: batch size of the throughput runs (default 256)")
    parser.add_argument("--session-options", action="store_true",
                        help="with --inference: also time ONNX Runtime and TFLite under other session settings "
                        "(threads, graph optimisation, spinning)")
    parser.add_argument("--naive-child", action="store_true", help=__import__("argparse").SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _check(args):
    if args.arch not in models.available():
        raise TfcnnError(f"unknown --arch {args.arch!r}; choose one of {', '.join(models.available())}")
    args.dataset = args.dataset or config_lib.ARCH_DEFAULTS.get(args.arch, {}).get("dataset", "mnist")
    for flag in ("batch_size", "steps", "repeat"):
        if getattr(args, flag) < 1:
            raise TfcnnError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.steps < 2:
        raise TfcnnError("--steps must be at least 2 (a rate needs two timed steps)")
    sources = [s for s in args.sources.split(",") if s]
    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise TfcnnError(f"--sources takes a comma list of {', '.join(SOURCES)}; got {args.sources!r}")
    args.sources = sources
    args.torch_missing = None
    if args.vs_pytorch:
        args.torch_variants = peers.torch_variants(args.arch, args.pytorch_variants)
        if not Path(args.torch_python).exists():
            args.torch_missing = (f"no PyTorch interpreter at {args.torch_python}, so tfcnn only; create it with: "
                                  f"{peers.TORCH_SETUP} (or pass --torch-python PATH)")


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _peaks(precisions):
    """{precision: (best GFLOP/s, GFLOP per CPU-second)} of the TF matmul probe."""
    return {p: matmul_peak(p) for p in precisions}


def benchmark(args):
    """All runs of one CLI invocation, alternated `repeat` times; returns the report dict."""
    options = _model_options(args)
    session = Session(args.arch, args.dataset, batch_size=args.batch_size, data_dir=args.data_dir,
                       config_overrides=_overrides(args), **options)
    cpu_desc = cpu_info()
    names = devices()
    cpu = next(d for d in names if "CPU" in d)
    def tfcnn_run(source, device):
        return (*session.run(source, args.steps, device), session.cpu_ms_per_image)

    # (name, fn, precision): precision picks the matmul peak a run is measured against
    runs = [(f"tfcnn {s}", lambda s=s: tfcnn_run(s, cpu), session.precision) for s in args.sources]
    runs += [(f"tfcnn {args.sources[0]} {d}", lambda d=d: tfcnn_run(args.sources[0], d), session.precision)
             for d in names if "GPU" in d]
    if args.vs_naive:
        cmd = [sys.executable, "-m", "tfcnn.bench", "--naive-child", "--arch", args.arch, "--dataset", args.dataset,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        cmd += [f for k, v in options.items() for f in (f"--{k.replace('_', '-')}", str(v))]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        runs.append(("keras naive fit(x, y)", lambda cmd=cmd: peers.child_rates(cmd, "naive Keras", "images_per_s"),
                     "float32"))
    torch_env, omp_policy = peers.torch_env(args.torch_omp_wait_policy)
    if args.vs_pytorch and args.torch_missing:
        print(args.torch_missing, file=sys.stderr, flush=True)
    elif args.vs_pytorch:
        for label, flags, precision in args.torch_variants:
            cmd = peers.torch_cmd(args.torch_python, args.arch, args.dataset, args.batch_size, args.steps,
                             options.get("stack_n"), options.get("width"), flags)
            runs.append((f"pytorch {label}", lambda cmd=cmd: peers.child_rates(cmd, "the PyTorch peer",
                                                                           "train_images_per_s", torch_env),
                         precision))
    model = trainer_model(session.config, session.pipes, session.num_classes, session.steps_per_epoch)
    flops = forward_flops(model)
    keras.backend.clear_session()
    peak_precisions = ["float32"] + (["bfloat16"] if cpu_desc["native_bf16"] else [])
    load_before = load_average()
    rates = {name: [] for name, _, _ in runs}
    failed = {}
    peaks = {p: [] for p in peak_precisions} if args.peak else {}
    peaks_cpu = {p: [] for p in peaks}
    for round_ in range(args.repeat):
        for precision, (value, per_cpu_s) in (_peaks(peak_precisions) if args.peak else {}).items():
            peaks[precision].append(value)
            peaks_cpu[precision].append(per_cpu_s)
            print(f"[{round_ + 1}/{args.repeat}] matmul peak {precision}: {value:.1f} GFLOP/s, "
                  f"{per_cpu_s:.1f} GFLOP per CPU-second", file=sys.stderr, flush=True)
        for name, fn, _ in runs:
            if name in failed:
                continue
            try:
                rates[name].append(fn())
            except peers.DidNotRun as exc:
                failed[name] = str(exc)
                print(f"[{round_ + 1}/{args.repeat}] {name}: did not run: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"[{round_ + 1}/{args.repeat}] {name}: {rates[name][-1][0]:.1f} images/s "
                  f"(median step {rates[name][-1][1]:.1f})", file=sys.stderr, flush=True)
    # The best round, not the median: a probe that ran while other processes held the cores says
    # nothing about the machine's limit (a median put contended runs at >100% of it).
    peak = {p: round(max(v), 1) for p, v in peaks.items()}
    peak_cpu = {p: round(max(v), 1) for p, v in peaks_cpu.items()}
    rows = []
    for name, _, precision in runs:
        if name in failed:
            rows.append({"run": name, "precision": precision, "error": failed[name]})
            continue
        values = rates[name]
        window = statistics.median(v[0] for v in values)
        gflops = window * 3 * flops / 1e9
        cpu_ms = _median_or_none(v[2] for v in values)
        per_cpu_s = 3 * flops / (cpu_ms * 1e-3) / 1e9 if cpu_ms else None
        rows.append({"run": name, "precision": precision, "images_per_s": round(window, 1),
                     "median_step_images_per_s": round(statistics.median(v[1] for v in values), 1),
                     "runs": [round(v[0], 1) for v in values],
                     "cpu_ms_per_image": cpu_ms,
                     "gflop_per_cpu_s": round(per_cpu_s, 1) if per_cpu_s else None,
                     "fraction_of_peak_cpu_time": round(per_cpu_s / peak_cpu[precision], 3)
                     if per_cpu_s and precision in peak_cpu else None,
                     "epoch_time_s": round(session.pipes.train_size / window, 2),
                     "gflops": round(gflops, 1),
                     "fraction_of_peak": round(gflops / peak[precision], 3) if precision in peak else None})
    timed = [r for r in rows if "error" not in r]
    by_name = {r["run"]: r for r in timed}
    ratios = {}
    base = by_name.get("tfcnn pipeline") or by_name.get("tfcnn synthetic") or timed[0]
    pairs = [(f"{base['run']} / {k}", base, r) for k, r in by_name.items() if not k.startswith("tfcnn")]
    for other in ("synthetic", "one_batch"):
        if "tfcnn pipeline" in by_name and f"tfcnn {other}" in by_name:
            pairs.append((f"tfcnn pipeline / tfcnn {other}", by_name["tfcnn pipeline"], by_name[f"tfcnn {other}"]))
    torch_rows = [r for r in timed if r["run"].startswith("pytorch")]
    fastest = max(torch_rows, key=lambda r: r["images_per_s"]) if torch_rows else None
    if fastest:
        pairs.append((f"{base['run']} / fastest pytorch ({fastest['run'][len('pytorch '):]})", base, fastest))
    for label, a, b in pairs:
        ratios[label] = {"window": round(a["images_per_s"] / b["images_per_s"], 3),
                         "median_step": round(a["median_step_images_per_s"] / b["median_step_images_per_s"], 3)}
        if a["cpu_ms_per_image"] and b["cpu_ms_per_image"]:  # >1: a needs less CPU time per image
            ratios[label]["cpu_time"] = round(b["cpu_ms_per_image"] / a["cpu_ms_per_image"], 3)
    per_device = []
    for d in names:
        row = by_name.get(f"tfcnn {args.sources[0]}") if d == cpu else by_name.get(f"tfcnn {args.sources[0]} {d}")
        if row:
            rate = row["images_per_s"]
            per_device.append({"device": d, "source": args.sources[0], "images_per_s": rate,
                               "epoch_time_s": round(session.pipes.train_size / rate, 2),
                               "speedup_vs_cpu": round(rate / base["images_per_s"], 2)})

    return {"arch": args.arch, "dataset": args.dataset, "batch_size": args.batch_size, "steps": args.steps,
            "repeat": args.repeat, "model_options": options, "precision": session.precision, "cpu": cpu_desc,
            "forward_flops_per_image": flops, "train_flops_per_image": 3 * flops,
            "matmul_peak_gflops": peak, "matmul_peak_runs": {p: [round(x, 1) for x in v] for p, v in peaks.items()},
            "matmul_peak_gflop_per_cpu_s": peak_cpu,
            "train_size": session.pipes.train_size, "devices": names, "results": rows, "ratios": ratios,
            "fastest_pytorch": fastest["run"] if fastest else None,
            "pytorch_missing": args.torch_missing if args.vs_pytorch else None,
            "pytorch_omp_wait_policy": omp_policy if args.vs_pytorch and not args.torch_missing else None,
            "per_device": per_device, "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "cpu_count": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_average(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def _print_table(report):
    print(describe_cpu(report["cpu"]))
    print(f"{report['arch']} {report['model_options'] or ''} on {report['dataset']}, batch {report['batch_size']}, "
          f"{report['steps']} timed steps x {report['repeat']}, precision {report['precision']}, "
          f"threads intra {report['intra_op_threads']} / inter {report['inter_op_threads']}, "
          f"load avg {report['load_avg_before']} -> {report['load_avg_after']}")
    peak = report["matmul_peak_gflops"]
    if peak:
        print("matmul peak (TF, %d x %d, best call of any round): " % (PEAK_SIZE, PEAK_SIZE) +
              ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in peak.items()) + "; per CPU-second: " +
              ", ".join(f"{p} {v:.1f}" for p, v in report["matmul_peak_gflop_per_cpu_s"].items()))
    print(f"training FLOPs per image: {report['train_flops_per_image'] / 1e6:.1f} M "
          f"(forward {report['forward_flops_per_image'] / 1e6:.1f} M x 3)")
    if report.get("pytorch_omp_wait_policy"):
        print(f"PyTorch OMP_WAIT_POLICY: {report['pytorch_omp_wait_policy']}")
    print(f"{'run':34} {'precision':>9} {'images/s':>9} {'median-step':>11} {'epoch s':>8} {'GFLOP/s':>8} "
          f"{'of peak':>7} {'CPU ms/img':>10} {'GFLOP/CPU-s':>11} {'of peak':>7}  runs")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['run']:34} {r['precision']:>9}  did not run: {r['error']}")
            continue
        share = f"{100 * r['fraction_of_peak']:6.1f}%" if r["fraction_of_peak"] is not None else f"{'-':>7}"
        cpu_ms = f"{r['cpu_ms_per_image']:10.2f}" if r.get("cpu_ms_per_image") else f"{'-':>10}"
        per_cpu = f"{r['gflop_per_cpu_s']:11.1f}" if r.get("gflop_per_cpu_s") else f"{'-':>11}"
        cpu_share = (f"{100 * r['fraction_of_peak_cpu_time']:6.1f}%" if r.get("fraction_of_peak_cpu_time")
                     else f"{'-':>7}")
        print(f"{r['run']:34} {r['precision']:>9} {r['images_per_s']:9.1f} {r['median_step_images_per_s']:11.1f} "
              f"{r['epoch_time_s']:8.1f} {r['gflops']:8.1f} {share} {cpu_ms} {per_cpu} {cpu_share}  {r['runs']}")
    for k, v in report["ratios"].items():
        cpu_time = f", CPU time {v['cpu_time']:.2f}x" if "cpu_time" in v else ""
        print(f"{k:60} {v['window']:6.2f}x  (median step {v['median_step']:.2f}x{cpu_time})")
    if report.get("pytorch_missing"):
        print(report["pytorch_missing"])
    if report["per_device"]:
        source = report["per_device"][0]["source"]
        print(f"\nper device ({source}, train split {report['train_size']} images, training only):")
        print(f"{'device':18} {'images/s':>9} {'epoch s':>8} {'100 epochs':>11} {'vs CPU':>7}")
        for d in report["per_device"]:
            print(f"{d['device']:18} {d['images_per_s']:9.1f} {d['epoch_time_s']:8.1f} "
                  f"{d['epoch_time_s'] * 100 / 60:9.1f} m {d['speedup_vs_cpu']:6.2f}x")
    if not any("GPU" in d for d in report["devices"]):
        print("no GPU on this machine: CPU only")


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.inference:
        args.repeat = 3 if args.repeat is None else args.repeat
        return bench_inference.main(args)
    args.repeat = 1 if args.repeat is None else args.repeat
    _check(args)
    if args.naive_child:
        window, median, cpu_ms = _naive_keras(args.arch, args.dataset, args.batch_size, args.steps, args.data_dir,
                                              _model_options(args))
        print(json.dumps({"images_per_s": round(window, 1), "median_step_images_per_s": round(median, 1),
                          "cpu_ms_per_image": round(cpu_ms, 3)}))
        return 0
    report = benchmark(args)
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
