"""Durable writes: every atomic write survives a power cut, checked on the system calls of real processes.

A rename is durable only once its folder is flushed, and it must not reach the disk before the bytes it names.
So every rename of a runfiles temporary (.tmp-*) onto its target must be preceded, in the same thread, by an
fsync of that temporary (of every file in it and of itself, for a folder) and followed by an fsync of the
target's folder before that thread renames anything else. The processes run under
`strace -f -y -e trace=fsync,fdatasync,rename,renameat,renameat2,openat` (-y: each fd with its path).
"""
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACED = "fsync,fdatasync,rename,renameat,renameat2,openat"
FLUSHES, RENAMES = {"fsync", "fdatasync"}, {"rename", "renameat", "renameat2"}
EPOCHS = 2
TRAIN = ["--arch", "lenet5", "--dataset", "mnist", "--limit-train", "256", "--limit-test", "128",
         "--val-fraction", "0.1", "--epochs", str(EPOCHS), "--batch-size", "64", "--seed", "0",
         "--mixed-precision", "float32", "--verbose", "0"]

Call = namedtuple("Call", "index pid name paths flags ok")


def _strace():
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    probe = subprocess.run([strace, "-o", os.devnull, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    return strace


def traced(args, trace, cwd=REPO, env=None):
    """Run `args` under strace, writing the calls to `trace`."""
    cmd = [_strace(), "-f", "--seccomp-bpf", "-y", "-e", f"trace={TRACED}", "-o", str(trace), *args]  # bpf: stops on these calls only
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                          capture_output=True, text=True, timeout=900)


_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_FD = re.compile(r"(?:AT_FDCWD|-?\d+)<([^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _join(base, path):
    return os.path.normpath(path if os.path.isabs(path) or base is None else os.path.join(base, path))


def parse(trace, cwd=REPO):
    """The traced calls in order: Call(index, pid, name, paths, flags, ok). paths: the fsynced file or folder; the
    (source, target) of a rename; the file an openat opened."""
    calls, pending = [], {}
    for line in Path(trace).read_text().splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):  # another thread ran in between: joined when it resumes
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if resumed:
            rest = pending.pop(pid, "") + resumed.group(1)
        match = _LINE.match(f"{pid} {rest}")
        if not match:
            continue  # signals, exits
        name, args, ok = match.group(2), match.group(3), int(match.group(4)) >= 0
        fds, quoted = _FD.findall(args), _QUOTED.findall(args)
        if name in FLUSHES and fds:
            paths = (os.path.normpath(fds[0]),)
        elif name == "rename" and len(quoted) >= 2:
            paths = (_join(str(cwd), quoted[0]), _join(str(cwd), quoted[1]))
        elif name in ("renameat", "renameat2") and len(quoted) >= 2:
            bases = fds + [str(cwd)] * 2
            paths = (_join(bases[0], quoted[0]), _join(bases[1], quoted[1]))
        elif name == "openat" and quoted:
            paths = (_join(fds[0] if fds else str(cwd), quoted[0]),)
        else:
            continue
        calls.append(Call(len(calls), int(pid), name, paths, args, ok))
    return calls


def undurable(calls, root):
    """What breaks the rule (one line each) among the renames of runfiles temporaries under `root`, and the
    targets those renames wrote."""
    problems, targets = [], []
    root = str(root)
    for rename in (c for c in calls if c.name in RENAMES and c.ok):
        source, target = rename.paths
        if not target.startswith(root) or not os.path.basename(source).startswith(".tmp-"):
            continue
        targets.append(target)
        thread = [c for c in calls if c.pid == rename.pid]
        flushed = {c.paths[0] for c in thread if c.name in FLUSHES and c.ok and c.index < rename.index}
        if source not in flushed:
            problems.append(f"{target}: its temporary {source} was not flushed before the rename")
        if os.path.isdir(target):  # a folder written whole (atomic_dir): every file in it too
            for path in sorted(Path(target).rglob("*")):
                if os.path.join(source, str(path.relative_to(target))) not in flushed:
                    problems.append(f"{path} was not flushed before its folder {target} took its name")
        after = next((c.index for c in thread if c.name in RENAMES and c.index > rename.index), len(calls))
        folder = os.path.dirname(target)
        if not any(c.name in FLUSHES and c.ok and c.paths[0] == folder for c in thread if rename.index < c.index < after):
            problems.append(f"{target}: its folder {folder} was not flushed after the rename")
    return problems, targets


def test_a_training_run_flushes_every_file_before_its_rename_and_its_folder_after(tmp_path, shared_data):
    trace = tmp_path / "trace.txt"
    runs, saved = tmp_path / "runs", tmp_path / "saved"
    result = traced([sys.executable, "-m", "tfcnn.train", *TRAIN, "--data-dir", str(shared_data), "--runs-dir",
                     str(runs), "--saved-models-dir", str(saved), "--name", "d"], trace,
                    env={"TFCNN_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    calls = parse(trace)
    problems, targets = undurable(calls, tmp_path)
    assert not problems, "\n".join(problems[:20])
    run = runs / "d"
    names = [os.path.relpath(t, tmp_path) for t in targets]
    backup = "runs/d/backup_train/"
    # Every checkpoint file of both epochs (the current copy each epoch, the previous one from epoch 2),
    # metrics.json and the run's other files, and the exported SavedModel folder went through the rule.
    for name, times in [(f"{backup}latest.weights.h5", EPOCHS), (f"{backup}training_metadata.json", EPOCHS),
                        (f"{backup}latest.weights.h5.bkp", EPOCHS - 1),
                        (f"{backup}training_metadata.json.bkp", EPOCHS - 1),
                        ("runs/d/metrics.json", 1), ("runs/d/config.json", 1), ("runs/d/model.keras", 1),
                        ("runs/d/train.done", 1), ("saved/d", 1)]:
        assert names.count(name) == times, (name, names)
    assert 1 <= names.count("runs/d/best.weights.h5") <= EPOCHS
    # history.csv is appended, not renamed: each epoch's row is flushed before the backup records the epoch,
    # and its new name before the first.
    history, commits = str(run / "history.csv"), [c.index for c in calls if c.name in RENAMES and c.ok
                                                  and c.paths[1] == str(run / "backup_train" / "training_metadata.json")]
    created = next(c.index for c in calls if c.name == "openat" and c.paths[0] == history and "O_CREAT" in c.flags)
    assert any(c.name in FLUSHES and c.paths[0] == str(run) and created < c.index < commits[0] for c in calls)
    for start, end in zip([created, *commits], commits):
        assert any(c.name in FLUSHES and c.paths[0] == history and start < c.index < end for c in calls), \
            "history.csv's row was not flushed before the backup recorded its epoch"


WRITES = """
import sys
from pathlib import Path
import numpy as np
from tfcnn import datafiles, runfiles

root = Path(sys.argv[1])
runfiles.makedirs(root / "models")
runfiles.write_text(root / "models" / "MANIFEST.json", "{}\\n")  # how tfcnn.ship writes the manifest
for text in ("first", "second"):  # a new folder, then one that replaces it
    with runfiles.atomic_dir(root / "models" / "net") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights").write_text(text)
        (tmp / "card.md").write_text(text)
datafiles.cached("images", root / "models" / "MANIFEST.json", lambda: {"x": np.arange(3)})  # the decoded cache
"""


def test_runfiles_folders_manifest_and_cache_are_flushed(tmp_path):
    trace = tmp_path / "trace.txt"
    result = traced([sys.executable, "-c", WRITES, str(tmp_path)], trace, env={"TFCNN_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr[-3000:]
    problems, targets = undurable(parse(trace), tmp_path)
    assert not problems, "\n".join(problems)
    names = sorted(os.path.relpath(t, tmp_path) for t in targets)
    assert names[1:] == ["models/MANIFEST.json", "models/net", "models/net"]
    assert re.fullmatch(r"c/images-\w+-\w+\.npz", names[0]), names
    assert (tmp_path / "models" / "net" / "card.md").read_text() == "second"
