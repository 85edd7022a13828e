"""Inference speed of a saved model's exports: batch-1 latency (p50/p99) and batch-256 throughput.

    python -m tfcnn.bench --inference --model saved_models/lenet5-mnist
    python -m tfcnn.bench --inference --model saved_models/resnet32-cifar10 --session-options --repeat 3 --json

Each export present in the folder is timed side by side, rounds interleaved: Keras (model.keras, as
`tfcnn.predict` runs it: model.predict), the SavedModel serving signature (as `tfcnn.predict` runs it),
ONNX Runtime on model.onnx (CPU execution provider, default session options: what `tfcnn.predict`
opens) and TFLite on a .tflite (ai_edge_litert's Interpreter, XNNPACK its default delegate). A
folder without a .tflite gets one from `python -m tfcnn.export --format tflite` in a temporary
folder (needs the model's test set for the export's check); the model folder is never written to.

`--session-options` adds the same exports under other settings (ONNX Runtime threads, graph
optimisation level, spinning; TFLite threads, XNNPACK off; Keras predict_on_batch), each with
its ratio to the default, to find settings worth making tfcnn.predict's default.

Inputs are random raw 0-255 float32 images of the model's input shape (speed does not depend on them).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tfcnn import meta as meta_lib, predict, pretrained
from tfcnn.errors import TfcnnError
from tfcnn.hardware import cpu_info, describe_cpu, load_average

WARMUP_CALLS = 5
THROUGHPUT_SECONDS = 0.5  # batch-256 calls per export per round: at least 3, and until this long


class _Runner:
    """One export under one setting: `fn(images) -> probabilities`."""

    def __init__(self, name, kind, settings, fn, default=True):
        self.name, self.kind, self.settings, self.fn, self.default = name, kind, settings, fn, default


def _exports(folder):
    """{kind: path} of the exports present in a saved model folder."""
    found = {}
    if (folder / "model.keras").is_file():
        found["keras"] = folder / "model.keras"
    if (folder / "saved_model.pb").is_file():
        found["savedmodel"] = folder
    if (folder / "model.onnx").is_file():
        found["onnx"] = folder / "model.onnx"
    tflite = sorted(folder.glob("*.tflite"))
    if tflite:
        found["tflite"] = tflite[0]
    return found


def _make_tflite(folder, out_dir, data_dir):
    """A .tflite of the folder's model in out_dir, via the export CLI (which checks it against Keras)."""
    target = Path(out_dir) / "model.tflite"
    cmd = [sys.executable, "-m", "tfcnn.export", "--model", str(folder), "--format", "tflite", "--out", str(target),
           "--check-images", "256"] + (["--data-dir", str(data_dir)] if data_dir else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TfcnnError(f"could not make a .tflite for {folder}: {tail}")
    return target


# ---------------------------------------------------------------- runners

def _keras_runners(path, session_options):
    model = predict.open_model(path, kind="keras")
    runners = [_Runner("keras", "keras", "model.predict_on_batch per 256 (tfcnn.predict)", model.probs)]
    if session_options:
        from tfcnn import models  # imports Keras and TensorFlow: only the Keras runners need them

        raw = models.load_model(path)
        runners.append(_Runner("keras predict", "keras", "model.predict (tfcnn.predict before)",
                               lambda x: np.asarray(raw.predict(x, batch_size=256, verbose=0)), default=False))
    return runners


def _savedmodel_runners(path, session_options):
    model = predict.open_model(path, kind="savedmodel")
    return [_Runner("savedmodel", "savedmodel", "serving_default signature (tfcnn.predict)", model.probs)]


def _ort_session(path, threads=None, level=None, spinning=True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if level:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _onnx_runners(path, session_options):
    model = predict.open_model(path, kind="onnx")
    runners = [_Runner("onnx", "onnx", f"intra-op threads {model.threads}"
                       f"{', no spinning' if model.threads == 1 else ''}, ORT_ENABLE_ALL (tfcnn.predict: all cores "
                       "unless the load fills them)", model.probs)]
    if session_options:
        variants = [("onnx ORT defaults", "intra-op threads = cores, ORT_ENABLE_ALL, spinning on", {}),
                    ("onnx intra 1", "intra_op_num_threads=1", {"threads": 1}),
                    ("onnx no spin", "session.intra_op.allow_spinning=0", {"spinning": False}),
                    ("onnx opt basic", "ORT_ENABLE_BASIC", {"level": "ORT_ENABLE_BASIC"}),
                    ("onnx opt extended", "ORT_ENABLE_EXTENDED", {"level": "ORT_ENABLE_EXTENDED"})]
        runners += [_Runner(name, "onnx", settings, _ort_session(path, **kw), default=False)
                    for name, settings, kw in variants]
    return runners


def _tflite_fn(path, num_threads=None, xnnpack=True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=resolver)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.allocate_tensors()
    shape = [tuple(inp["shape"])]

    def run(x):
        if shape[0] != x.shape:  # tfcnn.predict resizes the same way
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return run


def _tflite_runners(path, session_options):
    model = predict.open_model(path, kind="tflite")
    runners = [_Runner("tflite", "tflite", f"num_threads={model.threads}, XNNPACK (tfcnn.predict: all cores unless "
                       "the load fills them)", model.probs)]
    if session_options:
        cores = os.cpu_count() or 1
        runners += [_Runner("tflite LiteRT default", "tflite", "num_threads default, XNNPACK", _tflite_fn(path),
                            default=False)]
        runners += [_Runner(f"tflite threads {n}", "tflite", f"num_threads={n}, XNNPACK", _tflite_fn(path, n),
                            default=False) for n in sorted({1, cores})]
        runners.append(_Runner("tflite no xnnpack", "tflite", "builtin kernels without default delegates",
                               _tflite_fn(path, xnnpack=False), default=False))
    return runners


_RUNNERS = {"keras": _keras_runners, "savedmodel": _savedmodel_runners, "onnx": _onnx_runners,
            "tflite": _tflite_runners}


# ---------------------------------------------------------------- timing

def _latencies(fn, x, calls):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return times


def _throughput(fn, x, seconds):
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        fn(x)
        calls += 1
    return calls * len(x) / (time.perf_counter() - start)


def measure(runners, input_shape, *, repeat=3, latency_calls=200, throughput_batch=256, log=None):
    """Rounds interleaved over the runners; per runner: pooled batch-1 latencies -> p50/p99 (ms) and the
    median of the rounds' batch-`throughput_batch` images/s."""
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, *input_shape)).astype(np.float32)
    many = rng.integers(0, 256, (throughput_batch, *input_shape)).astype(np.float32)
    for r in runners:  # first calls build graphs, allocate and pick kernels
        for x in (one, many, one):
            for _ in range(WARMUP_CALLS if x is one else 1):
                r.fn(x)
    latency = {r.name: [] for r in runners}
    throughput = {r.name: [] for r in runners}
    for round_ in range(repeat):
        for r in runners:
            latency[r.name] += _latencies(r.fn, one, latency_calls)
            throughput[r.name].append(_throughput(r.fn, many, THROUGHPUT_SECONDS))
            if log:
                log(f"[{round_ + 1}/{repeat}] {r.name}: p50 {1e3 * statistics.median(latency[r.name]):.2f} ms, "
                    f"{throughput[r.name][-1]:.0f} images/s")
    rows = []
    for r in runners:
        lat = np.asarray(latency[r.name]) * 1e3
        rows.append({"run": r.name, "kind": r.kind, "settings": r.settings, "default": r.default,
                     "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                     "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
                     "throughput_images_per_s": round(statistics.median(throughput[r.name]), 1),
                     "throughput_runs": [round(t, 1) for t in throughput[r.name]]})
    return rows


def _vs_default(rows):
    """Each non-default setting against its export's default: >1 means faster."""
    defaults = {r["kind"]: r for r in rows if r["default"]}
    for r in rows:
        base = defaults.get(r["kind"])
        if base and r is not base:
            r["vs_default"] = {"latency_p50": round(base["latency_ms_p50"] / r["latency_ms_p50"], 3),
                               "throughput": round(r["throughput_images_per_s"] / base["throughput_images_per_s"], 3)}
    return rows


def benchmark_inference(model, *, repeat=3, latency_calls=200, throughput_batch=256, session_options=False,
                        data_dir=None, log=None):
    """Time every export of the saved model folder `model`; returns the report dict."""
    folder = Path(pretrained.resolve(model))
    if not folder.is_dir():
        raise TfcnnError(f"--model {model}: not a saved model folder; pass saved_models/NAME")
    found = _exports(folder)
    if not found:
        raise TfcnnError(f"{folder} holds no export (model.keras, saved_model.pb, model.onnx or *.tflite)")
    meta = meta_lib.read_meta(folder) or {}
    notes = []
    with tempfile.TemporaryDirectory(prefix="tfcnn-bench-") as tmp:
        if "tflite" not in found:
            try:
                found["tflite"] = _make_tflite(folder, tmp, data_dir)
                notes.append(f"tflite: {folder} has none; made one with python -m tfcnn.export --format tflite "
                             "in a temporary folder")
            except TfcnnError as exc:
                notes.append(f"tflite: not timed ({exc})")
        runners = [r for kind, path in found.items() for r in _RUNNERS[kind](path, session_options)]
        input_shape = meta.get("input_shape") or _input_shape(found)
        load_before = load_average()
        rows = _vs_default(measure(runners, input_shape, repeat=repeat, latency_calls=latency_calls,
                                   throughput_batch=throughput_batch, log=log))
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert import __version__ as litert_version

    return {"model": str(model), "input_shape": list(input_shape), "exports": {k: str(v) for k, v in found.items()},
            "repeat": repeat, "latency_calls": latency_calls, "throughput_batch": throughput_batch,
            "results": rows, "notes": notes, "cpu": cpu_info(), "load_avg_before": load_before,
            "load_avg_after": load_average(), "tensorflow": tf.__version__, "onnxruntime": onnxruntime.__version__,
            "ai_edge_litert": litert_version}


def _input_shape(found):
    kind, path = next(iter(found.items()))
    return list(predict.open_model(path, kind=kind).input_shape)


def print_table(report):
    print(describe_cpu(report["cpu"]))
    print(f"{report['model']} (input {report['input_shape']}): batch-1 latency over {report['latency_calls']} calls "
          f"x {report['repeat']} rounds, batch-{report['throughput_batch']} throughput, rounds interleaved; "
          f"load avg {report['load_avg_before']} -> {report['load_avg_after']}")
    print(f"{'export':24} {'p50 ms':>8} {'p99 ms':>8} {'images/s':>9} {'vs default':>16}  settings")
    for r in report["results"]:
        vs = r.get("vs_default")
        vs = f"{vs['latency_p50']:.2f}x / {vs['throughput']:.2f}x" if vs else ""
        print(f"{r['run']:24} {r['latency_ms_p50']:8.3f} {r['latency_ms_p99']:8.3f} "
              f"{r['throughput_images_per_s']:9.1f} {vs:>16}  {r['settings']}")
    if any("vs_default" in r for r in report["results"]):
        print("vs default: p50 latency speed-up / throughput speed-up against the export's default row")
    for note in report["notes"]:
        print(note)
    print(f"TensorFlow {report['tensorflow']}, onnxruntime {report['onnxruntime']}, "
          f"ai-edge-litert {report['ai_edge_litert']}")


def main(args):
    """`python -m tfcnn.bench --inference ...` (the flags are tfcnn.bench's)."""
    if not args.model:
        raise TfcnnError("--inference needs --model saved_models/NAME")
    for flag in ("repeat", "latency_calls", "throughput_batch"):
        if getattr(args, flag) < 1:
            raise TfcnnError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    report = benchmark_inference(args.model, repeat=args.repeat, latency_calls=args.latency_calls,
                                 throughput_batch=args.throughput_batch, session_options=args.session_options,
                                 data_dir=args.data_dir, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0
