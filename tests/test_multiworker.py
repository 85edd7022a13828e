"""Multi-worker training with real worker processes on 127.0.0.1: tfcnn.launch, the chief's artefacts,
equivalence with one process, a killed worker, and peers that cannot be reached."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tfcnn import launch

REPO = Path(__file__).resolve().parents[1]
PEER_TIMEOUT = "10"  # seconds; also how soon a survivor notices a killed peer
# LeNet-5 on a 2048-image MNIST slice, 2 epochs of 16 global batches of 128, float32.
COMMON = ["--arch", "lenet5", "--dataset", "mnist", "--epochs", "2", "--limit-train", "2048", "--limit-test", "1000",
          "--mixed-precision", "float32", "--seed", "3", "--verbose", "0", "--no-tensorboard",
          "--peer-timeout", PEER_TIMEOUT]
# Measured on this data (tests/test_multiworker.py's runs): 2 workers x 64 and 1 process x 128 agree to the
# last test image and to ~1e-7 in every loss; the bounds leave room for other CPUs' summation orders.
ACCURACY_TOLERANCE = 0.002  # 2 of 1000 test images
LOSS_TOLERANCE = 1e-4  # relative


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _dirs(tmp_path, data):
    return ["--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
            "--saved-models-dir", str(tmp_path / "saved_models")]


def _workers(args, addresses):
    """Start one tfcnn.train process per address (worker i at addresses[i])."""
    return [subprocess.Popen([sys.executable, "-m", "tfcnn.train", *args, "--strategy", "multiworker"], cwd=REPO,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**_env(), "TF_CONFIG": launch.tf_config(addresses, i)})
            for i in range(len(addresses))]


def _fingerprints(text):
    return dict(re.findall(r"(worker \d): final weights sha256 (\w+)", text))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    """One uninterrupted 2-worker run through tfcnn.launch (2 x batch 64) and one process (batch 128)."""
    tmp = tmp_path_factory.mktemp("mw")
    two = subprocess.run([sys.executable, "-m", "tfcnn.launch", "--workers", "2", "--",
                          *COMMON, *_dirs(tmp, shared_data), "--batch-size", "64", "--name", "two"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    one = subprocess.run([sys.executable, "-m", "tfcnn.train", *COMMON, *_dirs(tmp, shared_data),
                          "--batch-size", "128", "--name", "one"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    return tmp, two, one


def test_launch_runs_two_workers_and_only_the_chief_writes(runs):
    tmp, two, _ = runs
    assert two.returncode == 0, two.stderr[-3000:]
    lines = two.stdout.splitlines()
    assert any(line.startswith("[worker 0] run two: lenet5") and "2 replica(s), global batch 128, float32" in line
               for line in lines), two.stdout
    assert any(line.startswith("[worker 1] worker 1: training two with the chief") for line in lines)
    assert any(line.startswith("[worker 0] done: two test accuracy") for line in lines)
    metrics = json.loads((tmp / "runs" / "two" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["epochs"] == 2 and metrics["test"]["num_examples"] == 1000
    # Worker 1's files went to a scratch folder that is gone; the chief's run has every artefact.
    assert sorted(p.name for p in (tmp / "saved_models").iterdir()) == ["one", "two"]
    run = tmp / "runs" / "two"
    for name in ("config.json", "history.csv", "best.weights.h5", "classification_report.txt", "confusion_matrix.png",
                 "curves.png", "model.keras"):
        assert (run / name).is_file(), name
    # The epoch checkpoint counts global steps (the learning-rate schedule's clock): 2 epochs x 16 batches of 128.
    import tensorflow as tf

    checkpoint = tf.train.load_checkpoint(str(run / "backup_train"))
    assert checkpoint.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert checkpoint.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 2 * 16
    assert (tmp / "saved_models" / "two" / "saved_model.pb").is_file()


def test_two_workers_hold_bit_identical_weights_and_match_one_process(runs):
    tmp, two, one = runs
    assert two.returncode == 0 and one.returncode == 0, one.stderr[-3000:]
    prints = _fingerprints(two.stdout)
    assert sorted(prints) == ["worker 0", "worker 1"] and prints["worker 0"] == prints["worker 1"]

    a = json.loads((tmp / "runs" / "two" / "metrics.json").read_text())
    b = json.loads((tmp / "runs" / "one" / "metrics.json").read_text())
    assert (a["replicas"], b["replicas"]) == (2, 1)
    assert a["test"]["accuracy"] == pytest.approx(b["test"]["accuracy"], abs=ACCURACY_TOLERANCE)
    assert a["test"]["loss"] == pytest.approx(b["test"]["loss"], rel=LOSS_TOLERANCE)
    header = (tmp / "runs" / "two" / "history.csv").read_text().splitlines()[0]
    assert header == (tmp / "runs" / "one" / "history.csv").read_text().splitlines()[0]
    for row_a, row_b in zip(*(((tmp / "runs" / name / "history.csv").read_text().splitlines()[1:])
                              for name in ("two", "one"))):
        for key, x, y in zip(header.split(","), row_a.split(","), row_b.split(",")):
            if key != "epoch_time_s":
                assert float(x) == pytest.approx(float(y), rel=LOSS_TOLERANCE), key


def test_killed_worker_restarted_with_the_same_command_resumes_to_the_same_result(runs, shared_data):
    tmp, two, _ = runs
    args = [*COMMON, *_dirs(tmp, shared_data), "--batch-size", "64", "--name", "killed"]
    addresses = [f"{launch.HOST}:{port}" for port in launch.free_ports(2)]
    workers = _workers(args, addresses)
    checkpoint = tmp / "runs" / "killed" / "backup_train" / "checkpoint"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and time.monotonic() < deadline and workers[0].poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), workers[0].communicate()[1][-3000:]
    workers[1].send_signal(signal.SIGKILL)  # in epoch 2: epoch 1 is checkpointed, the run is not finished
    start = time.monotonic()
    out, err = workers[0].communicate(timeout=120)
    waited = time.monotonic() - start
    workers[1].wait()
    assert not (tmp / "runs" / "killed" / "metrics.json").exists()
    # The survivor notices within the peer timeout and says, in one line, what to do.
    assert workers[0].returncode == 2, err[-3000:]
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: lost contact with worker 1"), err
    assert "restart every worker with the same command" in err and waited < 3 * float(PEER_TIMEOUT), waited

    restarted = _workers(args, addresses)
    outs = [proc.communicate(timeout=300) for proc in restarted]
    for proc, (_, err) in zip(restarted, outs):
        assert proc.returncode == 0, err[-3000:]
    assert "resuming train of killed after epoch 1/2" in outs[0][0]
    a = json.loads((tmp / "runs" / "killed" / "metrics.json").read_text())
    b = json.loads((tmp / "runs" / "two" / "metrics.json").read_text())
    assert a["epochs"] == b["epochs"] == 2
    assert a["test"]["accuracy"] == b["test"]["accuracy"]
    assert a["test"]["loss"] == pytest.approx(b["test"]["loss"], rel=1e-6)
    # Bit-identical weights on both restarted workers, and equal to the uninterrupted run's.
    resumed = _fingerprints(outs[0][0] + outs[1][0])
    assert resumed["worker 0"] == resumed["worker 1"] == _fingerprints(two.stdout)["worker 0"]


def test_two_replicas_train_sam_label_smoothing_and_a_frozen_body_as_one_process(runs, shared_data):
    """The same epoch loop under MirroredStrategy on 2 logical CPUs: SAM's climb uses the whole batch's
    gradient, label smoothing and a frozen transferred body behave as in model.fit."""
    import keras

    tmp = runs[0]
    base = tmp / "saved_models" / "one"
    args = [*_dirs(tmp, shared_data), "--arch", "lenet5", "--epochs", "1", "--limit-train", "1024",
            "--limit-test", "500", "--mixed-precision", "float32", "--optimizer", "sam", "--lr", "0.05",
            "--label-smoothing", "0.1", "--init-from", str(base), "--freeze", "all", "--verbose", "0",
            "--no-tensorboard"]
    two = subprocess.run([sys.executable, "-m", "tfcnn.train", *args, "--strategy", "mirrored", "--cpu-devices", "2",
                          "--batch-size", "32", "--name", "sam-two"], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=300)
    one = subprocess.run([sys.executable, "-m", "tfcnn.train", *args, "--batch-size", "64", "--name", "sam-one"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    a = json.loads((tmp / "runs" / "sam-two" / "metrics.json").read_text())
    b = json.loads((tmp / "runs" / "sam-one" / "metrics.json").read_text())
    assert (a["replicas"], b["replicas"]) == (2, 1) and a["frozen_layers"] == b["frozen_layers"] != []
    assert a["test"]["accuracy"] == pytest.approx(b["test"]["accuracy"], abs=ACCURACY_TOLERANCE)
    assert a["test"]["loss"] == pytest.approx(b["test"]["loss"], rel=LOSS_TOLERANCE)
    assert a["final_val_accuracy"] == pytest.approx(b["final_val_accuracy"], abs=ACCURACY_TOLERANCE)
    before = keras.saving.load_model(base / "model.keras", compile=False)
    after = keras.saving.load_model(tmp / "runs" / "sam-two" / "model.keras", compile=False)
    for name in a["frozen_layers"]:
        for w0, w1 in zip(before.get_layer(name).get_weights(), after.get_layer(name).get_weights()):
            np.testing.assert_array_equal(w0, w1)
    assert not np.array_equal(before.get_layer("predictions").get_weights()[0],
                              after.get_layer("predictions").get_weights()[0])


BATCHNORM_REPLICAS = """
import json, sys
import keras, numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from tfcnn import data, distributed, models, pipelines
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
pipes = pipelines.make_pipelines(data.load("mnist", sys.argv[1]), batch_size=64, limit_train=512, val_fraction=0.01)
with strategy.scope():
    model = models.build("resnet", pipes.image_shape, 10, stack_n=1, normalization=(pipes.mean, pipes.std))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
loop = distributed.EpochLoop(model, strategy, sys.argv[2], pipes.val.element_spec)
loop.restore(chief=True)
loop.fit(pipelines.train_epochs(pipes, epochs=1), pipes.val, epochs=1, initial_epoch=0, steps=8,
         callbacks=keras.callbacks.CallbackList([], model=model))
bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
copies = [[c.numpy() for c in var.value.values] for layer in bn for var in (layer.moving_mean, layer.moving_variance)]
print(json.dumps({"layers": len(bn), "identical": all(np.array_equal(a, b) for a, b in copies),
                  "moved": all(not np.allclose(a, 0) for a, _ in copies[::2])}))
"""


def test_batchnorm_statistics_agree_across_replicas(tmp_path, shared_data):
    """Keras 3 updates each replica's BatchNorm moving statistics from its own slice; the loop averages them."""
    result = subprocess.run([sys.executable, "-c", BATCHNORM_REPLICAS, str(shared_data), str(tmp_path / "ckpt")],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"layers": report["layers"], "identical": True, "moved": True} and report["layers"] >= 5


def test_nan_stops_the_distributed_loop_with_the_best_checkpoint_kept(tmp_path, shared_data):
    """In-process MirroredStrategy (one device here): the loop stops at the first NaN loss like model.fit."""
    import keras

    from tfcnn import config, train
    from tfcnn.errors import TfcnnError

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                kernel = self.model.get_layer("predictions").kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    cfg = config.make_config(dict(arch="lenet5", dataset="mnist", data_dir=str(shared_data), limit_train="512",
                                  limit_test="300", epochs="3", batch_size="64", verbose="0", tensorboard="false",
                                  strategy="mirrored", mixed_precision="float32", name="nan",
                                  runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved")))
    with pytest.raises(TfcnnError, match="NaN/inf in epoch 2, batch 3; stopped .the best checkpoint"):
        train.train_and_evaluate(cfg, callbacks=[Poison()])
    run = tmp_path / "runs" / "nan"
    assert (run / "best.weights.h5").is_file() and not (run / "metrics.json").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + epoch 1


@pytest.mark.parametrize("index", [0, 1])
def test_a_worker_whose_peer_never_starts_stops_with_one_line(tmp_path, shared_data, index):
    addresses = [f"{launch.HOST}:{port}" for port in launch.free_ports(2)]
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tfcnn.train", *_dirs(tmp_path, shared_data), "--arch", "lenet5",
                             "--strategy", "multiworker", "--peer-timeout", "3", "--name", "alone"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**_env(), "TF_CONFIG": launch.tf_config(addresses, index)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: worker {index} ({addresses[index]}) could not reach its peers "
                                    f"({addresses[1 - index]}) within 3 s"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("tf_config, phrase", [
    (None, "--strategy multiworker needs TF_CONFIG"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "does not name this worker"),
])
def test_missing_or_wrong_tf_config_is_one_line(tmp_path, tf_config, phrase):
    env = {k: v for k, v in _env().items() if k != "TF_CONFIG"}
    if tf_config:
        env["TF_CONFIG"] = tf_config
    result = subprocess.run([sys.executable, "-m", "tfcnn.train", "--strategy", "multiworker", "--runs-dir",
                             str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and phrase in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_launch_stops_every_worker_when_one_fails(tmp_path):
    # Bad flags make both workers fail at once; the launcher reports it and exits with their status.
    result = subprocess.run([sys.executable, "-m", "tfcnn.launch", "--workers", "2", "--", "--epochs", "many",
                             "--runs-dir", str(tmp_path)], cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert re.search(r"^\[worker \d\] error: --epochs got 'many'", result.stderr, re.M), result.stderr
    assert re.search(r"^launch: worker \d exited with status 2; stopping the others$", result.stderr, re.M)


def test_launch_keeps_the_strategy_to_itself():
    assert launch.worker_args(["--arch", "lenet5"]) == ["--arch", "lenet5", "--strategy", "multiworker"]
    assert launch.worker_args(["--strategy=multiworker"]) == ["--strategy=multiworker"]
    with pytest.raises(launch.TfcnnError, match="drop --strategy"):
        launch.worker_args(["--strategy", "mirrored"])
    ports = launch.free_ports(3)
    assert len(set(ports)) == 3
    assert json.loads(launch.tf_config(["a:1", "b:2"], 1)) == {"cluster": {"worker": ["a:1", "b:2"]},
                                                               "task": {"type": "worker", "index": 1}}
