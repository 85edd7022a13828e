"""Predict: classify image files with any exported model (SavedModel, .keras, ONNX, TFLite).

    python -m tfcnn.predict --model saved_models/NAME digit.png cat.jpg [--top-k 3] [--json]

Images of any size and mode are decoded as the training images are (tfcnn.datafiles.decode_image: turned
upright by their EXIF orientation, grayscale "L" or "RGB", bilinear resize to the model's input) and fed
as raw 0-255 float32 NHWC; the models normalise inside. Class names come with the model:
assets/tfcnn.json of a SavedModel, X.json beside a file X (written by tfcnn.export), or the ONNX
metadata (tfcnn.meta).

ONNX and TFLite files run on onnxruntime and the LiteRT interpreter (ai-edge-litert): neither this
module nor they import TensorFlow, so one image answers in well under a second. TensorFlow is
imported only for a SavedModel or a .keras file.

A model file is data, never code: a .keras file loads in Keras' safe mode (tfcnn.models.load_model: a Lambda
layer's Python code is refused), a SavedModel holds a TensorFlow graph and no Python (tf.saved_model.load
unpickles nothing), and a model whose metadata disagrees with its graph (class count, input shape) is
refused with one line (tfcnn.meta.check_graph).

An image that cannot be read is reported as one line on stderr ("error: PATH: why") and the
others are still classified; the exit status is then 2. With --json the failures also appear
in the "results" list as {"image": PATH, "error": why}.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tfcnn import datafiles, hardware, meta as meta_lib, pretrained
from tfcnn.errors import ArgumentParser, TfcnnError, native_stderr_off, printable, run_cli

KINDS = ("savedmodel", "keras", "onnx", "tflite")
_SUFFIX_KIND = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}


class Model:
    """A loaded artefact: `probs(images)` maps raw 0-255 NHWC images to class probabilities."""

    def __init__(self, kind, path, run, input_shape, meta, threads=None, num_classes=None):
        self.kind, self.path, self._run = kind, Path(path), run
        meta_lib.check_graph(meta, input_shape, num_classes, path)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.meta = meta or {}
        self.threads = threads  # ONNX Runtime / TFLite: the threads runtime_threads() chose at opening

    def probs(self, images, batch_size=256):
        images = np.asarray(images, np.float32)
        return np.concatenate([np.asarray(self._run(images[i:i + batch_size]), np.float32)
                               for i in range(0, len(images), batch_size)])

    def class_names(self, num_classes):
        return meta_lib.class_names(self.meta, num_classes)


def _kind_of(path):
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        if (path / "model.keras").is_file():
            return "keras"
        raise TfcnnError(f"{path} holds neither a SavedModel (saved_model.pb) nor a model.keras")
    kind = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is None:
        raise TfcnnError(f"{path}: unknown model file type; pass a SavedModel folder, saved_models/<name>, "
                         "or a .keras, .onnx or .tflite file")
    return kind


def open_model(path, kind=None):
    """Load the model at `path` (kind inferred from the path unless given) for `Model.probs`."""
    path = Path(pretrained.resolve(path))
    if not path.exists():
        raise TfcnnError(f"no model at {path}; pass a SavedModel folder, saved_models/<name>, "
                         "or a .keras, .onnx or .tflite file")
    kind = kind or _kind_of(path)
    if kind not in KINDS:
        raise TfcnnError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        return _OPENERS[kind](path, meta_lib.read_meta(path))
    except TfcnnError:
        raise
    except Exception as exc:
        raise TfcnnError(f"{path} could not be loaded as a {kind} model "
                         f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _open_savedmodel(path, meta):
    import tensorflow as tf  # here, not at the top: ONNX and TFLite models run without TensorFlow

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()

    def run(images):
        out = signature(**{name: tf.constant(images)})
        return next(iter(out.values())).numpy()

    outputs = signature.structured_outputs
    return Model("savedmodel", path, run, spec.shape[1:], meta, num_classes=next(iter(outputs.values())).shape[-1])


def _open_keras(path, meta):
    from tfcnn import models  # imports Keras and TensorFlow: ONNX and TFLite models run without them

    model = models.load_model(path)
    # predict_on_batch, not predict: Model.probs already cuts batches of 256, and predict's per-call set-up
    # (a tf.data pipeline, callbacks) dominates batch-1 latency (docs/results/performance-cpus.md, "Inference speed
    # of the shipped exports").
    return Model("keras", path, lambda images: model.predict_on_batch(images), model.input_shape[1:], meta,
                 num_classes=model.output_shape[-1])


def runtime_threads():
    """Threads for ONNX Runtime and TFLite: every core on an idle machine, one (not spin-waiting) when the
    1-minute load average already fills the cores: on idle cores more threads win, on busy ones a single
    non-spinning thread does (measured both ways: docs/results/performance-cpus.md, "Inference speed of the
    shipped exports")."""
    cores = os.cpu_count() or 1
    load = hardware.load_average()
    return 1 if load and load[0] >= cores else cores


def _open_onnx(path, meta):
    import onnxruntime as ort

    threads = runtime_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    embedded = session.get_modelmeta().custom_metadata_map.get("tfcnn")
    if embedded and not meta:
        meta = meta_lib.parse(embedded, f"{path} (metadata_props 'tfcnn')")
    (inp,) = session.get_inputs()
    return Model("onnx", path, lambda images: session.run(None, {inp.name: images})[0], inp.shape[1:], meta,
                 threads, num_classes=session.get_outputs()[0].shape[-1])


def _open_tflite(path, meta):
    from ai_edge_litert.interpreter import Interpreter  # TFLite's runtime without TensorFlow

    threads = runtime_threads()
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(images):
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:
            interpreter.resize_tensor_input(inp["index"], list(images.shape))
            interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    with native_stderr_off():  # the first allocation logs "INFO: Created ... XNNPACK delegate" to fd 2
        interpreter.allocate_tensors()
    return Model("tflite", path, run, inp["shape"][1:], meta, threads, num_classes=out["shape"][-1])


_OPENERS = {"savedmodel": _open_savedmodel, "keras": _open_keras, "onnx": _open_onnx, "tflite": _open_tflite}


def load_image(path, input_shape):
    """An image file (any format, size or mode PIL reads) as uint8 HWC in the model's input shape, decoded as the
    training images are (tfcnn.datafiles.decode_image); TfcnnError if unreadable."""
    from PIL import Image

    height, width, channels = input_shape
    if channels not in (1, 3):
        raise TfcnnError(f"the model takes {channels}-channel images; only grayscale (1) and RGB (3) are supported")
    path = Path(path)
    if not path.exists():
        raise TfcnnError(f"{path}: no such file")
    if not path.is_file():
        raise TfcnnError(f"{path}: not a file")
    try:
        pixels = datafiles.decode_image(path, "L" if channels == 1 else "RGB", (width, height))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TfcnnError(f"{path}: too large to decode safely ({exc})") from None
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... on bad files
        why = "not an image PIL can read" if isinstance(exc, Image.UnidentifiedImageError) else \
            f"cannot decode the image ({exc.__class__.__name__}: {' '.join(str(exc).split())})"
        raise TfcnnError(f"{path}: {why}") from None
    return pixels


def top_k(probs, class_names, k):
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": class_names[i], "index": int(i), "probability": float(probs[i])} for i in order]


def predict_files(model, paths, k=3):
    """[{"image", "top_k"} or {"image", "error"}] for each path, in order; unreadable images do not
    stop the others."""
    results, pixels, good = [], [], []
    for path in paths:
        try:
            pixels.append(load_image(path, model.input_shape))
            good.append(len(results))
            results.append({"image": str(path)})
        except TfcnnError as exc:
            results.append({"image": str(path), "error": str(exc)})
    if pixels:
        probs = model.probs(np.stack(pixels))
        names = model.class_names(probs.shape[1])
        for i, p in zip(good, probs):
            results[i]["top_k"] = top_k(p, names, k)
    return results


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="SavedModel folder, saved_models/<name>, or a .keras, .onnx or .tflite file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files")
    parser.add_argument("--top-k", type=int, default=3, help="classes listed per image, most probable first (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise TfcnnError(f"--top-k must be at least 1, got {args.top_k}")

    model = open_model(args.model)
    results = predict_files(model, args.images, args.top_k)
    failed = [r for r in results if "error" in r]
    for r in failed:
        sys.stderr.write(f"error: {printable(r['error'])}\n")
    if args.json:
        print(json.dumps({"model": str(args.model), "kind": model.kind, "results": results}, indent=2))
    else:
        for r in results:
            if "top_k" in r:
                print(f"{r['image']}: " + "  ".join(f"{t['class']} {t['probability']:.4f}" for t in r["top_k"]))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
