"""Multi-worker runs killed at every write of an epoch, on the chief and on a non-chief.

Two real workers on 127.0.0.1 train LeNet-5 (512 MNIST images, 3 epochs, --deterministic, float32). One of them
SIGKILLs itself at a named moment (TFCNN_FAULT in its environment only, tfcnn.runfiles.fault); the survivor
stops with one line once --peer-timeout passes, or finishes if the kill came after its last collective. Both
are then restarted with the same command, and the run must end bit-identical to an uninterrupted one: both
workers' final weights, the last checkpoint, metrics.json's test figures, history.csv (timings aside), the
same files, all whole, with no temporaries, locks or scratch folders left. The default suite kills the chief
inside its epoch-2 checkpoint save (files written, not yet recorded as the latest); `pytest --slow` every point
of POINTS.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
from test_faults import _history, assert_whole

from tfcnn import launch

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
PEER_TIMEOUT = 15  # seconds: how soon a survivor notices its peer is gone (6 s lost healthy peers under load)
# 512 training images in global batches of 2 x 32: 8 steps per epoch; 600 validation images.
ARGS = ["--arch", "lenet5", "--dataset", "mnist", "--limit-train", "512", "--limit-test", "256", "--val-fraction", "0.01",
        "--epochs", str(EPOCHS), "--batch-size", "32", "--seed", "0", "--deterministic", "--mixed-precision", "float32",
        "--verbose", "0", "--no-tensorboard", "--peer-timeout", str(PEER_TIMEOUT), "--strategy", "multiworker"]
CHIEF, WORKER = 0, 1  # task indexes: worker 0 is the chief

# (TFCNN_FAULT, the worker that dies, epochs the chief's checkpoint holds when the survivor stops, whether the survivor
# finishes the run). Per epoch both workers write best.weights.h5 (each epoch of this run improves), the history row,
# then the EpochLoop's checkpoint: "checkpoint" before manager.save, "checkpoint.written" once its files are written
# but not yet recorded as the latest, "checkpoint.saved" after. An epoch's last collective is its validation: a
# non-chief killed after it leaves the chief to write and checkpoint that epoch, and one killed after its last
# epoch's validation leaves the chief to finish the run alone (the final barrier is the one collective it misses).
# The non-chief writes to its scratch folder; the chief alone evaluates and writes the run.
POINTS = [
    ("lock", CHIEF, 0, False), ("write:config.json", CHIEF, 0, False), ("write:best.weights.h5:2", CHIEF, 1, False),
    ("history:2", CHIEF, 1, False), ("checkpoint:2", CHIEF, 1, False), ("checkpoint.written:2", CHIEF, 1, False),
    ("checkpoint.saved:2", CHIEF, 2, False), ("checkpoint.saved:3", CHIEF, 3, False),
    ("write:train.done", CHIEF, 3, False), ("evaluate", CHIEF, 3, False),
    ("write:metrics.json", CHIEF, 3, False),
    ("lock", WORKER, 0, False), ("write:best.weights.h5:2", WORKER, 2, False), ("history:2", WORKER, 2, False),
    ("checkpoint:2", WORKER, 2, False), ("checkpoint.written:2", WORKER, 2, False),
    ("checkpoint.saved:2", WORKER, 2, False), ("checkpoint.saved:3", WORKER, 3, True),
    ("write:train.done", WORKER, 3, True),
]
DEFAULT = ("checkpoint.written:2", CHIEF, 1, False)


def _ids(point):
    fault, who, _, _ = point
    return f"{'chief' if who == CHIEF else 'worker1'}-{fault}"


def _workers(root, data_dir, name, addresses, fault=None, who=None):
    """Run one tfcnn.train process per address until both end; TFCNN_FAULT=fault for worker `who` only.
    Returns their CompletedProcess."""
    args = [*ARGS, "--data-dir", str(data_dir), "--runs-dir", str(root / "runs"), "--saved-models-dir",
            str(root / "saved"), "--name", name]
    procs = []
    for index in range(len(addresses)):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFCNN_CACHE_DIR": str(root.parent / "cache"),
               "TF_CONFIG": launch.tf_config(addresses, index)}
        env.pop("TFCNN_FAULT", None)
        if fault and index == who:
            env["TFCNN_FAULT"] = fault
        procs.append(subprocess.Popen([sys.executable, "-m", "tfcnn.train", *args], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    ended = {}
    while len(ended) < len(procs):  # verbose 0: a few lines each, no pipe fills up
        ended.update({i: time.monotonic() for i, proc in enumerate(procs) if i not in ended and proc.poll() is not None})
        time.sleep(0.05)
    outs = [proc.communicate(timeout=600) for proc in procs]
    results = [subprocess.CompletedProcess(proc.args, proc.returncode, out, err) for proc, (out, err) in zip(procs, outs)]
    for result, index in zip(results, range(len(procs))):
        result.ended = ended[index]
    return results


def _fingerprints(*results):
    """{task index: final weights sha256} of every worker that printed it."""
    found = {}
    for result in results:
        for task, digest in re.findall(r"worker (\d): final weights sha256 (\w+)", result.stdout):
            assert found.setdefault(int(task), digest) == digest, (task, found)
    return found


def _scratch(result):
    """The scratch folder a non-chief worker announced."""
    match = re.search(r"its files go to scratch (\S+)", result.stdout)
    assert match, result.stdout[-2000:]
    return Path(match.group(1))


def _checkpoint_tensors(backup):
    """{name: array} of the newest checkpoint the EpochLoop recorded in `backup`; every checkpoint it lists
    must read whole."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(backup))
    assert state is not None, f"no checkpoint recorded in {backup}"
    for prefix in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(prefix)
        tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    assert prefix == state.model_checkpoint_path
    return tensors


def _files(root, name):
    return sorted(str(p.relative_to(root)) for folder in (root / "runs" / name, root / "saved" / name)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """The uninterrupted 2-worker run every interrupted one must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    addresses = [f"{launch.HOST}:{port}" for port in launch.free_ports(2)]
    results = _workers(root, shared_data, "run", addresses)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    prints = _fingerprints(*results)
    assert sorted(prints) == [CHIEF, WORKER] and prints[CHIEF] == prints[WORKER]
    return types.SimpleNamespace(root=root, run=root / "runs" / "run", fingerprint=prints[CHIEF],
                                 checkpoint=_checkpoint_tensors(root / "runs" / "run" / "backup_train"))


def assert_same_result(root, reference):
    """The finished run equals the uninterrupted one, bit for bit (timings aside)."""
    run = root / "runs" / "run"
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, reference.run))
    assert a["test"] == b["test"]
    for key in ("epochs", "best_epoch", "best_val_accuracy", "final_val_accuracy", "params", "replicas"):
        assert a[key] == b[key], key
    assert a["epochs"] == EPOCHS and a["replicas"] == 2
    assert _history(run) == _history(reference.run)
    for name in ("classification_report.txt", "confusion_matrix.png", "curves.png"):
        assert (run / name).read_bytes() == (reference.run / name).read_bytes(), name
    checkpoint = _checkpoint_tensors(run / "backup_train")
    assert sorted(checkpoint) == sorted(reference.checkpoint)
    for name, value in checkpoint.items():
        np.testing.assert_array_equal(value, reference.checkpoint[name], err_msg=name)
    assert _files(root, "run") == _files(reference.root, "run")


def kill_and_restart(root, data_dir, reference, point):
    """Run both workers, `who` killed at `fault`, then both again with the same command; check every step."""
    fault, who, finished, survivor_finishes = point
    survivor = 1 - who
    run = root / "runs" / "run"
    addresses = [f"{launch.HOST}:{port}" for port in launch.free_ports(2)]
    killed = _workers(root, data_dir, "run", addresses, fault=fault, who=who)
    assert killed[who].returncode == -9, f"{fault} was never reached: {killed[who].stderr[-2000:]}"
    err = killed[survivor].stderr
    if survivor_finishes:
        assert killed[survivor].returncode == 0, err[-3000:]
        assert err.strip().splitlines() == [f"warning: run run is finished, but lost contact with worker {who} "
                                            "(UnavailableError) at its end"], err
    else:
        # The survivor notices within the peer timeout and says, in one line, what to do.
        assert killed[survivor].returncode == 2, err[-3000:]
        waited = killed[survivor].ended - killed[who].ended
        assert waited < 3 * PEER_TIMEOUT, f"the survivor noticed the kill only after {waited:.0f} s"
        assert err.startswith(f"error: lost contact with worker {who}") and len(err.strip().splitlines()) == 1, err
        assert "restart every worker with the same command" in err
        assert not (run / "metrics.json").exists()
    assert_whole(root / "runs", root / "saved", temporaries=True)
    if who == WORKER:
        from tfcnn import distributed

        worker1 = types.SimpleNamespace(cluster_resolver=types.SimpleNamespace(task_type="worker", task_id=WORKER))
        scratch = distributed.scratch_folder(run, worker1)
        assert "its files go to scratch" not in killed[WORKER].stdout or _scratch(killed[WORKER]) == scratch
        assert scratch.is_dir(), "a killed worker's scratch folder is left until its next start"

    restarted = _workers(root, data_dir, "run", addresses)
    if survivor_finishes:
        # The run was finished: the chief says so; the other, left alone, says in one line that it lost the chief.
        assert restarted[CHIEF].returncode == 2 and "already finished" in restarted[CHIEF].stderr, \
            restarted[CHIEF].stderr[-3000:]
        errors = [line for line in restarted[WORKER].stderr.splitlines() if not line.startswith("taking over")]
        assert restarted[WORKER].returncode == 2 and len(errors) == 1, restarted[WORKER].stderr[-3000:]
    else:
        for result in restarted:
            assert result.returncode == 0, result.stderr[-3000:]

    # Bit-identical weights on every worker that got to print them, and both did unless one was killed after its
    # last step (the other then finished alone).
    prints = _fingerprints(*killed, *restarted)
    assert set(prints.values()) == {reference.fingerprint}, prints
    assert sorted(prints) == ([CHIEF] if survivor_finishes else [CHIEF, WORKER])
    assert_same_result(root, reference)
    assert_whole(root / "runs", root / "saved")
    assert not list(root.rglob("*.lock")), "a lock was left behind"
    # The killed worker's lock (its run folder's on the chief, its scratch folder's on the other) was taken over.
    takeovers = [line for line in restarted[who].stderr.splitlines() if line.startswith("taking over")]
    assert len(takeovers) == 1 and "which is gone" in takeovers[0], restarted[who].stderr[-2000:]
    assert takeovers[0].startswith("taking over run folder" if who == CHIEF else "taking over worker scratch folder")
    if not survivor_finishes:
        resumed = f"resuming train of run after epoch {finished}/{EPOCHS}"
        assert (resumed in restarted[CHIEF].stdout) == (0 < finished < EPOCHS), restarted[CHIEF].stdout[-2000:]
    if who == WORKER:
        # The restarted worker removed the killed one's scratch folder at its start, and its own at exit.
        # (Restarted beside a finished chief, it may lose the chief before it announces the folder.)
        assert "its files go to scratch" not in restarted[WORKER].stdout or _scratch(restarted[WORKER]) == scratch
        assert not scratch.exists() and not scratch.with_name(f".{scratch.name}.lock").exists()


@pytest.mark.slow  # 2-3 minutes (a reference run and a killed one, 2 workers each): the default suite stays ~15 min
def test_chief_killed_inside_its_epoch_2_checkpoint_save_resumes_to_the_same_result(tmp_path, shared_data,
                                                                                   reference):
    kill_and_restart(tmp_path, shared_data, reference, DEFAULT)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS, ids=_ids)
def test_a_worker_killed_at_any_write_resumes_to_the_same_result(tmp_path, shared_data, reference, point):
    kill_and_restart(tmp_path, shared_data, reference, point)


def test_a_killed_workers_scratch_folder_is_removed_by_the_next_start(tmp_path, monkeypatch):
    from tfcnn import distributed
    from tfcnn.errors import TfcnnError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    worker1 = types.SimpleNamespace(cluster_resolver=types.SimpleNamespace(task_type="worker", task_id=1))
    worker2 = types.SimpleNamespace(cluster_resolver=types.SimpleNamespace(task_type="worker", task_id=2))
    scratch = distributed.scratch_folder(tmp_path / "runs" / "a", worker1)
    # One folder per run and task, the same at every start.
    assert scratch.parent == tmp_path and re.fullmatch(r"tfcnn-worker-[0-9a-f]{12}-worker1", scratch.name)
    assert distributed.scratch_folder(tmp_path / "runs" / "a", worker1) == scratch
    assert len({scratch, distributed.scratch_folder(tmp_path / "runs" / "b", worker1),
                distributed.scratch_folder(tmp_path / "runs" / "a", worker2)}) == 3

    # What a killed worker leaves: its files and a lock naming a process that is gone.
    (scratch / "a" / "backup_train").mkdir(parents=True)
    (scratch / "a" / "history.csv").write_text("epoch,loss\n0,1.0\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_path = scratch.with_name(f".{scratch.name}.lock")
    lock_path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}) + "\n")

    lock = distributed.claim_scratch(scratch)
    try:
        assert scratch.is_dir() and not any(scratch.iterdir())
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
        with pytest.raises(TfcnnError, match="worker scratch folder .* is in use by pid"):
            distributed.claim_scratch(scratch)  # a worker of this run and task that still runs keeps its folder
        assert scratch.is_dir()
    finally:
        lock.release()
    assert not lock_path.exists()
