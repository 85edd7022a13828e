"""Exports agree with the Keras model on real test images; writes are atomic; bad input is one line.

`trained(kind)` (LeNet-5 on MNIST, ResNet-8 on CIFAR-10, each a few hundred steps) is shared with
test_predict.py and test_web.py, so a full run trains each model once.
"""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfcnn import export
from tfcnn.errors import TfcnnError, run_cli

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
CHECK_IMAGES = 256
# kind -> dataset, architecture, options, train images, epochs, minimum test accuracy (chance: 0.1)
SETUPS = {
    "lenet5-mnist": ("mnist", "lenet5", {}, 10000, 2, 0.9),
    "resnet-cifar10": ("cifar10", "resnet", {"stack_n": 1}, 10000, 1, 0.3),
}


@functools.lru_cache(maxsize=None)
def trained(kind):
    """(model, dataset, meta): a briefly trained model and the tfcnn.json meta the trainer would write."""
    import keras

    from tfcnn import data, models

    dataset, arch, options, n_train, epochs, _ = SETUPS[kind]
    ds = data.load(dataset, DATA_DIR)
    keras.utils.set_random_seed(0)
    # The CIFAR-10 JPEG folders are stored class by class: sample, don't slice.
    pick = np.random.default_rng(0).permutation(len(ds.x_train))[:n_train]
    x, y = ds.x_train[pick], ds.y_train[pick]
    mean, std = data.normalization_stats(x)
    model = models.build(arch, ds.image_shape, ds.num_classes, normalization=(mean.tolist(), std.tolist()), **options)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32"), y, batch_size=64, epochs=epochs, verbose=0)
    meta = {"name": kind, "arch": arch, "dataset": dataset, "class_names": list(ds.class_names),
            "input_shape": list(ds.image_shape),
            "preprocessing": "raw pixels 0-255, float32, NHWC; normalisation is inside the model",
            "mean": mean.tolist(), "std": std.tolist()}
    return model, ds, meta


def check_images(ds):
    idx = export.check_indices(len(ds.x_test), CHECK_IMAGES)
    return ds.x_test[idx], ds.y_test[idx]


@pytest.fixture(scope="module", params=sorted(SETUPS))
def model_kind(request):
    return request.param


def test_check_images_cover_every_class():
    _, ds, _ = trained("resnet-cifar10")
    _, y = check_images(ds)
    assert len(y) == CHECK_IMAGES and len(np.unique(y)) == 10


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx", "tflite"])
def test_export_agrees_with_keras(model_kind, fmt, tmp_path):
    model, ds, meta = trained(model_kind)
    x, y = check_images(ds)
    keras_top1 = model.predict(x.astype("float32"), verbose=0).argmax(axis=1)
    assert (keras_top1 == y).mean() >= SETUPS[model_kind][5]  # a trained model, not a constant one
    target = tmp_path / ("sm" if fmt == "savedmodel" else f"model.{fmt}")

    check = export.export(model, fmt, target, images=x, meta=meta)

    assert check["passed"] and check["images"] == CHECK_IMAGES
    assert check["top1_agreement"] == 1.0
    assert check["max_abs_prob_diff"] <= export.TOLERANCE[fmt]
    # The figures are stored with the artefact, and the artefact itself carries the class names.
    stored = export.read_meta(target)
    assert stored["class_names"] == ds.class_names and stored["check"]["format"] == fmt
    assert stored["check"]["max_abs_prob_diff"] == check["max_abs_prob_diff"]
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
        assert json.loads(props["class_names"]) == ds.class_names
    if fmt == "savedmodel":
        assert json.loads((target / "assets" / export.META_FILE).read_text())["class_names"] == ds.class_names


def test_keras_export_roundtrips_exactly(tmp_path):
    model, ds, meta = trained("lenet5-mnist")
    check = export.export(model, "keras", tmp_path / "m.keras", images=check_images(ds)[0], meta=meta)
    assert check["max_abs_prob_diff"] == 0.0 and check["top1_agreement"] == 1.0


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_interrupted_export_leaves_nothing(fmt, tmp_path, monkeypatch):
    """KeyboardInterrupt after the artefact is written (during its check): no file under the target
    name, no temporary sibling, and an existing artefact stays as it was."""
    model, ds, meta = trained("lenet5-mnist")
    x = check_images(ds)[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_check", interrupted)
    fresh = tmp_path / "fresh" / ("sm" if fmt == "savedmodel" else f"model.{fmt}")
    with pytest.raises(KeyboardInterrupt):
        export.export(model, fmt, fresh, images=x, meta=meta)
    assert list(fresh.parent.iterdir()) == []

    existing = tmp_path / "existing" / fresh.name
    existing.parent.mkdir()
    if fmt == "savedmodel":
        existing.mkdir()
        (existing / "saved_model.pb").write_text("old")
    else:
        existing.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        export.export(model, fmt, existing, images=x, meta=meta)
    assert sorted(p.name for p in existing.parent.iterdir()) == [existing.name]
    assert (existing / "saved_model.pb" if fmt == "savedmodel" else existing).read_text() == "old"


def test_failed_check_is_an_error_and_writes_nothing(tmp_path):
    model, ds, meta = trained("lenet5-mnist")
    target = tmp_path / "model.tflite"
    with pytest.raises(TfcnnError, match="disagrees with the Keras model.*nothing was written"):
        export.export(model, "tflite", target, images=check_images(ds)[0], meta=meta, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_an_error(tmp_path):
    model, ds, meta = trained("lenet5-mnist")
    with pytest.raises(TfcnnError, match="unknown export format 'pt'"):
        export.export(model, "pt", tmp_path / "m.pt", images=check_images(ds)[0], meta=meta)


def test_saved_model_api_and_meta_unchanged(tmp_path):
    """The trainer's entry points: export_saved_model + read_meta."""
    model, ds, meta = trained("lenet5-mnist")
    target = export.export_saved_model(model, tmp_path / "run", meta)
    assert {"saved_model.pb", "model.keras", export.META_FILE, "assets"} <= {p.name for p in target.iterdir()}
    assert export.read_meta(target) == meta
    assert export.read_meta(target / "model.keras") == meta


def test_saved_model_stores_each_weight_once(tmp_path):
    import tensorflow as tf

    model, ds, meta = trained("lenet5-mnist")
    target = export.export_saved_model(model, tmp_path / "run", meta)
    stored = [name for name, _ in tf.train.list_variables(str(target / "variables" / "variables"))
              if name.endswith("VARIABLE_VALUE")]
    assert len(stored) == len(model.weights)  # Keras' own export stores every weight twice
    images = np.asarray(ds.x_test[:16], np.float32)
    served = tf.saved_model.load(str(target)).signatures["serving_default"](tf.constant(images))
    np.testing.assert_allclose(next(iter(served.values())).numpy(), model.predict(images, verbose=0), atol=1e-6)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tfcnn.export", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_exports_a_trainer_folder_and_keeps_its_other_artefacts(tmp_path):
    """The trainer's layout in, saved_models/<name>/model.onnx (+ .json with the figures) out; then a
    savedmodel re-export in place keeps that ONNX file."""
    model, ds, meta = trained("lenet5-mnist")
    folder = export.export_saved_model(model, tmp_path / "saved_models" / "lenet", meta)

    done = _cli("--model", folder, "--format", "onnx", "--data-dir", DATA_DIR, "--check-images", 300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "top-1 agreement 100.00% (300/300)" in done.stdout and "max abs prob diff" in done.stdout
    stored = json.loads((folder / "model.onnx.json").read_text())["check"]
    assert stored["images"] == 300 and stored["images_from"] == "mnist test set, 300 of 10000 images evenly spaced"

    done = _cli("--model", folder / "model.keras", "--format", "savedmodel", "--data-dir", DATA_DIR,
                "--check-images", 256, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (folder / "model.onnx").is_file() and export.read_meta(folder)["check"]["format"] == "savedmodel"


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/model.keras", "--format", "onnx"], "no model at no/such/model.keras"),
    (["--model", "x.keras", "--format", "pt"], "argument --format: invalid choice: 'pt'"),
    (["--model", "x.keras", "--format", "onnx", "--check-images", "10"], "--check-images must be at least 256"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(export.main, args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_without_a_dataset_asks_for_one(tmp_path, capsys):
    model, _, _ = trained("lenet5-mnist")
    model.save(tmp_path / "bare.keras")
    with pytest.raises(SystemExit):
        run_cli(export.main, ["--model", str(tmp_path / "bare.keras"), "--format", "onnx"])
    assert "pass --dataset" in capsys.readouterr().err
