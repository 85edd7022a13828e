"""The shipped models (saved_models/MANIFEST.json): checksums, `pretrained:NAME`, and their cards re-measured.

For every shipped model: load it through the manifest, re-run the ONNX parity check on 256 test images, and
evaluate it on the card's fixed subset of its test set, which must give exactly the recorded accuracy.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfcnn import data, export, pretrained, predict
from tfcnn.errors import TfcnnError

REPO = pretrained.SHIPPED_DIR.parent
SHIPPED = pretrained.manifest()["models"]
TOTAL_MB = 45  # issue 26: the budget for every shipped model together


def test_manifest_lists_the_lab_models_within_the_size_budget():
    assert {"lenet5-mnist", "resnet32-cifar10"} <= set(SHIPPED)
    total = sum((pretrained.SHIPPED_DIR / name / rel).stat().st_size for name, entry in SHIPPED.items()
                for rel in entry["files"])
    assert total < TOTAL_MB * 1e6
    for name, entry in SHIPPED.items():
        files = set(entry["files"])
        formats = {"saved_model.pb", "model.keras", "model.onnx", "tfcnn.json", "MODEL_CARD.md"}
        assert formats - {f"model.{f}" for f in entry.get("left_out", [])} <= files, name
        assert not {f"model.{f}" for f in entry.get("left_out", [])} & files, name
        # Every file in the folder is covered: nothing unchecked rides along.
        on_disk = {p.relative_to(pretrained.SHIPPED_DIR / name).as_posix()
                   for p in (pretrained.SHIPPED_DIR / name).rglob("*") if p.is_file()}
        assert on_disk == files, name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_matches_its_card(name, shared_data):
    entry = SHIPPED[name]
    folder = pretrained.verify(name)
    keras_model = predict.open_model(f"pretrained:{name}", kind="keras")
    ds = data.load(entry["dataset"], shared_data, download=False, classes=entry["classes"])
    assert ds.class_names == entry["class_names"]
    if "onnx" not in entry.get("left_out", []):
        onnx_model = predict.open_model(folder / "model.onnx")
        assert onnx_model.meta["class_names"] == entry["class_names"]
        parity = ds.x_test[export.check_indices(len(ds.x_test), export.MIN_CHECK_IMAGES)].astype(np.float32)
        check = export.compare(keras_model.probs(parity), onnx_model.probs(parity), export.TOLERANCE["onnx"])
        assert check["passed"], check

    subset = export.check_indices(len(ds.x_test), entry["subset"]["images"])
    assert entry["subset"]["indices"] == f"tfcnn.export.check_indices({len(ds.x_test)}, {entry['subset']['images']})"
    top1 = keras_model.probs(ds.x_test[subset].astype(np.float32)).argmax(1)
    assert int((top1 == ds.y_test[subset]).sum()) == entry["subset"]["correct"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"{entry['subset']['correct']} correct" in card and f"{entry['test']['accuracy']:.4f}" in card


def _copy_shipped(tmp_path, name):
    shutil.copytree(pretrained.SHIPPED_DIR / name, tmp_path / name)
    shutil.copy2(pretrained.SHIPPED_DIR / pretrained.MANIFEST_FILE, tmp_path / pretrained.MANIFEST_FILE)
    return tmp_path / name


def test_a_flipped_byte_is_one_line_naming_the_file(tmp_path, monkeypatch):
    folder = _copy_shipped(tmp_path, "lenet5-mnist")
    weights = next(p for p in sorted((folder / "variables").iterdir()) if p.name.startswith("variables.data"))
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    env = {**os.environ, "TFCNN_MODELS_DIR": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for module in ("tfcnn.evaluate", "tfcnn.predict"):
        args = ["--model", "pretrained:lenet5-mnist"] + (["--dataset", "mnist"] if module == "tfcnn.evaluate"
                                                         else [str(folder / "MODEL_CARD.md")])
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(weights) in lines[0] and "sha256" in lines[0], lines
    monkeypatch.setenv("TFCNN_MODELS_DIR", str(tmp_path))
    (folder / "model.keras").write_bytes((folder / "model.keras").read_bytes()[:1000])  # truncated
    with pytest.raises(TfcnnError, match=r"model.keras does not match its sha256"):
        pretrained.resolve("pretrained:lenet5-mnist")


def test_unknown_name_lists_the_shipped_ones_and_where_it_looked():
    with pytest.raises(TfcnnError, match=r"no shipped model 'nope'; shipped: .*lenet5-mnist") as error:
        pretrained.resolve("pretrained:nope")
    assert f"looked in {pretrained.SHIPPED_DIR / pretrained.MANIFEST_FILE}" in str(error.value)
    assert pretrained.resolve("saved_models/x") == "saved_models/x"  # plain paths pass through


def test_models_folder_comes_from_TFCNN_MODELS_DIR(tmp_path, monkeypatch):
    """An installed package has no saved_models/ beside it: the variable points it at one."""
    _copy_shipped(tmp_path, "lenet5-mnist")
    monkeypatch.setenv("TFCNN_MODELS_DIR", str(tmp_path))
    assert pretrained.resolve("pretrained:lenet5-mnist") == str(tmp_path / "lenet5-mnist")
    empty = tmp_path / "nothing-here"
    monkeypatch.setenv("TFCNN_MODELS_DIR", str(empty))
    with pytest.raises(TfcnnError) as error:
        pretrained.resolve("pretrained:lenet5-mnist")
    assert str(error.value) == (f"no shipped model 'lenet5-mnist'; shipped: none (looked in {empty / 'MANIFEST.json'}; "
                                "python -m tfcnn.models --pretrained lists them, TFCNN_MODELS_DIR sets the folder)")
    assert pretrained.listing() == [f"no shipped models ({empty / 'MANIFEST.json'} lists none; "
                                    "TFCNN_MODELS_DIR sets the folder)"]


def test_models_cli_lists_the_shipped_models():
    done = subprocess.run([sys.executable, "-m", "tfcnn.models", "--pretrained"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    for name, entry in SHIPPED.items():
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"pretrained:{name} "))
        assert f"test accuracy {entry['test']['accuracy']:.4f}" in line


def test_init_from_pretrained_fine_tunes_a_shipped_model(tmp_path, shared_data):
    from tfcnn import config, train

    metrics = train.train_and_evaluate(config.make_config(dict(
        arch="lenet5", dataset="mnist", data_dir=str(shared_data), init_from="pretrained:lenet5-mnist",
        freeze="all", epochs="1", limit_train="512", limit_test="500", verbose="0", tensorboard="false",
        runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"), name="ft")))
    from tfcnn.models import load_model

    shipped, tuned = load_model("pretrained:lenet5-mnist"), load_model(tmp_path / "runs" / "ft" / "model.keras")
    assert metrics["frozen_layers"] == ["conv1", "conv2", "fc1", "fc2"]
    for layer in metrics["frozen_layers"]:  # the shipped body, unchanged; only the new head trained
        for a, b in zip(shipped.get_layer(layer).get_weights(), tuned.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())["init_from"] == "pretrained:lenet5-mnist"


def test_evaluate_cli_reproduces_the_resnet32_card_in_a_fresh_process(shared_data, tmp_path):
    """A new process has imported nothing else: the custom FusedBatchNormalization layer must still load."""
    entry = SHIPPED["resnet32-cifar10"]
    done = subprocess.run([sys.executable, "-m", "tfcnn.evaluate", "--model", "pretrained:resnet32-cifar10",
                           "--dataset", "cifar10", "--data-dir", str(shared_data), "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    test = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert test["num_examples"] == 10000 and test["accuracy"] == entry["test"]["accuracy"]
