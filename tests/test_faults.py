"""Nothing lost under faults: a real training run killed anywhere, its disk filled, its checkpoints damaged.

Each case runs `python -m tfcnn.train` (LeNet-5, 512 MNIST images, 3 epochs, --deterministic, seed 0) as a
subprocess. TFCNN_FAULT=<point>[:<n>] makes it SIGKILL itself at a named moment (tfcnn.runfiles.fault);
the same command then resumes, and the finished run must match an uninterrupted one exactly, with every
file whole. The default suite kills one run at 4 moments in turn (CHAIN); `pytest --slow` kills a fresh run
at each of the 27 moments of POINTS, and one run twice in a row.
"""
import errno
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
ARGS = ["--arch", "lenet5", "--dataset", "mnist", "--limit-train", "512", "--limit-test", "256",
        "--val-fraction", "0.02", "--epochs", str(EPOCHS), "--batch-size", "64", "--schedule", "cosine",
        "--seed", "0", "--deterministic", "--mixed-precision", "float32", "--verbose", "2"]

# Every moment of a run's life the slow test kills it at: (TFCNN_FAULT, epochs the backup holds by then).
# 8 batches per epoch: batch:12 is epoch 2's fifth. "write:X" strikes after X's temporary file is written,
# before it is renamed; a run writes latest.weights.h5 and its metadata once per epoch, best.weights.h5 at
# every improvement (each epoch of this run), and copies the current backup to .bkp from epoch 2 on.
POINTS = [
    ("lock", 0), ("write:config.json", 0), ("batch:4", 0), ("write:best.weights.h5:1", 0), ("history:1", 0),
    ("tensorboard:1", 0), ("write:latest.weights.h5:1", 0), ("write:training_metadata.json:1", 0),
    ("batch:12", 1), ("write:best.weights.h5:2", 1), ("history:2", 1), ("write:latest.weights.h5.bkp:1", 1),
    ("write:training_metadata.json.bkp:1", 1), ("write:latest.weights.h5:2", 1),
    ("write:training_metadata.json:2", 1), ("tensorboard:3", 2), ("write:latest.weights.h5:3", 2),
    ("write:training_metadata.json:3", 2), ("write:train.done", 3), ("stage.done", 3), ("evaluate", 3),
    ("write:classification_report.txt", 3), ("write:confusion_matrix.png", 3), ("write:curves.png", 3),
    ("write:model.keras", 3), ("export", 3), ("write:metrics.json", 3),
]
# The default suite: one run killed 4 times (n counts visits within one process). First in epoch 3, just after
# history.csv has its row (the damaged-checkpoint tests start from a copy of that state), then as the resumed
# process writes epoch 3's best.weights.h5, then as the next one writes epoch 3's backup, then inside the
# SavedModel export.
FIRST_KILL = ("history:3", 2)
CHAIN = [("write:best.weights.h5:1", 2), ("write:latest.weights.h5:1", 2), ("export", 3)]


def _train(root, name, data_dir, fault=None, script=None, args=()):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFCNN_CACHE_DIR": str(root / "cache")}
    env.pop("TFCNN_FAULT", None)
    if fault:
        env["TFCNN_FAULT"] = fault
    entry = ["-c", script, "train"] if script else ["-m", "tfcnn.train"]
    return subprocess.run([sys.executable, *entry, *ARGS, "--data-dir", str(data_dir), "--runs-dir",
                           str(root / "runs"), "--saved-models-dir", str(root / "saved"), "--name", name, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """The uninterrupted run every interrupted one must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    done = _train(root, "ref", shared_data)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "ref"


# ---------------------------------------------------------------- what "nothing lost" means

def _temporary(path, folder):
    return any(".tmp-" in part for part in path.relative_to(folder).parts)


def _events_whole(path):
    """A TFRecord file (TensorBoard events) ends exactly after its last record: none is cut short."""
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12 + length + 4  # length, its crc, the record, its crc
    return pos == len(data)


def assert_whole(*folders, temporaries=False):
    """Every file under `folders` is complete and readable; temporaries (of a write a kill cut off) only if
    allowed. Lock files may be left only by a killed process."""
    import h5py
    from PIL import Image

    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if _temporary(path, folder):
                assert temporaries, f"temporary file left: {path}"
                continue
            name = path.name
            if name.endswith((".json", ".json.bkp", ".lock")):
                json.loads(path.read_text())
            elif name.endswith((".h5", ".h5.bkp")):
                with h5py.File(path, "r") as f:
                    f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
            elif name.endswith(".png"):
                with Image.open(path) as image:
                    image.load()
            elif name.endswith(".keras"):
                with zipfile.ZipFile(path) as archive:
                    assert archive.testzip() is None, path
            elif name.endswith(".csv"):  # empty until its first epoch ends, then header and whole rows
                text = path.read_text()
                assert not text or text.endswith("\n") and len({row.count(",") for row in text.splitlines()}) == 1, path
            elif "tfevents" in name:
                assert _events_whole(path), path
            elif name.endswith(".done"):
                assert path.read_text() == "ok\n"


def _history(run):
    rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    timing = rows[0].index("epoch_time_s")
    return [row[:timing] + row[timing + 1:] for row in rows]


def assert_same_result(run, reference):
    """The finished run's results equal the uninterrupted run's, bit for bit (timings aside)."""
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert a["test"] == b["test"]
    for key in ("epochs", "best_epoch", "best_val_accuracy", "final_val_accuracy", "params"):
        assert a[key] == b[key], key
    assert a["epochs"] == EPOCHS
    assert _history(run) == _history(reference)
    for name in ("classification_report.txt", "confusion_matrix.png", "curves.png"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    for r in (run, reference):
        assert not (r / "backup_train").exists()
    saved, saved_reference = (r.parent.parent / "saved" / r.name for r in (run, reference))
    assert (saved / "saved_model.pb").is_file() and (saved / "model.keras").is_file()
    assert (json.loads((saved / "tfcnn.json").read_text())["test_accuracy"]
            == json.loads((saved_reference / "tfcnn.json").read_text())["test_accuracy"] == a["test"]["accuracy"])


def _assert_resumed(result, name, finished, stale_lock=True):
    """A resumed process took over the dead one's lock and trained only the epochs its backup did not hold."""
    takeovers = [line for line in result.stderr.splitlines() if line.startswith("taking over run folder")]
    if stale_lock:
        assert len(takeovers) == 1 and "which is gone" in takeovers[0], result.stderr[-2000:]
        assert f"on host {socket.gethostname()}" in takeovers[0]
    else:
        assert not takeovers, result.stderr[-2000:]
    resumed = f"resuming train of {name} after epoch {finished}/{EPOCHS}"
    assert (resumed in result.stdout) == (0 < finished < EPOCHS), result.stdout[-2000:]
    if result.returncode == 0:
        epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
        assert epochs == [f"Epoch {e}/{EPOCHS}" for e in range(finished + 1, EPOCHS + 1)], result.stdout[-2000:]


def kill_and_resume(root, name, data_dir, steps, finished=None):
    """Run `name` once per (fault, finished epochs) step, each killed at its fault, then once to the end.
    `finished`: the epochs an earlier killed process of this run left backed up."""
    for fault, then_finished in steps:
        killed = _train(root, name, data_dir, fault=fault)
        assert killed.returncode == -9, f"{fault} was never reached: {killed.stderr[-2000:]}"
        if finished is not None:
            _assert_resumed(killed, name, finished)
        assert_whole(root / "runs", root / "saved", temporaries=True)
        assert not (root / "runs" / name / "metrics.json").exists()
        finished = then_finished
    done = _train(root, name, data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_resumed(done, name, finished)
    assert_whole(root / "runs", root / "saved")
    assert not list(root.rglob("*.lock")), "a lock was left behind"
    return root / "runs" / name


@pytest.fixture(scope="module")
def killed_in_epoch_3(tmp_path_factory, shared_data):
    """CHAIN's first kill: a run killed in epoch 3 once history.csv has the epoch's row, before its backup.
    The backup holds epoch 2 as the current copy and epoch 1 as the previous one. Tests copy it."""
    root = tmp_path_factory.mktemp("killed-in-epoch-3")
    killed = _train(root, "killed", shared_data, fault=FIRST_KILL[0])
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert_whole(root / "runs", root / "saved", temporaries=True)
    backup = root / "runs" / "killed" / "backup_train"
    assert [json.loads((backup / name).read_text())["epoch"]
            for name in ("training_metadata.json", "training_metadata.json.bkp")] == [2, 1]
    assert len((root / "runs" / "killed" / "history.csv").read_text().splitlines()) == 1 + 3
    return root


def _copy_run(source, target):
    for folder in ("runs", "saved"):
        if (source / folder).exists():
            shutil.copytree(source / folder, target / folder)
    return target / "runs" / "killed" / "backup_train"


def test_a_run_killed_four_times_ends_as_if_never_interrupted(tmp_path, shared_data, reference, killed_in_epoch_3):
    _copy_run(killed_in_epoch_3, tmp_path)
    run = kill_and_resume(tmp_path, "killed", shared_data, CHAIN, finished=FIRST_KILL[1])
    assert_same_result(run, reference)
    again = _train(tmp_path, "killed", shared_data)
    assert again.returncode == 2 and "already finished" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("steps", [[point] for point in POINTS] + [[("history:2", 1), ("write:history.csv", 1)]],
                         ids=lambda steps: "+".join(fault for fault, _ in steps))
def test_killed_at_any_moment_resumes_to_the_same_result(tmp_path, shared_data, reference, steps):
    run = kill_and_resume(tmp_path, "killed", shared_data, steps)
    assert_same_result(run, reference)


def test_steps_per_execution_resumes_to_the_result_of_one_batch_per_call(tmp_path, shared_data, reference):
    """--steps-per-execution 3 runs an epoch's 8 batches in calls of 3, 3 and 2: killed after its fifth call (epoch
    2's batches 3-5), the run resumes after epoch 1 and ends bit for bit as the uninterrupted run with one batch per
    call (so a resumed epoch sees the same batches, and none runs on into the next epoch's)."""
    per_call = ["--steps-per-execution", "3"]
    killed = _train(tmp_path, "spe", shared_data, fault="batch:5", args=per_call)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert_whole(tmp_path / "runs", tmp_path / "saved", temporaries=True)
    run = tmp_path / "runs" / "spe"
    assert json.loads((run / "backup_train" / "training_metadata.json").read_text())["epoch"] == 1
    done = _train(tmp_path, "spe", shared_data, args=per_call)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_resumed(done, "spe", 1)
    assert_whole(tmp_path / "runs", tmp_path / "saved")
    assert json.loads((run / "config.json").read_text())["steps_per_execution"] == 3
    assert_same_result(run, reference)


def test_an_ema_run_killed_after_validating_epoch_2_resumes_to_the_uninterrupted_result(tmp_path, shared_data,
                                                                                        reference):
    """--ema swaps the moving average in for validation and the best checkpoint, and back: killed once epoch 2's
    row is written (its backup not yet), the run resumes after epoch 1 and ends as an uninterrupted --ema run."""
    ema = ["--ema", "0.9"]
    uninterrupted = _train(tmp_path, "ema-ref", shared_data, args=ema)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    killed = _train(tmp_path, "ema", shared_data, fault="history:2", args=ema)
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = _train(tmp_path, "ema", shared_data, args=ema)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_resumed(done, "ema", 1)
    run, ema_reference = tmp_path / "runs" / "ema", tmp_path / "runs" / "ema-ref"
    assert_same_result(run, ema_reference)
    assert _history(run) != _history(reference)  # the average, not the trained weights, was validated


# ---------------------------------------------------------------- damaged checkpoints

def test_a_truncated_current_checkpoint_resumes_from_the_previous_copy(tmp_path, shared_data, reference,
                                                                       killed_in_epoch_3):
    backup = _copy_run(killed_in_epoch_3, tmp_path)
    weights = backup / "latest.weights.h5"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    done = _train(tmp_path, "killed", shared_data)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"the current checkpoint copy in {backup} is damaged (latest.weights.h5 is not the file "
            "training_metadata.json was written for (truncated or overwritten)); resuming from the previous copy, "
            "after epoch 1") in done.stderr
    _assert_resumed(done, "killed", 1)
    assert_whole(tmp_path / "runs", tmp_path / "saved")
    assert_same_result(tmp_path / "runs" / "killed", reference)


def test_two_damaged_copies_stop_with_one_line_saying_what_to_delete(tmp_path, shared_data, killed_in_epoch_3):
    backup = _copy_run(killed_in_epoch_3, tmp_path)
    current, previous = backup / "latest.weights.h5", backup / "latest.weights.h5.bkp"
    current.write_bytes(bytes(current.stat().st_size))  # zeroed
    with open(previous, "r+b") as f:
        f.truncate(1000)
    run = backup.parent
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "config.json"}
    done = _train(tmp_path, "killed", shared_data)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(done.stderr.strip().splitlines()) == 2, done.stderr  # + the lock takeover
    assert errors[0].startswith(f"error: cannot resume: neither checkpoint copy in {backup} can be read "
                                "(latest.weights.h5 is not the file training_metadata.json was written for")
    assert errors[0].endswith(f"delete {backup} to train this stage again from its first epoch, or the run "
                              f"folder {run} to start over")
    # Not restarted from scratch: every file is as the killed run left it.
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "config.json"} == before


# ---------------------------------------------------------------- full disks, read-only places

def _mount_tmpfs(path, options):
    """Mount a tmpfs at `path` (root only, as CI runs); skip the test with the reason when that cannot be."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the tests as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    return path


@pytest.fixture
def mounts():
    mounted = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


FILL_THE_DISK_IN_EPOCH_2 = """
import errno, os, sys
from tfcnn import config, train
from tfcnn.errors import ArgumentParser, run_cli
import keras

class FillTheDisk(keras.callbacks.Callback):
    '''Another program fills the run's filesystem in the middle of epoch 2.'''
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            fd = os.open(os.environ["FILLER"], os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, bytes(1 << 16))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            os.close(fd)

def main(argv):
    parser = ArgumentParser(prog="train")
    config.add_flags(parser)
    train.train_and_evaluate(config.from_args(parser.parse_args(argv)), callbacks=[FillTheDisk()])
    return 0

sys.exit(run_cli(main, sys.argv[2:]))
"""


def test_a_full_disk_stops_with_one_line_and_the_run_resumes_once_space_is_freed(tmp_path, shared_data, reference,
                                                                                 mounts, monkeypatch):
    disk = _mount_tmpfs(tmp_path / "disk", "size=16m")
    mounts.append(disk)
    filler = disk / "filler"
    monkeypatch.setenv("FILLER", str(filler))
    full = _train(disk, "full", shared_data, script=FILL_THE_DISK_IN_EPOCH_2)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    run = disk / "runs" / "full"
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left on {run}: about "), full.stderr
    assert lines[0].endswith(" MB needed; free space and re-run the same command to resume")
    needed_mb = int(lines[0].split("about ")[1].split(" MB")[0])
    assert 1 <= needed_mb <= 16
    # The last good checkpoint (epoch 1) is whole: its weights are the file its metadata names.
    backup = run / "backup_train"
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    assert hashlib.sha256((backup / "latest.weights.h5").read_bytes()).hexdigest() == meta["sha256"]
    assert_whole(disk / "runs", disk / "saved")  # and no temporary file is left
    assert not (disk / "runs" / ".full.lock").exists()  # the lock was released on the way out

    filler.unlink()
    resumed = _train(disk, "full", shared_data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_resumed(resumed, "full", 1, stale_lock=False)
    assert_whole(disk / "runs", disk / "saved")
    assert_same_result(run, reference)


def _read_only(folder, mounts):
    """Make `folder` (and what it holds) read-only: a read-only tmpfs copy as root (root ignores modes),
    modes otherwise."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return folder
    staged = folder.with_name(folder.name + "-staged")
    folder.rename(staged)
    mounts.append(_mount_tmpfs(folder, "size=64m"))
    for path in staged.iterdir():
        shutil.copy2(path, folder / path.name)
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot remount {folder} read-only: {done.stderr.strip()}")
    return folder


def test_a_read_only_data_folder_and_an_unwritable_cache_still_train(tmp_path, shared_data, mounts):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("notMNIST_large_subset.tar.gz", "notMNIST_small_subset.tar.gz"):
        shutil.copy2(shared_data / name, data / name)
    data = _read_only(data, mounts)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache = _read_only(cache, mounts)
    with pytest.raises(OSError) as err:
        (data / "probe").write_text("x")
    assert err.value.errno in (errno.EROFS, errno.EACCES)
    listing = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFCNN_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "tfcnn.train", "--dataset", "notmnist", "--data-dir", str(data),
                           "--arch", "lenet5", "--epochs", "1", "--limit-train", "256", "--limit-test", "200",
                           "--val-fraction", "0.02", "--mixed-precision", "float32", "--no-tensorboard",
                           "--runs-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "saved"),
                           "--name", "ro", "--verbose", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "decoded-array cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"skipping the decoded-array cache: cannot write in {cache}")
    assert json.loads((tmp_path / "runs" / "ro" / "metrics.json").read_text())["test"]["num_examples"] == 200
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == listing and not list(cache.iterdir())
