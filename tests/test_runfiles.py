"""tfcnn.runfiles: locks held by real processes, atomic writes, disk-full detection, fault points."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfcnn import runfiles
from tfcnn.errors import TfcnnError

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from tfcnn import runfiles
with runfiles.Lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(target):
    """A process holding the lock on `target`, once it says so."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_names_its_owner_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    target = tmp_path / "runs" / "dup"
    holder = _holder(target)
    try:
        with pytest.raises(TfcnnError) as err:
            runfiles.Lock(target, "run folder", hint="choose another --name").acquire()
        message = str(err.value)
        assert f"run folder {target} is in use by pid {holder.pid} on host {socket.gethostname()}" in message
        assert message.endswith("; choose another --name") and "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_file = tmp_path / "runs" / ".dup.lock"
    assert json.loads(lock_file.read_text())["pid"] == holder.pid  # the dead owner's record stays behind
    with runfiles.Lock(target):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(warnings) == 1 and f"from pid {holder.pid} on host" in warnings[0] and warnings[0].endswith("is gone")
    assert not lock_file.exists()  # released cleanly: nothing left


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    target = tmp_path / "export"
    lock_file = runfiles.lock_file(target)
    lock_file.write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": time.time()}))
    with pytest.raises(TfcnnError, match=f"pid 4242 on host elsewhere .*cannot tell .*delete {lock_file}$"):
        runfiles.Lock(target).acquire()
    assert json.loads(lock_file.read_text())["host"] == "elsewhere"


def test_a_lock_file_cut_short_by_a_kill_is_taken_over(tmp_path, caplog):
    target = tmp_path / "grid"
    runfiles.lock_file(target).write_text('{"pid": 12')
    with runfiles.Lock(target):
        pass
    assert "taking over run folder" in caplog.text


def test_atomic_path_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "metrics.json"
    runfiles.write_json(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with runfiles.atomic_path(target) as tmp:
            tmp.write_text('{"accur')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    with runfiles.atomic_path(tmp_path / "best.weights.h5") as tmp:
        assert tmp.name.endswith("-best.weights.h5") and tmp.name.startswith(runfiles.TMP_PREFIX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # not written: nothing renamed


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with runfiles.atomic_dir(target) as tmp:
        (tmp / "saved_model.pb").write_text("first")
    with pytest.raises(RuntimeError):
        with runfiles.atomic_dir(target) as tmp:
            (tmp / "saved_model.pb").write_text("half")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "saved_model.pb").read_text() == "first"
    with runfiles.atomic_dir(target) as tmp:
        (tmp / "model.keras").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["model.keras"]  # the old folder's files went with it
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_remove_temporaries_of_a_target_leaves_the_others(tmp_path):
    for name in ("model.onnx", "model.onnx.json", "model.tflite"):
        runfiles.temp_sibling(tmp_path / name).write_text("left by a kill")
    runfiles.temp_sibling(tmp_path / "sm").mkdir()
    runfiles.remove_temporaries_of(tmp_path / "model.onnx")
    runfiles.remove_temporaries_of(tmp_path / "sm")
    assert sorted(p.name.rsplit("-", 1)[-1] for p in tmp_path.iterdir()) == ["model.onnx.json", "model.tflite"]


def test_fault_kills_at_the_nth_visit_of_its_point(tmp_path):
    script = ("from tfcnn import runfiles\n"
              "for i in range(1, 4):\n"
              "    print(i, flush=True)\n"
              "    runfiles.fault('write:best.weights.h5')\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TFCNN_FAULT": "write:best.weights.h5:2"})
    assert run.returncode == -signal.SIGKILL and run.stdout.split() == ["1", "2"]
    unset = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "TFCNN_FAULT"})
    assert unset.returncode == 0 and unset.stdout.split() == ["1", "2", "3"]


def test_out_of_space_is_recognised_however_it_is_worded():
    assert runfiles.out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    h5py_style = OSError("Can't synchronously write data (file write failed: errno = 28, error message = "
                         "'No space left on device')")
    assert runfiles.out_of_space(h5py_style)
    try:
        try:
            raise h5py_style
        except OSError as exc:
            raise ValueError("saving failed") from exc
    except ValueError as chained:
        assert runfiles.out_of_space(chained)
    assert not runfiles.out_of_space(OSError(errno.EACCES, "Permission denied"))
    message = str(runfiles.out_of_space_error("runs/x", 5 * 2**20 + 1))
    assert message == "no space left on runs/x: about 6 MB needed; free space and re-run the same command to resume"


def test_an_export_target_is_owned_like_a_run(tmp_path):
    from tfcnn import export

    target = tmp_path / "saved_models" / "lenet"
    holder = _holder(target)
    try:
        with pytest.raises(TfcnnError, match=f"^export target {target} is in use by pid {holder.pid} .*another --out$"):
            export.export_saved_model(None, target, {})  # refused before the model is touched
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait()
    # A grid's folder has no lock of its own any more: its study's workers share it (tests/test_sweeps.py), and
    # each run folder in it is still owned by one process.


def test_a_lock_in_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    with pytest.raises(TfcnnError, match=f"^cannot create the lock file {blocker}/.dup.lock .*must be in a folder"):
        runfiles.Lock(blocker / "dup").acquire()
