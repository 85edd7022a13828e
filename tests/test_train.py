"""The trainer end to end on small slices of the real datasets."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = ["config.json", "history.csv", "metrics.json", "classification_report.txt",
             "confusion_matrix.png", "curves.png", "model.keras", "best.weights.h5"]


def _cli(args, cwd, env_extra=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tfcnn.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _quick(tmp_path, shared_data, *extra):
    return ["--data-dir", str(shared_data), "--runs-dir", str(tmp_path / "runs"),
            "--saved-models-dir", str(tmp_path / "saved_models"), "--verbose", "0", *extra]


def test_one_epoch_resnet_writes_every_artefact(tmp_path, shared_data):
    result = _cli(_quick(tmp_path, shared_data, "--arch", "resnet", "--stack-n", "1", "--limit-train", "512",
                         "--limit-test", "256", "--epochs", "1", "--name", "r1"), REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "r1"
    for name in ARTEFACTS:
        assert (run / name).is_file(), name
    assert list((run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["num_examples"] == 256
    for key in ("accuracy", "loss", "precision_macro", "recall_macro", "f1_macro"):
        assert 0 <= test[key] and np.isfinite(test[key])
    assert metrics["train_images_per_s"] > 0 and metrics["epochs"] == 1
    config = json.loads((run / "config.json").read_text())
    assert config["optimizer"] == "sgd" and config["milestones"] == [81, 122] and config["stack_n"] == 1
    saved = tmp_path / "saved_models" / "r1"
    assert (saved / "saved_model.pb").is_file() and (saved / "model.keras").is_file()
    meta = json.loads((saved / "tfcnn.json").read_text())
    assert meta["class_names"][0] == "airplane" and meta["input_shape"] == [32, 32, 3]
    assert "done: r1 test accuracy" in result.stdout


@pytest.mark.parametrize("args, phrase", [
    (["--arch", "vgg"], "unknown --arch"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--dataset", "nosuchset"], "nosuchset"),
    (["--arch", "resnet", "--stack-n", "0"], "--stack-n must be at least 1"),
    (["--epochs", "many"], "not a valid int"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, shared_data, args, phrase):
    result = _cli(_quick(tmp_path, shared_data, *args), REPO, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_dir_is_one_line(tmp_path):
    result = _cli(["--data-dir", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path)], REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_runs_on_one_name_one_trains_the_other_exits_2_naming_it(tmp_path, shared_data):
    """Started together: whichever takes runs/dup's lock first trains; the other stops with one line naming it."""
    args = [sys.executable, "-m", "tfcnn.train", *_quick(tmp_path, shared_data, "--arch", "lenet5", "--epochs", "2",
                                                         "--limit-train", "512", "--limit-test", "200",
                                                         "--name", "dup")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 2], [err[-2000:] for _, err in outputs]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    lines = outputs[loser][1].strip().splitlines()
    run = tmp_path / "runs" / "dup"
    assert len(lines) == 1 and lines[0].startswith(
        f"error: run folder {run} is in use by pid {procs[winner].pid} on host {socket.gethostname()} (since "), lines
    assert lines[0].endswith("); wait for it to finish or choose another --name")
    assert "run dup:" not in outputs[loser][0] and "done: dup" in outputs[winner][0]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert not (tmp_path / "runs" / ".dup.lock").exists()  # released by the winner on its way out


def test_same_seed_same_metrics_and_nan_stops_cleanly(tmp_path, shared_data):
    from tfcnn import config, train
    from tfcnn.errors import TfcnnError

    base = dict(arch="lenet5", dataset="mnist", data_dir=str(shared_data), limit_train="512", limit_test="300",
                epochs="1", batch_size="64", verbose="0", tensorboard="false", deterministic="true",
                runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"))
    first = train.train_and_evaluate(config.make_config({**base, "name": "a"}))
    second = train.train_and_evaluate(config.make_config({**base, "name": "b"}))
    assert first["test"]["accuracy"] == second["test"]["accuracy"]
    assert first["test"]["loss"] == pytest.approx(second["test"]["loss"], rel=1e-6)

    with pytest.raises(TfcnnError, match="NaN/inf in epoch 2, batch 3; stopped .the best checkpoint") as err:
        train.train_and_evaluate(config.make_config({**base, "name": "nan", "epochs": "3"}),
                                 callbacks=[_poison(after_batch=2)])
    best = tmp_path / "runs" / "nan" / "best.weights.h5"
    assert best.is_file() and str(best) in str(err.value)
    assert not (tmp_path / "runs" / "nan" / "metrics.json").exists()


def test_class_weighted_sam_with_label_smoothing_trains_on_the_imbalanced_reptiles(tmp_path, shared_data):
    from tfcnn import config, data, train

    settings = dict(arch="cifar_cnn", dataset="cifar10_reptiles", data_dir=str(shared_data), limit_train="1500",
                    limit_test="300", epochs="1", batch_size="64", optimizer="sam", lr="0.05",
                    label_smoothing="0.1", class_weight="balanced", verbose="0", tensorboard="false",
                    runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"), name="cw")
    metrics = train.train_and_evaluate(config.make_config(settings))
    assert np.isfinite(metrics["test"]["loss"]) and metrics["epochs"] == 1
    saved = json.loads((tmp_path / "runs" / "cw" / "config.json").read_text())
    assert saved["class_weight"] == "balanced"
    # The weights come from the run's own train split: reptiles (labels 10-14) weigh ~10x a CIFAR-10 class.
    ds = data.load("cifar10_reptiles", str(shared_data))
    weights = data.class_weights(ds.y_train, ds.num_classes, "balanced")
    assert weights[10:].min() / weights[:10].max() == pytest.approx(10, rel=0.01)


@pytest.mark.parametrize("steps_per_execution", ["1", "4"])
def test_checkpoint_last_trains_on_every_image_and_keeps_the_last_epochs_weights(tmp_path, shared_data,
                                                                                  steps_per_execution):
    """--val-fraction 0 --checkpoint last (He et al.'s final runs): no validation, and what is tested and exported
    is the network as the last epoch left it."""
    import keras

    from tfcnn import config, train

    class LastWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.weights = [w.numpy().copy() for w in self.model.weights]

    last = LastWeights()
    settings = dict(arch="lenet5", dataset="mnist", data_dir=str(shared_data), limit_train="512", limit_test="200",
                    epochs="2", batch_size="64", val_fraction="0", checkpoint="last", verbose="0",
                    tensorboard="false", steps_per_execution=steps_per_execution,
                    runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved"), name="last")
    metrics = train.train_and_evaluate(config.make_config(settings), callbacks=[last])
    assert metrics["checkpoint"] == "last" and metrics["checkpoint_epoch"] == 2 and metrics["epochs"] == 2
    assert metrics["best_val_accuracy"] is None and metrics["final_val_accuracy"] is None
    run = tmp_path / "runs" / "last"
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_" not in history[0], history
    kept = keras.saving.load_model(run / "model.keras")
    assert len(kept.weights) == len(last.weights)
    for saved, trained in zip(kept.weights, last.weights):
        np.testing.assert_array_equal(saved.numpy(), trained)


def _mirrored_lenet5(tmp_path, shared_data, name, *extra, limit_train=512, limit_test=200):
    """LeNet-5 on MNIST, batch 32 on each of 2 logical CPUs: (the CLI's result, the run's metrics)."""
    result = _cli(_quick(tmp_path, shared_data, "--arch", "lenet5", "--limit-train", str(limit_train),
                         "--limit-test", str(limit_test),
                         "--batch-size", "32", "--strategy", "mirrored", "--cpu-devices", "2", "--name", name,
                         *extra), REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((tmp_path / "runs" / name / "metrics.json").read_text())


def test_checkpoint_last_without_validation_under_a_mirrored_strategy(tmp_path, shared_data):
    result, metrics = _mirrored_lenet5(tmp_path, shared_data, "m0", "--epochs", "2", "--val-fraction", "0",
                                       "--checkpoint", "last")
    assert "(512 train / 0 val / 200 test), 2 replica(s)" in result.stdout
    assert "last epoch's weights (2)" in result.stdout
    assert metrics["replicas"] == 2 and metrics["checkpoint_epoch"] == 2 and np.isfinite(metrics["test"]["loss"])


def _poison(after_batch):
    """A callback that turns a weight into NaN in the second epoch, as a diverging run would."""
    import keras

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == after_batch:
                kernel = self.model.get_layer("predictions").kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    return Poison()


def test_with_steps_per_execution_a_nan_names_the_batches_of_its_call(tmp_path, shared_data):
    """8 batches an epoch in calls of 3: callbacks see batches 2, 5 and 7 end (Keras says 8 for the short last call).
    Poisoned after epoch 2's second call, the loss is NaN in its last, batches 6-7."""
    from tfcnn import config, train
    from tfcnn.errors import TfcnnError

    settings = config.make_config(dict(
        arch="lenet5", dataset="mnist", data_dir=str(shared_data), limit_train="512", limit_test="300", epochs="2",
        batch_size="64", verbose="0", tensorboard="false", steps_per_execution="3", name="nan3",
        runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved")))
    with pytest.raises(TfcnnError, match="NaN/inf in epoch 2, batches 6-7; stopped .the best checkpoint"):
        train.train_and_evaluate(settings, callbacks=[_poison(after_batch=5)])


def test_mirrored_strategy_on_two_logical_cpus_with_bfloat16(tmp_path, shared_data):
    result, metrics = _mirrored_lenet5(tmp_path, shared_data, "m2", "--epochs", "1", "--mixed-precision", "bfloat16",
                                       "--steps-per-execution", "4")
    assert "2 replica(s), global batch 64, bfloat16" in result.stdout
    assert ("steps_per_execution 4 ignored: under a mirrored strategy the epochs run in tfcnn.distributed.EpochLoop, "
            "one batch per call") in result.stdout
    assert metrics["replicas"] == 2 and metrics["precision_policy"] == "bfloat16"
    assert metrics["test"]["num_examples"] == 200 and np.isfinite(metrics["test"]["loss"])


@pytest.mark.parametrize("native_bf16, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_precision_is_bfloat16_only_on_cpus_that_compute_it(monkeypatch, native_bf16, expected):
    """--mixed-precision auto (the default): oneDNN's bfloat16 pass on CPUs with native bfloat16, float32
    elsewhere; the Keras model itself stays float32 either way (its exports carry no bfloat16 ops)."""
    import keras
    import tensorflow as tf

    from tfcnn import compat, config as config_lib, train

    monkeypatch.setattr(train, "_cpu_has_bf16", lambda: native_bf16)
    monkeypatch.setattr(compat, "onednn_enabled", lambda: True)
    try:
        _, precision = train.configure_runtime(config_lib.make_config({"arch": "lenet5"}))
        assert precision == expected
        assert tf.config.optimizer.get_experimental_options().get(
            "auto_mixed_precision_onednn_bfloat16", False) is native_bf16
        assert keras.mixed_precision.global_policy().name == "float32"
        train._set_onednn_bfloat16(False)
        assert not tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16", False)
    finally:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": False})
        keras.mixed_precision.set_global_policy("float32")


def test_output_to_a_file_is_one_line_per_epoch(tmp_path, shared_data):
    """`make demo > log`: no progress bar redrawn with carriage returns or colour codes in the file."""
    log = tmp_path / "log"
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "tfcnn.train", "--arch", "lenet5", "--data-dir", str(shared_data),
                               "--epochs", "2", "--limit-train", "1024", "--limit-test", "200", "--name", "quiet",
                               "--runs-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "saved")],
                              stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=300,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "\r" not in text and "\x1b[" not in text
    assert len([line for line in text.splitlines() if "val_accuracy" in line]) == 2


def test_the_progress_bar_ends_an_epochs_short_last_call_at_the_epochs_last_batch():
    """422 batches in calls of 64: Keras says the last call (batches 384-421) ends at batch 447."""
    from tfcnn.callbacks import CallProgbar

    bar = CallProgbar()
    bar.set_params({"verbose": 0, "epochs": 1, "steps": 422})
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(383)
    assert bar.seen == 384
    bar.on_train_batch_end(447)
    assert bar.seen == 422


def test_ema_under_a_mirrored_strategy_validates_and_keeps_the_average(tmp_path, shared_data):
    """tfcnn.distributed.EpochLoop calls the --ema swap too: validation differs from the same run without the
    average, and the kept network (the last epoch's average) reproduces the validation accuracy it logged."""
    import pandas as pd

    from tfcnn import data, pipelines
    from tfcnn.models import load_model

    def run(name, *extra):
        _mirrored_lenet5(tmp_path, shared_data, name, "--val-fraction", "0.5", "--epochs", "2", "--mixed-precision",
                         "float32", "--checkpoint", "last", *extra, limit_train=1024, limit_test=100)
        return pd.read_csv(tmp_path / "runs" / name / "history.csv").iloc[-1]

    raw, average = run("raw"), run("avg", "--ema", "0.5")
    assert average["accuracy"] == raw["accuracy"]  # the average does not change training
    assert average["val_loss"] != raw["val_loss"]
    pipes = pipelines.make_pipelines(data.load("mnist", str(shared_data)), batch_size=32, val_fraction=0.5,
                                     limit_train=1024, augment=False)
    kept = load_model(str(tmp_path / "runs" / "avg" / "model.keras"))
    predicted = kept.predict(pipes.x_val.astype("float32"), verbose=0).argmax(1)
    assert (predicted == pipes.y_val).mean() == pytest.approx(average["val_accuracy"], abs=1e-6)
