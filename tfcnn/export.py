"""Export: SavedModel, .keras, ONNX and TFLite, each checked against the Keras model before it counts.

    python -m tfcnn.export --model saved_models/NAME --format onnx       # -> saved_models/NAME/model.onnx
    python -m tfcnn.export --model m.keras --format tflite --dataset mnist --data-dir ../shared/data

Every artefact is run (TF serving signature, onnxruntime, the LiteRT interpreter, reloaded .keras) on
real test images of the model's dataset and must agree with Keras on every top-1 and within
TOLERANCE on every probability; the figures are printed and stored with it ("check"). A file
artefact X comes with X.json (class names, input shape, preprocessing, check), which is what
`tfcnn.predict` and the web demo read; the ONNX file carries the same JSON in its metadata_props.

Writes are atomic: an artefact is written to a temporary sibling and renamed into place only once
it passed its check (tfcnn.runfiles.atomic_path, atomic_dir), so a failed or interrupted export never leaves
anything under the target name.
One process writes a target at a time: a second export to it stops with one line naming the first
(tfcnn.runfiles.Lock, a .<name>.lock file beside the target).
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tfcnn import compat, data, evaluate, predict, pretrained, runfiles
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli
from tfcnn.meta import META_FILE, read_meta  # noqa: F401  (read_meta: part of this module's API)

FORMATS = ("savedmodel", "keras", "onnx", "tflite")
FILE_NAMES = {"keras": "model.keras", "onnx": "model.onnx", "tflite": "model.tflite"}
# Largest |p_artefact - p_keras| accepted. Float32 graphs that only re-order sums differ by ~1e-7;
# TFLite's own kernels (fused conv+activation, other GEMMs) by ~1e-6. The margins leave room for
# deeper nets without letting a wrong preprocessing or a dropped layer through (those show as >1e-2).
TOLERANCE = {"savedmodel": 1e-4, "keras": 1e-6, "onnx": 1e-4, "tflite": 1e-3}
CHECK_IMAGES = 1000
MIN_CHECK_IMAGES = 256
ONNX_OPSET = 17


# ---------------------------------------------------------------- one writer per target

@contextlib.contextmanager
def _exclusive(target):
    """Own `target` for the block (another process exporting to it stops with one line naming this one,
    tfcnn.runfiles.Lock) and first remove the temporaries a killed export to it left."""
    target = Path(target)
    with runfiles.Lock(target, "export target", hint="wait for it to finish or pass another --out"):
        runfiles.remove_temporaries_of(target)
        runfiles.remove_temporaries_of(_sidecar(target))
        yield


def _sidecar(target):
    """X.json beside a file artefact X: its metadata (tfcnn.meta)."""
    return target.with_name(target.name + ".json")


# ---------------------------------------------------------------- writers (into a given path)
# Keras, TensorFlow and the converters are imported inside the writers: importing tfcnn.export (--help, tfcnn.ship,
# tfcnn.bench_inference) loads no TensorFlow.

def _write_saved_model(model, folder, meta):
    import keras

    folder = Path(folder)
    # model.export(format="tf_saved_model") without its duplicate of every weight (compat.drop_duplicate_variables);
    # the serving signature's outputs are unchanged (tests/test_export.py).
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, compat.input_signature(model))
    compat.drop_duplicate_variables(archive)
    archive.write_out(str(folder), verbose=False)
    model.save(folder / "model.keras")
    _write_saved_model_meta(folder, meta)


def _write_saved_model_meta(folder, meta):
    text = json.dumps(meta, indent=2) + "\n"
    (folder / META_FILE).write_text(text)
    (folder / "assets").mkdir(exist_ok=True)
    (folder / "assets" / META_FILE).write_text(text)


def _write_keras(model, path, meta):
    model.save(path)


def _frozen_function(model):
    """The model's forward pass as a graph with every weight and constant folded in."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")
    return compat.frozen_function(tf.function(lambda images: model(images, training=False)).get_concrete_function(spec))


def _write_onnx(model, path, meta):
    # Not model.export(format="onnx"): tf2onnx's from_function turns every captured non-variable
    # tensor into a graph input, so the constant mean/std of a Normalization layer became two
    # extra required inputs (Keras 3.15 + tf2onnx 1.17). Converting the frozen graph avoids that.
    import onnx
    import tensorflow as tf

    frozen = _frozen_function(model)
    compat.patch_tf2onnx()
    import tf2onnx

    tf_log_level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")
    try:
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), name=model.name, opset=ONNX_OPSET,
            input_names=[t.name for t in frozen.inputs], output_names=[t.name for t in frozen.outputs],
            tensors_to_rename={frozen.inputs[0].name: "input", frozen.outputs[0].name: "probs"})
    finally:
        tf.get_logger().setLevel(tf_log_level)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in (("tfcnn", json.dumps(meta)), ("class_names", json.dumps(meta.get("class_names")))):
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "tfcnn: raw 0-255 float32 NHWC pixels -> class probabilities"
    onnx.save(proto, str(path))


def _write_tflite(model, path, meta):
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tfcnn-tflite-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        data = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    Path(path).write_bytes(data)


_WRITERS = {"keras": _write_keras, "onnx": _write_onnx, "tflite": _write_tflite}


# ---------------------------------------------------------------- the check

def compare(reference, probs, tolerance):
    """Top-1 agreement and max abs probability difference of `probs` against `reference`."""
    reference, probs = np.asarray(reference, np.float64), np.asarray(probs, np.float64)
    if reference.shape != probs.shape:
        raise TfcnnError(f"the export outputs shape {probs.shape}, the Keras model {reference.shape}")
    agree = int((reference.argmax(axis=1) == probs.argmax(axis=1)).sum())
    diff = float(np.abs(reference - probs).max())
    return {"images": int(len(reference)), "top1_agreement": agree / len(reference), "top1_agree_count": agree,
            "max_abs_prob_diff": diff, "tolerance": tolerance,
            "passed": agree == len(reference) and diff <= tolerance}  # NaN fails too


def _check(fmt, path, images, reference, tolerance):
    runner = predict.open_model(path, kind=fmt)
    return compare(reference, runner.probs(images), tolerance)


def _describe(check):
    return (f"top-1 agreement {100 * check['top1_agreement']:.2f}% ({check['top1_agree_count']}/{check['images']}), "
            f"max abs prob diff {check['max_abs_prob_diff']:.2e} (tolerance {check['tolerance']:.0e})")


# ---------------------------------------------------------------- public API

def export_saved_model(model, target, meta):
    """Write target/ = SavedModel (serving signature: raw 0-255 pixels -> class probabilities),
    target/model.keras and target/tfcnn.json (class names, input shape, preprocessing), and a copy
    of the metadata in target/assets/ so the SavedModel alone carries it."""
    with _exclusive(target), runfiles.atomic_dir(target) as tmp:
        _write_saved_model(model, tmp, meta)
        runfiles.fault("export")
    return Path(target)


def export(model, fmt, target, *, images, meta, tolerance=None, keep=(), images_from=None):
    """Write `model` as `fmt` to `target`, check it on `images` (NHWC, raw 0-255) and return the check.

    target is a file for keras/onnx/tflite (X.json is written beside it) and a folder for savedmodel.
    `keep`: names inside an existing savedmodel folder to carry over (other exports of the same model).
    `images_from`: where the check images came from, stored with the figures.
    Raises TfcnnError, leaving `target` as it was, if the artefact disagrees with the Keras model.
    """
    if fmt not in FORMATS:
        raise TfcnnError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    tolerance = TOLERANCE[fmt] if tolerance is None else float(tolerance)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.input_shape[1:]):
        raise TfcnnError(f"check images have shape {images.shape[1:]}, the model takes {tuple(model.input_shape[1:])}")
    reference = evaluate.predict_proba(model, images)
    target = Path(target)
    meta = dict(meta)
    about = {"format": fmt, **({"images_from": images_from} if images_from else {})}
    with _exclusive(target):
        return _export_owned(model, fmt, target, images, reference, meta, about, tolerance, keep)


def _export_owned(model, fmt, target, images, reference, meta, about, tolerance, keep):
    """export(), holding the target's lock."""
    if fmt == "savedmodel":
        with runfiles.atomic_dir(target) as tmp:
            _write_saved_model(model, tmp, meta)
            check = _check(fmt, tmp, images, reference, tolerance)
            _fail_unless(check, fmt, target)
            _write_saved_model_meta(tmp, {**meta, "check": {**about, **check}})
            for name in keep:
                if (target / name).exists() and not (tmp / name).exists():
                    if (target / name).is_dir():
                        shutil.copytree(target / name, tmp / name)
                    else:
                        shutil.copy2(target / name, tmp / name)
        return check
    with runfiles.atomic_path(target) as tmp:
        _WRITERS[fmt](model, tmp, meta)
        check = _check(fmt, tmp, images, reference, tolerance)
        _fail_unless(check, fmt, target)
        # The sidecar goes first: once the artefact's name exists, its metadata does too.
        runfiles.write_json(_sidecar(target), {**meta, "check": {**about, **check}})
    return check


def _fail_unless(check, fmt, target):
    if not check["passed"]:
        raise TfcnnError(f"the {fmt} export disagrees with the Keras model: {_describe(check)}; "
                         f"nothing was written to {target}")


# ---------------------------------------------------------------- CLI

def _default_target(source, fmt, saved_models_dir="saved_models"):
    """The model's own folder if it is a saved model (has tfcnn.json), else saved_models/<name>/ with
    <name> the folder of a model.keras (runs/<name>/model.keras) or the .keras file's stem; in it
    model.<ext>, or the folder itself for savedmodel."""
    source = Path(source)
    if source.is_dir():
        folder = source
    elif (source.parent / META_FILE).is_file():
        folder = source.parent
    else:
        name = source.parent.name if source.name == "model.keras" and source.parent.name else source.stem
        folder = Path(saved_models_dir) / name
    return folder if fmt == "savedmodel" else folder / FILE_NAMES[fmt]


def check_indices(total, count):
    """`count` test-image indices spread evenly over all `total`: test sets stored class by class
    (the CIFAR-10 JPEG folders) would otherwise give one class only."""
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def _check_images(dataset, data_dir, count, input_shape):
    ds = data.load(dataset, data_dir)
    if tuple(ds.image_shape) != tuple(input_shape):
        raise TfcnnError(f"{dataset} has {ds.image_shape} images but the model takes {tuple(input_shape)}; "
                         "pass the --dataset it was trained on")
    if len(ds.x_test) < count:
        raise TfcnnError(f"{dataset} has only {len(ds.x_test)} test images; pass --check-images {len(ds.x_test)}")
    return ds, ds.x_test[check_indices(len(ds.x_test), count)]


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.export", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help=".keras file, saved_models/<name> folder or pretrained:NAME")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write: " + ", ".join(FORMATS))
    parser.add_argument("--out", default=None,
                        help="artefact path (a folder for savedmodel); default saved_models/<name>/model.<ext>")
    parser.add_argument("--dataset", default=None, help="test images for the check (default: the model's tfcnn.json)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--check-images", type=int, default=CHECK_IMAGES,
                        help=f"test images the export is checked on (>= {MIN_CHECK_IMAGES}; default {CHECK_IMAGES})")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="max abs probability difference allowed (default: " +
                             ", ".join(f"{k} {v:.0e}" for k, v in TOLERANCE.items()) + ")")
    args = parser.parse_args(argv)
    if args.check_images < MIN_CHECK_IMAGES:
        raise TfcnnError(f"--check-images must be at least {MIN_CHECK_IMAGES}, got {args.check_images}")

    from tfcnn import models  # imports Keras and TensorFlow: after the flags, so that --help is instant

    shipped = args.model.startswith(pretrained.PREFIX)
    source = Path(pretrained.resolve(args.model))
    if not source.exists():
        raise TfcnnError(f"no model at {source}; pass a .keras file or a saved_models/<name> folder")
    meta = read_meta(source) or {}
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise TfcnnError(f"{source} has no {META_FILE} naming its dataset; pass --dataset for the check images")
    model = models.load_model(source)
    ds, images = _check_images(dataset, args.data_dir, args.check_images, model.input_shape[1:])
    num_classes = int(model.output_shape[-1])
    if not meta.get("class_names"):
        if ds.num_classes != num_classes:
            raise TfcnnError(f"the model predicts {num_classes} classes but {dataset} has {ds.num_classes}; "
                             "pass the --dataset it was trained on")
        meta = {**meta, "dataset": dataset, "class_names": list(ds.class_names)}
    meta.setdefault("input_shape", list(model.input_shape[1:]))
    meta.setdefault("preprocessing", "raw pixels 0-255, float32, NHWC; normalisation is inside the model")
    meta.pop("check", None)
    if args.out:
        target = Path(args.out)
    elif shipped:  # never write into a shipped model's folder: its files are checksummed
        target = _default_target(Path("saved_models") / f"{source.name}-export" / "model.keras", args.format)
    else:
        target = _default_target(source, args.format)
    keep = ()
    source_folder = source if source.is_dir() else source.parent
    if args.format == "savedmodel" and target.exists() and target.resolve() == source_folder.resolve():
        keep = [p.name for p in target.iterdir()]  # re-export in place: the folder's other artefacts stay
    start = time.perf_counter()
    check = export(model, args.format, target, images=images, meta=meta, tolerance=args.tolerance, keep=keep,
                   images_from=f"{dataset} test set, {len(images)} of {len(ds.x_test)} images evenly spaced")
    print(f"{args.format}: {target} checked on {check['images']} {dataset} test images: {_describe(check)} "
          f"[{time.perf_counter() - start:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
