"""tfcnn.evaluate: metrics of a saved model, re-computed from the CLI, match the trainer's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tfcnn import config, train
from tfcnn.evaluate import compute_metrics

REPO = Path(__file__).resolve().parents[1]


def test_compute_metrics_against_hand_counts():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.1 / 3
    metrics, report = compute_metrics(y, probs, ["a", "b", "c"])
    assert metrics["accuracy"] == 4 / 6
    # precision a=1/2, b=2/3, c=1; recall a=1/2, b=1, c=1/2
    assert np.isclose(metrics["precision_macro"], (1 / 2 + 2 / 3 + 1) / 3)
    assert np.isclose(metrics["recall_macro"], (1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["per_class"]["b"]["recall"] == 1.0 and "macro avg" in report


def test_evaluate_cli_reproduces_the_run_metrics(tmp_path, shared_data):
    metrics = train.train_and_evaluate(config.make_config(dict(
        arch="lenet5", dataset="mnist", data_dir=str(shared_data), limit_train="1024", limit_test="400", epochs="1",
        verbose="0", tensorboard="false", runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"),
        name="small")))
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "tfcnn.evaluate", "--model", str(tmp_path / "saved" / "small"), "--dataset", "mnist",
         "--data-dir", str(shared_data), "--limit-test", "400", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    again = json.loads((out / "metrics.json").read_text())["test"]
    assert again["accuracy"] == metrics["test"]["accuracy"]
    assert np.isclose(again["f1_macro"], metrics["test"]["f1_macro"])
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "classification_report.txt").exists()

    wrong = subprocess.run(
        [sys.executable, "-m", "tfcnn.evaluate", "--model", str(tmp_path / "saved" / "small"), "--dataset",
         "cifar10", "--data-dir", str(shared_data)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr and "images" in wrong.stderr
    missing = subprocess.run([sys.executable, "-m", "tfcnn.evaluate", "--model", str(tmp_path / "nope"),
                              "--dataset", "mnist"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_a_class_subset_keeps_its_original_ids_in_metrics_report_and_export(tmp_path, shared_data):
    """cifar100:0,55,58 trains a 3-class model whose outputs say apple (0), otter (55), pickup_truck (58)."""
    metrics = train.train_and_evaluate(config.make_config(dict(
        arch="cifar_cnn", data_dir=str(shared_data), limit_train="256", epochs="1", verbose="0",
        tensorboard="false", runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"), name="sub")))
    assert metrics["dataset"] == "cifar100"  # the lecture's default: CIFAR-100 classes 0, 55, 58
    test = metrics["test"]
    assert test["class_ids"] == [0, 55, 58] and test["num_examples"] == 300
    assert {name: c["id"] for name, c in test["per_class"].items()} == {"apple": 0, "otter": 55, "pickup_truck": 58}
    report = (tmp_path / "runs" / "sub" / "classification_report.txt").read_text()
    assert "apple (0)" in report and "pickup_truck (58)" in report
    meta = json.loads((tmp_path / "saved" / "sub" / "assets" / "tfcnn.json").read_text())
    assert meta["class_names"] == ["apple", "otter", "pickup_truck"] and meta["class_ids"] == [0, 55, 58]


def test_flip_tta_averages_each_image_with_its_mirror_image():
    import keras

    from tfcnn.evaluate import predict_proba

    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4, 5, 3)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.set_weights([0.003 * rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    images = rng.integers(0, 256, size=(6, 4, 5, 3)).astype("uint8")
    single = predict_proba(model, images)
    mirrored = model.predict(images[:, :, ::-1].astype("float32"), verbose=0)  # left-right: the width axis
    np.testing.assert_allclose(predict_proba(model, images, tta="flip"), (single + mirrored) / 2, rtol=1e-6)
    assert not np.allclose(single, mirrored, atol=1e-3)  # the model is not symmetric: the test can fail


def test_evaluate_cli_flip_tta_on_the_shipped_resnet_and_not_on_digits(tmp_path, shared_data):
    def evaluate(*args):
        return subprocess.run([sys.executable, "-m", "tfcnn.evaluate", "--data-dir", str(shared_data), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})

    result = evaluate("--model", "pretrained:resnet32-cifar10", "--dataset", "cifar10", "--limit-test", "200",
                      "--tta", "flip", "--out", str(tmp_path / "tta"))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and metrics["test"]["num_examples"] == 200
    assert metrics["test"]["accuracy"] > 0.85 and "(flip TTA: 2 views)" in result.stdout
    digits = evaluate("--model", "pretrained:lenet5-mnist", "--dataset", "mnist", "--tta", "flip", "--out",
                      str(tmp_path / "digits"))
    assert digits.returncode == 2 and "Traceback" not in digits.stderr
    assert len(digits.stderr.strip().splitlines()) == 1 and "--tta flip is for colour images" in digits.stderr
    assert not (tmp_path / "digits").exists()
