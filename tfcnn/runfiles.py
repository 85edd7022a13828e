"""A run's files under faults: one owner per folder (lock), atomic writes, full disks, fault points.

    with runfiles.Lock(run_dir, hint="choose another --name"):   # one process per run folder
        with runfiles.atomic_path(run_dir / "metrics.json") as tmp:  # all or nothing under that name
            tmp.write_text(...)

A lock is the file .<name>.lock beside the folder (or file) it guards, holding the owner's pid, host
and start time, and an fcntl.flock that the kernel drops when the owner dies. A lock file left by a
process that died (its flock is gone) is taken over with a warning; one written by another host is
not, as this host cannot tell whether that process still runs.

TFCNN_FAULT=<point>[:<n>] makes the process SIGKILL itself the n-th time (default 1st) it reaches the
named point: tests/test_faults.py kills a real training run inside every write this way. Points:
"write:<file name>" between writing a temporary file and renaming it onto <file name>, and the
named moments in tfcnn.checkpoints, tfcnn.distributed, tfcnn.train and tfcnn.export. Stdlib only (no TensorFlow).

Atomic writes also survive a power cut: a file (every file of a folder) is flushed to the disk before
its rename, and its folder after it (fsync_dir), so the name holds the old version or the whole new one.
tests/test_durability.py checks this on the system calls of a real run.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from pathlib import Path

from tfcnn.errors import TfcnnError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


def _fault_spec(spec):
    point, _, nth = spec.rpartition(":")
    return (point, int(nth)) if nth.isdigit() else (spec, 1)


_FAULT = _fault_spec(os.environ["TFCNN_FAULT"]) if os.environ.get("TFCNN_FAULT") else None
_visits = 0


def fault(point):
    """SIGKILL this process if TFCNN_FAULT names `point` and this is its n-th visit. Free when unset."""
    global _visits
    if _FAULT and _FAULT[0] == point:
        _visits += 1
        if _visits == _FAULT[1]:
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- atomic writes

def temp_sibling(target):
    """A fresh name beside `target` that ends like it (Keras wants .weights.h5 and .keras, matplotlib
    the image suffix) and starts with TMP_PREFIX (so a later owner of the folder can sweep it)."""
    target = Path(target)
    return target.with_name(f"{TMP_PREFIX}{secrets.token_hex(4)}-{target.name}")


def fsync(path):
    """Flush a file's bytes, or a folder's entries (the names created, renamed or removed in it), to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # A few filesystems cannot flush a folder (EINVAL); their renames are as durable as they can be.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP) or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def fsync_dir(path):
    """Flush the folder `path`: a rename or a new file in it survives a power cut only once this returns."""
    fsync(path)


def fsync_tree(folder):
    """Flush every file and folder under `folder`, and `folder` itself (deepest first)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync(os.path.join(root, name))
        fsync_dir(root)


def makedirs(folder):
    """mkdir -p `folder`, flushing the parent of each folder it creates (a new folder's name is an entry of its
    parent, lost in a power cut until that is flushed like any rename)."""
    folder = Path(folder)
    missing = [folder, *folder.parents]
    missing = [p for p in reversed(missing) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for created in missing:
        fsync_dir(created.parent)


def commit(tmp, target):
    """Rename the finished temporary file `tmp` onto `target` durably: its bytes reach the disk before the
    rename, and the rename itself (an entry of its folder) after it."""
    # fsync first: a filesystem that allocates late (NFS, delayed allocation) reports a full disk
    # here rather than after the rename, and a power cut cannot leave the new name on empty blocks.
    fsync(tmp)
    fault(f"write:{Path(target).name}")
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary sibling of `target` to write; once the block ends, rename it onto `target` if
    the block created it. `target` is either untouched or whole; the temporary file never stays."""
    tmp = temp_sibling(target)
    try:
        yield tmp
        if tmp.exists():
            commit(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target):
    """Yield a new empty folder beside `target` to fill; once the block ends, it takes `target`'s name (an
    existing `target` is moved aside first, then removed). `target` is either untouched or whole; the
    temporary folder never stays."""
    target = Path(target)
    makedirs(target.parent)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)  # every file and folder in it, before it takes the name (as commit does for a file)
        old = temp_sibling(target) if target.exists() else None
        if old:
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target, text):
    """Replace `target`'s content with `text`, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target, obj):
    write_text(target, json.dumps(obj, indent=2) + "\n")


def remove_temporaries_of(target):
    """Delete the temporary siblings (files or folders) a killed writer of `target` left."""
    target = Path(target)
    for leftover in target.parent.glob(f"{TMP_PREFIX}*-{target.name}"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def remove_temporaries(folder):
    """Delete the temporary files a killed writer left under `folder` (call it holding the folder's lock)."""
    for leftover in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- full disks

def out_of_space(exc):
    """`exc`, or an exception it came from, reports a full disk or quota (as OSError, h5py or TensorFlow word it)."""
    while exc is not None:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
                text in str(exc) for text in ("No space left on device", "Disk quota exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def out_of_space_error(path, needed_bytes):
    """The one-line TfcnnError for a run stopped by a full disk under `path`."""
    mb = max(1, -(-int(needed_bytes) // 2**20))
    return TfcnnError(f"no space left on {path}: about {mb} MB needed; free space and re-run the same "
                      "command to resume")


# ---------------------------------------------------------------- locks

def lock_file(target):
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _describe(owner):
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"])) if "started" in owner else "?"
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {started})"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class Lock:
    """Ownership of a folder or file `target` by this process, as a context manager (see the module
    docstring). Acquiring raises a one-line TfcnnError naming the owner if another process holds it."""

    def __init__(self, target, what="run folder", hint="wait for it to finish"):
        self.target, self.what, self.hint = Path(target), what, hint
        self.path = lock_file(target)
        self.fd = None

    def acquire(self):
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._read(fd)
                os.close(fd)
                raise TfcnnError(f"{self.what} {self.target} is in use by {_describe(owner)}; {self.hint}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the owner we waited on removed the file as it released it: lock the new one
        try:
            self._take_over(self._read(fd))
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if out_of_space(exc):
                raise out_of_space_error(self.path.parent, 2**20) from None
            raise TfcnnError(f"cannot create the lock file {self.path} ({exc.strerror or exc}); the {self.what} "
                             "must be in a folder this user can write") from None

    def _take_over(self, owner):
        if owner is None:
            return
        if owner.get("host") not in (None, socket.gethostname()):
            raise TfcnnError(f"{self.what} {self.target} was locked by {_describe(owner)} and this host cannot "
                             f"tell whether that process still runs; if it does not, delete {self.path}")
        pid = owner.get("pid")
        state = "is gone" if not isinstance(pid, int) or not _alive(pid) else "no longer holds it"
        log.warning("taking over %s %s from %s, which %s", self.what, self.target, _describe(owner), state)

    @staticmethod
    def _read(fd):
        """The owner record in the lock file: None if empty (released cleanly), {} if unreadable."""
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if not text:
            return None
        try:
            owner = json.loads(text)
        except ValueError:  # its owner was killed while writing it
            return {}
        return owner if isinstance(owner, dict) else {}

    def release(self):
        if self.fd is None:
            return
        # Unlink before unlocking: whoever opened the old file sees it replaced (acquire's inode check).
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def sha256(path):
    """The hex sha256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
