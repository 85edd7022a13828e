"""Untrusted model files: loading one never runs code from it, and metadata that lies about the graph is refused.

The payload is a Lambda layer whose Python function creates a canary file: Keras runs it as soon as the model is
rebuilt, so the canary shows whether the file's code ran.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.backend.common import global_state  # Keras' safe-mode switch, restored after the test
from PIL import Image

from tfcnn import export, models, predict
from tfcnn.errors import TfcnnError

REPO = Path(__file__).resolve().parents[1]
SHAPE = (28, 28, 1)


def _digit(path):
    Image.fromarray(np.full((28, 28), 128, np.uint8), mode="L").save(path)
    return path


def _plain(classes=10):
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="probs")(x))


@pytest.fixture()
def carrying_code(tmp_path):
    """(a .keras file whose Lambda layer creates `canary` when it runs, canary)."""
    canary = tmp_path / "canary"
    target = str(canary)  # in the lambda's closure, which Keras saves with its code
    inputs = keras.Input(SHAPE)
    x = keras.layers.Lambda(lambda t: (open(target, "w").close(), t)[1], name="payload")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    path = tmp_path / "that.keras"
    model.save(path)
    canary.unlink()  # building the model ran the payload once
    return path, canary


def _cli(module, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_lambda_layer_is_refused_and_its_code_never_runs(carrying_code):
    path, canary = carrying_code
    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()  # even a process that switched safe mode off keeps it on
    try:
        with pytest.raises(TfcnnError, match=r"^\S+that\.keras carries Python code \(a Lambda layer\), which tfcnn "
                                             r"never runs from a model file; rebuild the model without Lambda layers$"):
            models.load_model(path)
        with pytest.raises(TfcnnError, match="carries Python code"):
            predict.open_model(path)
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)
    assert not canary.exists()
    keras.models.load_model(path, safe_mode=False)  # what tfcnn refuses to do: the file's code runs
    assert canary.exists()


def test_the_predict_cli_refuses_a_lambda_layer_with_one_line(carrying_code, tmp_path):
    path, canary = carrying_code
    result = _cli("tfcnn.predict", "--model", path, _digit(tmp_path / "digit.png"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "carries Python code (a Lambda layer)" in result.stderr, result.stderr
    assert not canary.exists() and not result.stdout


@pytest.mark.parametrize("lie, phrase", [
    ({"class_names": ["cat", "dog", "bird"]}, "its metadata names 3 classes but the model outputs 10"),
    ({"input_shape": [32, 32, 3]}, "its metadata says it takes [32, 32, 3] images but the model takes [28, 28, 1]"),
    # Malformed metadata is refused where it is read (tfcnn.meta), before it is compared with the graph.
    ({"input_shape": "28x28"}, "model metadata must give input_shape as [height, width, channels]"),
    ({"class_names": "0123456789"}, "model metadata must give class_names as a list of strings"),
])
def test_metadata_that_disagrees_with_the_graph_is_refused(tmp_path, lie, phrase):
    path = tmp_path / "m.keras"
    _plain().save(path)
    honest = {"class_names": [str(i) for i in range(10)], "input_shape": list(SHAPE)}
    sidecar = path.with_name(path.name + ".json")  # X.json beside X, as tfcnn.export writes it
    sidecar.write_text(json.dumps(honest))
    assert models.load_model(path).output_shape == (None, 10)
    assert predict.open_model(path).class_names(10) == honest["class_names"]
    sidecar.write_text(json.dumps({**honest, **lie}))
    for load in (models.load_model, predict.open_model):
        with pytest.raises(TfcnnError) as err:
            load(path)
        message = str(err.value)
        assert message.startswith(str(path)) and phrase in message and "\n" not in message, message
        assert "re-export the model" in message, message


def test_a_saved_model_whose_metadata_lies_is_refused(tmp_path):
    folder = tmp_path / "saved"
    export.export_saved_model(_plain(), folder, {"class_names": [str(i) for i in range(10)],
                                                 "input_shape": list(SHAPE)})
    assert predict.open_model(folder, kind="savedmodel").input_shape == SHAPE
    for meta_file in (folder / "tfcnn.json", folder / "assets" / "tfcnn.json"):
        meta_file.write_text(json.dumps({"class_names": ["a", "b"], "input_shape": list(SHAPE)}))
    with pytest.raises(TfcnnError, match=r"its metadata names 2 classes but the model outputs 10"):
        predict.open_model(folder, kind="savedmodel")


def test_the_predict_cli_refuses_lying_metadata_with_one_line(tmp_path):
    path = tmp_path / "m.keras"
    _plain(3).save(path)
    path.with_name(path.name + ".json").write_text(json.dumps({"class_names": ["a", "b"]}))
    result = _cli("tfcnn.predict", "--model", path, _digit(tmp_path / "digit.png"))
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.count("\n") == 1 and "its metadata names 2 classes but the model outputs 3" in result.stderr
