"""Dataset files: find them in the data directory or download and verify them, read their archives, decode
images and cache the decoded arrays (tfcnn.data's loaders build datasets from these).

Decoding image archives (notMNIST PNGs, CIFAR-10 JPEGs, folders) is cached as .npz under
$TFCNN_CACHE_DIR or ~/.cache/tfcnn, keyed by the source's path, size and mtime (one file per
source: a changed source replaces its old entry); the data directory is never written to,
except by a download the user allowed.
"""
import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import pathlib
import pickle
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np

from tfcnn import runfiles
from tfcnn.errors import TfcnnError

log = logging.getLogger("tfcnn.data")  # one logger for loading a dataset, whichever module warns

# Official homes of the canonical files. Tests point these at a local server.
URLS = {
    "mnist.npz": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-100-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "notMNIST_large.tar.gz": "http://yaroslavvb.com/upload/notMNIST/notMNIST_large.tar.gz",
    "notMNIST_small.tar.gz": "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz",
}
# sha256 of the official files (CIFAR md5s published by Krizhevsky: c58f3010..., eb9058c3...).
# notMNIST (Bulatov's blog) never published a checksum, so those downloads are not verified.
# Checked on download only: the offline mnist.npz in ../shared/data is a lossless repack (other sha).
SHA256 = {
    "mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "cifar-100-python.tar.gz": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    "notMNIST_large.tar.gz": None,
    "notMNIST_small.tar.gz": None,
}

_CACHE_VERSION = 2  # bump when a decoder changes what it produces (2: EXIF orientation, 16-bit scaling)


# ---------------------------------------------------------------- locating and fetching files

def resolve_data_dir(data_dir=None):
    """The explicit argument, else $TFCNN_DATA_DIR, else ./data, as an absolute path; it must exist."""
    raw = data_dir or os.environ.get("TFCNN_DATA_DIR") or "data"
    path = pathlib.Path(raw).expanduser()
    if not path.is_dir():
        raise TfcnnError(f"data directory {path} does not exist; pass --data-dir or set TFCNN_DATA_DIR")
    return path.resolve()


class _DownloadFailed(Exception):
    pass


def fetch(fname, dest_dir):
    """Fetch URLS[fname] into dest_dir, verifying SHA256[fname]; never leaves a partial file."""
    url, expected = URLS[fname], SHA256.get(fname)
    dest = dest_dir / fname
    log.info("downloading %s to %s", url, dest)
    try:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{fname}.", suffix=".part")
    except OSError as exc:
        raise _DownloadFailed(f"cannot write to {dest_dir}: {exc.strerror}") from exc
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if expected and digest.hexdigest() != expected:
            raise TfcnnError(
                f"{url} gave a file with sha256 {digest.hexdigest()}, expected {expected}; "
                f"the download is corrupt and was deleted: try again, or put a verified {fname} in {dest_dir}")
        runfiles.commit(tmp, dest)  # flushed before and after the rename
        return dest
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _DownloadFailed(f"downloading {url} failed ({one_line(exc)})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def locate(dataset, data_dir, candidates, download):
    """The first of `candidates` present in data_dir, else the downloadable one fetched there."""
    for name in candidates:
        if (data_dir / name).exists():
            return data_dir / name
    fetchable = [name for name in candidates if name in URLS]
    canonical = (fetchable or candidates)[0]
    tried = ", ".join(str(data_dir / name) for name in candidates)
    if not fetchable:
        why = "it cannot be downloaded"
    elif not download:
        why = "downloading is off"
    else:
        try:
            return fetch(canonical, data_dir)
        except _DownloadFailed as exc:
            why = str(exc)
    raise TfcnnError(f"{dataset}: no dataset file found (tried {tried}) and {why}; "
                     f"put {canonical} in {data_dir} or pass --data-dir")


def one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


# Everything a truncated or corrupt archive can raise while we read it.
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError, zipfile.BadZipFile,
            OSError, KeyError, ValueError, IndexError, AttributeError, TypeError)


@contextlib.contextmanager
def reading(path):
    """Turn any failure to parse `path` into one TfcnnError naming the file."""
    try:
        yield
    except _CORRUPT as exc:
        raise TfcnnError(f"cannot read {path} ({one_line(exc)}): it is truncated, corrupt or not in "
                         f"the expected layout; delete it and download or copy it again") from exc


# ---------------------------------------------------------------- decoded-array cache

def _cache_dir():
    return pathlib.Path(os.environ.get("TFCNN_CACHE_DIR") or "~/.cache/tfcnn").expanduser()


def _fingerprint(path):
    """Path, size and mtime of a file, or of every file under a folder."""
    path = path.resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)), p.stat()) for p in files]
    return [str(path)] + [(rel, st.st_size, st.st_mtime_ns) for rel, st in stats]


_unwritable_caches = set()


def cached(kind, path, build):
    """`build()` (a dict of arrays), memoised as an .npz keyed by the source's fingerprint."""
    fingerprint = _fingerprint(path)
    source = hashlib.sha256(fingerprint[0].encode()).hexdigest()[:12]
    version = hashlib.sha256(json.dumps([_CACHE_VERSION, fingerprint]).encode()).hexdigest()[:12]
    file = _cache_dir() / f"{kind}-{source}-{version}.npz"
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        pass  # no cache, or a folder this user cannot reach: the write below says so if it fails too
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("ignoring unreadable cache %s (%s)", file, one_line(exc))
    arrays = build()
    try:
        runfiles.makedirs(file.parent)
        # Atomic: a concurrent reader sees the old state or the whole file (and a power cut leaves one of them).
        with runfiles.atomic_path(file) as tmp, open(tmp, "wb") as out:
            np.savez(out, **arrays)
        for stale in file.parent.glob(f"{kind}-{source}-*.npz"):  # older versions of this source
            if stale != file:
                stale.unlink(missing_ok=True)
    except OSError as exc:  # a read-only or full home is no reason to fail the load
        if file.parent not in _unwritable_caches:  # one warning, not one per archive
            _unwritable_caches.add(file.parent)
            log.warning("skipping the decoded-array cache: cannot write in %s (%s); set TFCNN_CACHE_DIR to a "
                        "writable folder to keep the decoded images", file.parent, one_line(exc))
    return arrays


# ---------------------------------------------------------------- image decoding

@contextlib.contextmanager
def pil_warnings():
    """PIL's warnings inside the block: a decompression bomb (an image over Image.MAX_IMAGE_PIXELS, ~89M pixels)
    is raised as an error; the others (corrupt EXIF, truncated metadata) are dropped, as the pixels decide
    whether the image is usable, and each warning would put two more lines on a command's stderr."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode_image(source, mode, size=None):
    """One image (a path, file object or bytes) as a uint8 HWC array in `mode` ("L" or "RGB"): turned upright
    by its EXIF orientation, 16-bit samples scaled to 8 bits, resized (bilinear) to `size` (w, h) if given.
    The training images (tfcnn.data) and tfcnn.predict both decode through here. Raises what PIL raises on a
    bad file (see pil_warnings for a decompression bomb)."""
    from PIL import Image, ImageOps

    with pil_warnings(), Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to turn
        if img.mode.startswith("I;16"):  # PIL's own conversion to "L" clips at 255: every pixel came out white
            img = Image.fromarray((np.asarray(img, np.uint16) >> 8).astype(np.uint8), "L")
        if img.mode != mode:
            img = img.convert(mode)
        if size is not None and img.size != tuple(size):
            img = img.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], -1)


def decode_all(items, mode, size):
    """Decode (relpath, blob-or-path) pairs; returns (images NHWC, kept indices, skipped relpaths)."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(items), size[1], size[0], channels), np.uint8)
    kept, skipped = [], []
    for i, (rel, blob) in enumerate(items):
        try:
            img = decode_image(blob, mode, size)
        except Exception:  # PIL raises OSError, SyntaxError, struct.error, zlib.error... on bad files
            skipped.append(rel)
            continue
        out[len(kept)] = img.reshape(out.shape[1:])
        kept.append(i)
    return out[:len(kept)], np.array(kept, np.int64), skipped


def _member_parts(member):
    """A tar member's path components, ignoring a leading ./ (as `tar czf x.tgz ./dir` writes)."""
    return [p for p in member.name.split("/") if p not in ("", ".")]


def read_tar_images(path, root, suffixes):
    """{relpath under root: bytes} for image members of a tar, read in one streaming pass."""
    blobs = {}
    with reading(path), tarfile.open(path, "r|*") as tar:
        for member in tar:
            parts = _member_parts(member)
            if (not member.isfile() or len(parts) < 3 or parts[0] != root
                    or any(p.startswith(".") for p in parts)
                    or not member.name.lower().endswith(suffixes)):
                continue
            blobs["/".join(parts[1:])] = tar.extractfile(member).read()
    if not blobs:
        raise TfcnnError(f"{path} has no {'/'.join(suffixes)} images under {root}/; "
                         f"expected members like {root}/<class>/<image>")
    return blobs


def images_by_class(items, class_names, mode, size):
    """Decode {"class/.../file": blob} into (x, y, skipped), in sorted path order."""
    rels = sorted(items)
    index = {name: i for i, name in enumerate(class_names)}
    x, kept, skipped = decode_all([(r, items[r]) for r in rels], mode, size)
    y = np.array([index[rels[i].split("/")[0]] for i in kept], np.int64)
    return x, y, skipped


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a pickle can otherwise run code."""

    _ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR pickle")
        return super().find_class(module, name)


def read_pickles(path, root, names):
    """{name: unpickled dict} for members root/name of a tar (one pass) or files of a folder."""
    found = {}
    with reading(path):
        if path.is_dir():
            found = {n: (path / n).read_bytes() for n in names if (path / n).is_file()}
        else:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    parts = _member_parts(member)
                    if member.isfile() and parts[:1] == [root] and "/".join(parts[1:]) in names:
                        found["/".join(parts[1:])] = tar.extractfile(member).read()
        missing = [n for n in names if n not in found]
        if missing:
            where = f"{root}/{missing[0]}" if path.is_file() else str(path / missing[0])
            raise TfcnnError(f"{path} has no {where}; expected the canonical {root} layout")
        return {n: _ArrayUnpickler(io.BytesIO(b), encoding="bytes").load() for n, b in found.items()}
