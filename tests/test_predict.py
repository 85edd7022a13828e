"""tfcnn.predict on real image files: an MNIST PNG and CIFAR-10 JPEGs straight from the archive,
through every kind of exported model; unreadable input is one line and exit 2."""
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from tfcnn import export, predict
from tfcnn.errors import TfcnnError, run_cli
from test_export import DATA_DIR, REPO, check_images, trained

MNIST_TEST_IDS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


@pytest.fixture(scope="module")
def mnist_models(tmp_path_factory):
    """{kind: path} for one LeNet-5: the trainer's folder (SavedModel + model.keras), ONNX, TFLite."""
    model, ds, meta = trained("lenet5-mnist")
    folder = export.export_saved_model(model, tmp_path_factory.mktemp("saved_models") / "lenet", meta)
    x = check_images(ds)[0]
    for fmt in ("onnx", "tflite"):
        export.export(model, fmt, folder / f"model.{fmt}", images=x, meta=meta)
    return {"savedmodel": folder, "keras": folder / "model.keras",
            "onnx": folder / "model.onnx", "tflite": folder / "model.tflite"}


@pytest.fixture(scope="module")
def mnist_pngs(tmp_path_factory):
    """Test images 0-9 of mnist.npz as PNG files, with their labels."""
    out = tmp_path_factory.mktemp("mnist_png")
    with np.load(DATA_DIR / "mnist.npz") as npz:
        x, y = npz["x_test"][MNIST_TEST_IDS], npz["y_test"][MNIST_TEST_IDS]
    paths = []
    for i, image in zip(MNIST_TEST_IDS, x):
        paths.append(out / f"mnist_test_{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths, y


@pytest.fixture(scope="module")
def cifar_jpegs(tmp_path_factory):
    """The first test JPEG of each CIFAR-10 class, copied byte for byte out of the archive."""
    out = tmp_path_factory.mktemp("cifar_jpg")
    found = {}
    with tarfile.open(DATA_DIR / "cifar-10-jpg.tar.gz", "r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and parts[1:2] == ["test"] and parts[2] not in found:
                found[parts[2]] = out / f"{parts[2]}_{parts[3]}"
                found[parts[2]].write_bytes(tar.extractfile(member).read())
            if len(found) == 10:
                break
    return found


def _keras_top1(model, paths, input_shape):
    pixels = np.stack([predict.load_image(p, input_shape) for p in paths]).astype("float32")
    return model.predict(pixels, verbose=0).argmax(axis=1)


@pytest.mark.parametrize("kind", predict.KINDS)
def test_mnist_png_through_every_model_kind(kind, mnist_models, mnist_pngs):
    paths, labels = mnist_pngs
    model, ds, _ = trained("lenet5-mnist")
    runner = predict.open_model(mnist_models[kind])
    assert runner.kind == kind and runner.input_shape == (28, 28, 1)

    results = predict.predict_files(runner, paths, k=3)

    top1 = np.array([r["top_k"][0]["index"] for r in results])
    assert [r["top_k"][0]["class"] for r in results] == [ds.class_names[i] for i in top1]  # names travel along
    np.testing.assert_array_equal(top1, _keras_top1(model, paths, (28, 28, 1)))
    assert (top1 == labels).sum() >= 9  # LeNet-5 after 300 steps: ~97% on MNIST
    assert all(len(r["top_k"]) == 3 and r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
               for r in results)


def test_cifar_jpegs_from_the_archive(cifar_jpegs, tmp_path):
    model, ds, meta = trained("resnet-cifar10")
    path = tmp_path / "model.onnx"
    export.export(model, "onnx", path, images=check_images(ds)[0], meta=meta)
    runner = predict.open_model(path)
    classes = sorted(cifar_jpegs)
    paths = [cifar_jpegs[c] for c in classes]

    results = predict.predict_files(runner, paths, k=3)

    top1 = [r["top_k"][0]["class"] for r in results]
    # The JPEG decodes to exactly the pixels tfcnn.data trained on, so predict = Keras on them.
    assert top1 == [ds.class_names[i] for i in _keras_top1(model, paths, (32, 32, 3))]
    assert sum(t == c for t, c in zip(top1, classes)) >= 3  # a briefly trained ResNet-8 (chance: 1)


def test_any_size_and_mode_is_converted(mnist_models, mnist_pngs, tmp_path):
    """An RGBA 84x84 upscale of a digit becomes 28x28 grayscale, as the model needs."""
    digit = Image.open(mnist_pngs[0][0])
    big = tmp_path / "big_rgba.png"
    digit.resize((84, 84), Image.Resampling.NEAREST).convert("RGBA").save(big)
    runner = predict.open_model(mnist_models["onnx"])
    pixels = predict.load_image(big, runner.input_shape)
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - np.asarray(digit, int)[..., None]).mean() < 10
    (result,) = predict.predict_files(runner, [big])
    assert result["top_k"][0]["index"] == mnist_pngs[1][0]


def test_saved_model_alone_carries_its_class_names(mnist_pngs, tmp_path):
    """Only the SavedModel's own files (no tfcnn.json or model.keras beside it): names from assets/."""
    import shutil

    model, _, meta = trained("lenet5-mnist")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    full = export.export_saved_model(model, tmp_path / "full", {**meta, "class_names": words})
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("saved_model.pb", "variables", "assets"):
        (shutil.copytree if (full / name).is_dir() else shutil.copy)(full / name, alone / name)
    (result,) = predict.predict_files(predict.open_model(alone), mnist_pngs[0][:1])
    assert result["top_k"][0]["class"] == words[mnist_pngs[1][0]]


def test_text_output(mnist_models, mnist_pngs, capsys):
    assert run_cli(predict.main, ["--model", str(mnist_models["tflite"]), str(mnist_pngs[0][0]), "--top-k", "2"]) == 0
    line, = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{mnist_pngs[0][0]}: {mnist_pngs[1][0]} 0.") and len(line.split()) == 5


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tfcnn.predict", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


# Runs predict's CLI, then reports which heavy frameworks ended up imported (last stderr line).
_PREDICT_AND_REPORT = """
import json, sys
from tfcnn import predict
from tfcnn.errors import run_cli
code = run_cli(predict.main, sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "tf_keras"})
sys.stderr.write(json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


@pytest.mark.parametrize("kind, heavy", [("onnx", []), ("tflite", []), ("savedmodel", ["keras", "tensorflow"])],
                         ids=["onnx", "tflite", "savedmodel"])
def test_onnx_and_tflite_predict_without_tensorflow(kind, heavy, mnist_models, mnist_pngs):
    """ONNX and TFLite answer on onnxruntime / LiteRT alone, with Keras' classes; a SavedModel does need
    TensorFlow (the control: the check sees it), whose start-up notices stay off stderr."""
    paths, _ = mnist_pngs
    env = {k: v for k, v in os.environ.items() if k != "TFCNN_TF_LOGS"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _PREDICT_AND_REPORT, "--model", str(mnist_models[kind]), "--json",
                           *map(str, paths)], env=env, capture_output=True, text=True, timeout=300)

    *other, report = done.stderr.splitlines()
    assert json.loads(report) == {"code": 0, "heavy": heavy} and other == []
    top1 = [r["top_k"][0]["index"] for r in json.loads(done.stdout)["results"]]
    model, _, _ = trained("lenet5-mnist")
    np.testing.assert_array_equal(top1, _keras_top1(model, paths, (28, 28, 1)))


def test_cli_bad_images_are_one_line_each_and_the_rest_is_kept(mnist_models, mnist_pngs, cifar_jpegs, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a PNG\n")
    missing = tmp_path / "missing.jpg"
    good = [mnist_pngs[0][0], cifar_jpegs["cat"]]  # an RGB JPEG goes through a grayscale model too

    done = _cli("--model", mnist_models["tflite"], "--json", good[0], not_image, missing, good[1])

    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert errors == [f"error: {not_image}: not an image PIL can read", f"error: {missing}: no such file"]
    out = json.loads(done.stdout)
    assert [r["image"] for r in out["results"]] == [str(p) for p in (good[0], not_image, missing, good[1])]
    assert [("top_k" in r, "error" in r) for r in out["results"]] == [(True, False), (False, True),
                                                                      (False, True), (True, False)]
    assert out["results"][0]["top_k"][0]["class"] == str(mnist_pngs[1][0])


def test_cli_missing_model_is_one_line_and_exit_2(mnist_pngs, tmp_path):
    done = _cli("--model", tmp_path / "nope.onnx", mnist_pngs[0][0])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"error: no model at {tmp_path / 'nope.onnx'}; pass a SavedModel folder, " \
                                  "saved_models/<name>, or a .keras, .onnx or .tflite file"


@pytest.mark.parametrize("name, content, message", [
    ("model.pt", b"x", "unknown model file type"),
    ("model.onnx", b"not onnx", "could not be loaded as a onnx model"),
    ("model.tflite", b"not tflite", "could not be loaded as a tflite model"),
])
def test_bad_model_files_are_user_errors(name, content, message, tmp_path):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(TfcnnError, match=message):
        predict.open_model(tmp_path / name)
    assert "\n" not in str(pytest.raises(TfcnnError, predict.open_model, tmp_path / name).value)


@pytest.mark.parametrize("load, expected", [(0.3, "cores"), (3.9, 1), (None, "cores")])
def test_onnx_and_tflite_use_every_core_unless_the_load_fills_them(load, expected, monkeypatch):
    from tfcnn import hardware

    monkeypatch.setattr(hardware, "load_average", lambda: None if load is None else [load, load, load])
    monkeypatch.setattr(predict.os, "cpu_count", lambda: 2)
    assert predict.runtime_threads() == (2 if expected == "cores" else expected)


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_onnx_and_tflite_sessions_open_with_the_chosen_threads(kind, mnist_models, monkeypatch):
    from tfcnn import hardware

    monkeypatch.setattr(predict.os, "cpu_count", lambda: 2)
    for load, threads in ((0.3, 2), (3.9, 1)):
        monkeypatch.setattr(hardware, "load_average", lambda load=load: [load, load, load])
        model = predict.open_model(mnist_models[kind])
        assert model.threads == threads
        assert model.probs(np.zeros((2, 28, 28, 1), np.uint8)).shape == (2, 10)
