"""Datasets: find or download the files, decode them to uint8 NHWC arrays, build tf.data pipelines.

One door in: `load(name, data_dir)` -> `Dataset`; `make_pipelines(ds, batch_size=...)` -> `Pipelines`;
`train_epochs(pipes, start_epoch=, epochs=)` for resumable training.
Names: mnist, notmnist, cifar10, cifar100[:coarse|:SUPERCLASS|:fine,names], cifar10_reptiles,
folder:PATH, and NAME:class,class for a subset of any of them.

Decoding image archives (notMNIST PNGs, CIFAR-10 JPEGs, folders) is cached as .npz under
$TFCNN_CACHE_DIR or ~/.cache/tfcnn, keyed by the source's path, size and mtime (one file per
source: a changed source replaces its old entry); the data directory is never written to,
except by a download the user allowed.
Measured on the shared copies (2 shared CPU cores, the `load` call alone, imports excluded):
cifar10 (cifar-10-jpg.tar.gz, 60k JPEGs) cold 6.7-7.3 s, warm 0.1-0.25 s; notmnist (both subset
archives, 18.7k PNGs) cold 1.3-1.4 s, warm 0.01-0.2 s; mnist (npz, not cached) 0.2-0.4 s.

CLI: python -m tfcnn.data describe DATASET [--data-dir D] [--json] [--no-download]
"""
import argparse
import collections
import contextlib
import dataclasses
import hashlib
import http.client
import io
import json
import logging
import os
import pathlib
import pickle
import sys
import tarfile
import tempfile
import typing
import urllib.request
import zipfile
import zlib

import numpy as np

from tfcnn import runfiles
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

if typing.TYPE_CHECKING:  # annotations only: loading a dataset does not import TensorFlow
    import tensorflow as tf

log = logging.getLogger(__name__)

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

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
# The 20 CIFAR-100 superclasses and their fine classes (Krizhevsky 2009, Appendix D), coarse-id order.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
AUGMENTATIONS = ("crop_flip", "shift", "none")
_CACHE_VERSION = 1  # bump when a decoder changes what it produces


@dataclasses.dataclass
class Dataset:
    """A dataset in memory: uint8 NHWC images and int64 labels 0..K-1."""

    name: str
    class_names: list
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    skipped: list = dataclasses.field(default_factory=list)
    source: str = ""
    augmentation: str = "none"
    # For a class subset: each class's id in the full dataset (cifar100:0,55,58 -> [0, 55, 58]); None: 0..K-1.
    class_ids: list = None

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)


@dataclasses.dataclass
class Pipelines:
    """Batched tf.data pipelines (float32 images, int32 labels) and the arrays behind val/test."""

    train: "tf.data.Dataset"
    val: "tf.data.Dataset | None"  # None when val_fraction is 0
    test: "tf.data.Dataset"
    x_val: np.ndarray = dataclasses.field(repr=False)
    y_val: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    train_size: int
    val_size: int
    test_size: int
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    image_shape: tuple
    seed: int = 0
    train_epoch: object = dataclasses.field(default=None, repr=False)  # epoch seed (2,) -> batches
    x_train: np.ndarray = dataclasses.field(default=None, repr=False)  # the training images, unaugmented


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


def _download(fname, dest_dir):
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
        os.replace(tmp, dest)
        return dest
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _DownloadFailed(f"downloading {url} failed ({_one_line(exc)})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _locate(dataset, data_dir, candidates, download):
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
            return _download(canonical, data_dir)
        except _DownloadFailed as exc:
            why = str(exc)
    raise TfcnnError(f"{dataset}: no dataset file found (tried {tried}) and {why}; "
                     f"put {canonical} in {data_dir} or pass --data-dir")


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


# Everything a truncated or corrupt archive can raise while we read it.
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError, zipfile.BadZipFile,
            OSError, KeyError, ValueError, IndexError, AttributeError, TypeError)


@contextlib.contextmanager
def _reading(path):
    """Turn any failure to parse `path` into one TfcnnError naming the file."""
    try:
        yield
    except _CORRUPT as exc:
        raise TfcnnError(f"cannot read {path} ({_one_line(exc)}): it is truncated, corrupt or not in "
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


def _cached(kind, path, build):
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
        log.warning("ignoring unreadable cache %s (%s)", file, _one_line(exc))
    arrays = build()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: a concurrent reader sees the old state or the whole file.
        with runfiles.atomic_path(file) as tmp, open(tmp, "wb") as out:
            np.savez(out, **arrays)
        for stale in file.parent.glob(f"{kind}-{source}-*.npz"):  # older versions of this source
            if stale != file:
                stale.unlink(missing_ok=True)
    except OSError as exc:  # a read-only or full home is no reason to fail the load
        if file.parent not in _unwritable_caches:  # one warning, not one per archive
            _unwritable_caches.add(file.parent)
            log.warning("skipping the decoded-array cache: cannot write in %s (%s); set TFCNN_CACHE_DIR to a "
                        "writable folder to keep the decoded images", file.parent, _one_line(exc))
    return arrays


# ---------------------------------------------------------------- image decoding

def _decode(blob, mode, size):
    """One image as a uint8 array in `mode` ("L" or "RGB"), resized to `size` (w, h) if needed."""
    from PIL import Image

    with Image.open(io.BytesIO(blob) if isinstance(blob, bytes) else blob) as img:
        if img.mode != mode:
            img = img.convert(mode)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _decode_all(items, mode, size):
    """Decode (relpath, blob-or-path) pairs; returns (images NHWC, kept indices, skipped relpaths)."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(items), size[1], size[0], channels), np.uint8)
    kept, skipped = [], []
    for i, (rel, blob) in enumerate(items):
        try:
            img = _decode(blob, mode, size)
        except Exception:  # PIL raises OSError, SyntaxError, struct.error, zlib.error... on bad files
            skipped.append(rel)
            continue
        out[len(kept)] = img.reshape(out.shape[1:])
        kept.append(i)
    return out[:len(kept)], np.array(kept, np.int64), skipped


def _member_parts(member):
    """A tar member's path components, ignoring a leading ./ (as `tar czf x.tgz ./dir` writes)."""
    return [p for p in member.name.split("/") if p not in ("", ".")]


def _read_tar_images(path, root, suffixes):
    """{relpath under root: bytes} for image members of a tar, read in one streaming pass."""
    blobs = {}
    with _reading(path), tarfile.open(path, "r|*") as tar:
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


def _images_by_class(items, class_names, mode, size):
    """Decode {"class/.../file": blob} into (x, y, skipped), in sorted path order."""
    rels = sorted(items)
    index = {name: i for i, name in enumerate(class_names)}
    x, kept, skipped = _decode_all([(r, items[r]) for r in rels], mode, size)
    y = np.array([index[rels[i].split("/")[0]] for i in kept], np.int64)
    return x, y, skipped


# ---------------------------------------------------------------- loaders

def _load_mnist(data_dir, download):
    path = _locate("mnist", data_dir, ["mnist.npz"], download)
    with _reading(path), np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return Dataset("mnist", [str(d) for d in range(10)],
                   arrays["x_train"][..., None].astype(np.uint8), arrays["y_train"].astype(np.int64),
                   arrays["x_test"][..., None].astype(np.uint8), arrays["y_test"].astype(np.int64),
                   source=str(path), augmentation="shift")


def _notmnist_part(data_dir, part, download):
    """(x, y, class_names, skipped, path) for notMNIST_large or notMNIST_small."""
    root = f"notMNIST_{part}"
    path = _locate("notmnist", data_dir, [f"{root}_subset.tar.gz", f"{root}.tar.gz", root], download)

    def build():
        if path.is_dir():
            items = {str(p.relative_to(path)): p for p in path.glob("*/*")
                     if p.is_file() and not p.name.startswith(".")}
        else:
            items = _read_tar_images(path, root, (".png",))
        classes = sorted({rel.split("/")[0] for rel in items})
        x, y, skipped = _images_by_class(items, classes, "L", (28, 28))
        return {"x": x, "y": y, "classes": np.array(classes), "skipped": np.array(skipped, dtype=str)}

    arrays = _cached("notmnist", path, build)
    return arrays["x"], arrays["y"], list(arrays["classes"]), list(arrays["skipped"]), path


def _load_notmnist(data_dir, download):
    # Bulatov's notMNIST: train on the (auto-cleaned) large set, test on the hand-cleaned small set.
    x_train, y_train, classes, skipped_train, train_path = _notmnist_part(data_dir, "large", download)
    x_test, y_test, test_classes, skipped_test, test_path = _notmnist_part(data_dir, "small", download)
    if test_classes != classes:
        raise TfcnnError(f"notmnist: {train_path} has letters {classes} but {test_path} has "
                         f"{test_classes}; use matching notMNIST_large and notMNIST_small files")
    skipped = [f"notMNIST_large/{s}" for s in skipped_train] + [f"notMNIST_small/{s}" for s in skipped_test]
    return Dataset("notmnist", [str(c) for c in classes], x_train, y_train, x_test, y_test,
                   skipped=skipped, source=f"{train_path} + {test_path}", augmentation="shift")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a pickle can otherwise run code."""

    _ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR pickle")
        return super().find_class(module, name)


def _read_pickles(path, root, names):
    """{name: unpickled dict} for members root/name of a tar (one pass) or files of a folder."""
    found = {}
    with _reading(path):
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


def _cifar_split(batches, label_key, path):
    """(NHWC images, labels) from CIFAR batch dicts, whose 3072-byte rows are R, G, B 32x32 planes."""
    with _reading(path):
        data = np.concatenate([np.asarray(b[b"data"], np.uint8).reshape(-1, 3072) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _load_cifar10(data_dir, download):
    root = "cifar-10-batches-py"
    path = _locate("cifar10", data_dir, ["cifar-10-python.tar.gz", root, "cifar-10-jpg.tar.gz"], download)
    if path.name == "cifar-10-jpg.tar.gz":
        return _load_cifar10_jpg(path, name="cifar10")

    def build():  # ~1.7 s of gunzip + unpickling per load without the cache
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        batches = _read_pickles(path, root, names)
        x_train, y_train = _cifar_split([batches[n] for n in names[:5]], b"labels", path)
        x_test, y_test = _cifar_split([batches["test_batch"]], b"labels", path)
        with _reading(path):
            classes = np.array([c.decode() for c in batches["batches.meta"][b"label_names"]], dtype=str)
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": classes}

    a = _cached("cifar10", path, build)
    return Dataset("cifar10", [str(c) for c in a["classes"]], a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   source=str(path), augmentation="crop_flip")


def _load_cifar10_jpg_archive(data_dir, download):
    """cifar10_jpg: the JPEG class-folder archive, chosen explicitly even when the pickles are present."""
    return _load_cifar10_jpg(_locate("cifar10_jpg", data_dir, ["cifar-10-jpg.tar.gz"], download), name="cifar10_jpg")


def _load_cifar10_jpg(path, name):
    def build():
        blobs = _read_tar_images(path, "cifar-10-jpg", (".jpg", ".jpeg", ".png"))
        arrays = {}
        for split in ("train", "test"):
            items = {rel[len(split) + 1:]: b for rel, b in blobs.items() if rel.startswith(split + "/")}
            found = sorted({rel.split("/")[0] for rel in items})
            if found != sorted(CIFAR10_CLASSES):
                raise TfcnnError(f"{path}: cifar-10-jpg/{split}/ has class folders {found}, "
                                 f"expected the 10 CIFAR-10 classes {CIFAR10_CLASSES}")
            x, y, skipped = _images_by_class(items, CIFAR10_CLASSES, "RGB", (32, 32))
            arrays.update({f"x_{split}": x, f"y_{split}": y,
                           f"skipped_{split}": np.array([f"cifar-10-jpg/{split}/{s}" for s in skipped], dtype=str)})
        return arrays

    a = _cached("cifar10_jpg", path, build)
    return Dataset(name, list(CIFAR10_CLASSES), a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   skipped=list(a["skipped_train"]) + list(a["skipped_test"]),
                   source=str(path), augmentation="crop_flip")


def _load_cifar100(data_dir, download, classes=None):
    root = "cifar-100-python"
    path = _locate("cifar100", data_dir, ["cifar-100-python.tar.gz", root], download)

    def build():
        parts = _read_pickles(path, root, ["train", "test", "meta"])
        # Images once (with the fine labels); the coarse labels come straight from the same pickles.
        x_train, y_train = _cifar_split([parts["train"]], b"fine_labels", path)
        x_test, y_test = _cifar_split([parts["test"]], b"fine_labels", path)
        arrays = {"x_train": x_train, "x_test": x_test, "y_train_fine": y_train, "y_test_fine": y_test}
        with _reading(path):
            arrays["y_train_coarse"] = np.asarray(parts["train"][b"coarse_labels"], np.int64)
            arrays["y_test_coarse"] = np.asarray(parts["test"][b"coarse_labels"], np.int64)
            if (len(arrays["y_train_coarse"]), len(arrays["y_test_coarse"])) != (len(y_train), len(y_test)):
                raise ValueError("coarse_labels and fine_labels differ in length")
            for level in ("fine", "coarse"):
                arrays[f"names_{level}"] = np.array([c.decode() for c in parts["meta"][f"{level}_label_names".encode()]],
                                                    dtype=str)
        return arrays

    a = _cached("cifar100", path, build)
    level = "coarse" if classes == "coarse" else "fine"
    ds = Dataset("cifar100:coarse" if level == "coarse" else "cifar100", [str(c) for c in a[f"names_{level}"]],
                 a["x_train"], a[f"y_train_{level}"], a["x_test"], a[f"y_test_{level}"],
                 source=str(path), augmentation="crop_flip")
    if classes in (None, "", "fine", "coarse"):
        return ds
    if isinstance(classes, str) and classes in CIFAR100_SUPERCLASSES:
        return _select(ds, CIFAR100_SUPERCLASSES[classes], name=f"cifar100:{classes}")
    return _select(ds, classes, hint=f"or a superclass ({', '.join(CIFAR100_SUPERCLASSES)}), or coarse")


def _load_cifar10_reptiles(data_dir, download):
    # Lab exercise: CIFAR-10 plus 5 CIFAR-100 reptile classes, labels 10-14 after the CIFAR-10 ones.
    c10 = _load_cifar10(data_dir, download)
    reptiles = _load_cifar100(data_dir, download, classes="reptiles")
    k = c10.num_classes
    return Dataset("cifar10_reptiles", c10.class_names + reptiles.class_names,
                   np.concatenate([c10.x_train, reptiles.x_train]),
                   np.concatenate([c10.y_train, reptiles.y_train + k]),
                   np.concatenate([c10.x_test, reptiles.x_test]),
                   np.concatenate([c10.y_test, reptiles.y_test + k]),
                   skipped=c10.skipped, source=f"{c10.source} + {reptiles.source}",
                   augmentation="crop_flip")


def _load_folder(spec):
    """folder:PATH: one sub-folder per class, optionally under train/ and test/."""
    from PIL import Image

    path = pathlib.Path(spec).expanduser()
    if not path.is_dir():
        raise TfcnnError(f"folder {path} does not exist; pass folder:PATH with one sub-folder per class")
    has_split = (path / "train").is_dir()
    roots = {"train": path / "train", "test": path / "test"} if has_split else {"train": path}

    def class_dirs(root):
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def build():
        class_names = class_dirs(roots["train"])
        if not class_names:
            raise TfcnnError(f"{roots['train']} has no class sub-folders; put each class's images "
                             f"in its own folder, e.g. {roots['train']}/cat/1.jpg")
        items, skipped, sizes, modes = {}, [], collections.Counter(), set()
        for split, root in roots.items():
            if not root.is_dir():
                continue
            extra = sorted(set(class_dirs(root)) - set(class_names))
            if extra:
                raise TfcnnError(f"{root} has classes {extra} that {roots['train']} lacks")
            for name in class_names:
                for file in sorted(p for p in (root / name).rglob("*")
                                   if p.is_file() and not p.name.startswith(".")):
                    rel = str(file.relative_to(path))
                    try:  # header only: cheap, and finds the common size before decoding
                        with Image.open(file) as img:
                            sizes[img.size] += 1
                            modes.add(img.mode)
                    except Exception:
                        skipped.append(rel)
                        continue
                    items.setdefault(split, {})[rel] = file
        if not sizes:
            raise TfcnnError(f"no readable images under {path}")
        size = sizes.most_common(1)[0][0]
        mode = "L" if modes <= {"L", "1"} else "RGB"
        arrays = {}
        for split, split_items in items.items():
            prefix = "train/" if has_split and split == "train" else "test/" if has_split else ""
            rels = sorted(split_items)
            x, kept, bad = _decode_all([(r, split_items[r]) for r in rels], mode, size)
            skipped += bad
            arrays[f"x_{split}"] = x
            arrays[f"y_{split}"] = np.array(
                [class_names.index(rels[i][len(prefix):].split("/")[0]) for i in kept], np.int64)
        arrays["classes"] = np.array(class_names)
        arrays["skipped"] = np.array(skipped, dtype=str)
        return arrays

    a = _cached("folder", path, build)
    class_names = [str(c) for c in a["classes"]]
    if "x_test" in a:
        x_train, y_train, x_test, y_test = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    else:
        n_test = int(round(0.2 * len(a["y_train"])))
        test = np.sort(_stratified_take(a["y_train"], n_test, np.random.default_rng(0)))
        train = np.setdiff1d(np.arange(len(a["y_train"])), test)
        x_train, y_train = a["x_train"][train], a["y_train"][train]
        x_test, y_test = a["x_train"][test], a["y_train"][test]
        log.warning("%s has no test/ folder: holding out a seeded (0) stratified 20%% of its images "
                    "(%d) as the test split", path, n_test)
    return Dataset(f"folder:{spec}", class_names, x_train, y_train, x_test, y_test,
                   skipped=list(a["skipped"]), source=str(path),
                   augmentation="shift" if x_train.shape[-1] == 1 else "crop_flip")


_LOADERS = {
    "mnist": _load_mnist,
    "notmnist": _load_notmnist,
    "cifar10": _load_cifar10,
    "cifar10_jpg": _load_cifar10_jpg_archive,
    "cifar100": _load_cifar100,
    "cifar10_reptiles": _load_cifar10_reptiles,
}
# What each dataset reads from the data directory, first match wins (shown by `describe --help`).
FILES = {
    "mnist": "mnist.npz (Keras layout)",
    "notmnist": "notMNIST_large_subset.tar.gz | notMNIST_large.tar.gz | notMNIST_large/, and the "
                "same for notMNIST_small (test)",
    "cifar10": "cifar-10-python.tar.gz | cifar-10-batches-py/ | cifar-10-jpg.tar.gz",
    "cifar10_jpg": "cifar-10-jpg.tar.gz (JPEG q75 class folders; lossy, so a few points below the pickles)",
    "cifar100": "cifar-100-python.tar.gz | cifar-100-python/",
    "cifar10_reptiles": "the cifar10 and cifar100 files",
}


def list_datasets():
    """Registered dataset names (plus `folder:PATH` for a folder of class sub-folders)."""
    return list(_LOADERS)


def load(name, data_dir=None, *, download=True, classes=None):
    """Load a dataset by name; `classes` (or NAME:a,b) keeps a subset, relabelled in label order."""
    if name.startswith("folder:"):
        ds = _load_folder(name[len("folder:"):])
        return _select(ds, classes) if classes else ds
    base, _, option = name.partition(":")
    base = base.lower()
    if base not in _LOADERS:
        raise TfcnnError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}, or folder:PATH")
    if classes is not None and not isinstance(classes, str):
        classes = ",".join(str(c).strip() for c in classes)  # ["reptiles"] and "reptiles" alike
    if option and classes and option != classes:
        raise TfcnnError(f"both {name!r} and classes={classes!r} select classes; use one of them")
    classes = option or classes
    data_dir = resolve_data_dir(data_dir)
    if base == "cifar100":
        ds = _load_cifar100(data_dir, download, classes)
    else:
        ds = _LOADERS[base](data_dir, download)
        if classes:
            ds = _select(ds, classes)
    if ds.skipped:
        shown = ", ".join(ds.skipped[:5]) + (f" and {len(ds.skipped) - 5} more" if len(ds.skipped) > 5 else "")
        log.warning("%s: skipped %d unreadable image(s): %s", ds.name, len(ds.skipped), shown)
    return ds


def _select(ds, classes, name=None, hint=""):
    """Keep `classes` (names or ids, list or comma string), relabelled 0..K-1 in label order."""
    wanted = classes.split(",") if isinstance(classes, str) else list(classes)
    ids = set()
    for c in wanted:
        c = str(c).strip()
        if c in ds.class_names:
            ids.add(ds.class_names.index(c))
        elif c.isdigit() and int(c) < ds.num_classes:
            ids.add(int(c))
        else:
            valid = ", ".join(ds.class_names) if ds.num_classes <= 20 else \
                f"ids 0-{ds.num_classes - 1} or the names `python -m tfcnn.data describe {ds.name}` lists"
            raise TfcnnError(f"{ds.name} has no class {c!r}; valid: {valid}"
                             f"{' (or ids 0-' + str(ds.num_classes - 1) + ')' if ds.num_classes <= 20 else ''}"
                             f"{', ' + hint if hint else ''}")
    ids = sorted(ids)
    present = set(np.unique(ds.y_train).tolist()) | set(np.unique(ds.y_test).tolist())
    empty = [f"{i} {ds.class_names[i]}" for i in ids if i not in present]
    if empty:
        raise TfcnnError(f"{ds.name} has no images of class {', '.join(empty)} in {ds.source}; "
                         f"classes with images: {_populated_summary(ds)}")
    relabel = np.full(ds.num_classes, -1, np.int64)
    relabel[ids] = np.arange(len(ids))
    names = [ds.class_names[i] for i in ids]
    train, test = np.isin(ds.y_train, ids), np.isin(ds.y_test, ids)
    return dataclasses.replace(
        ds, name=name or f"{ds.name}:{','.join(names)}", class_names=names,
        class_ids=[ds.class_ids[i] for i in ids] if ds.class_ids else ids,
        x_train=ds.x_train[train], y_train=relabel[ds.y_train[train]],
        x_test=ds.x_test[test], y_test=relabel[ds.y_test[test]])


def _populated_summary(ds):
    """'0 apple, 5 bed, ...' for the classes that hold at least one image."""
    present = np.union1d(np.unique(ds.y_train), np.unique(ds.y_test)).astype(int)
    return ", ".join(f"{i} {ds.class_names[i]}" for i in present)


# ---------------------------------------------------------------- splits and statistics

def _stratified_take(y, n, rng):
    """Indices of exactly n items of y, per-class counts proportional (largest remainder), shuffled."""
    if n == 0:
        return np.zeros(0, np.int64)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: n - take.sum()]
    take[extra] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return rng.permutation(np.concatenate(picked)).astype(np.int64)


def split_validation(x, y, fraction=0.1, seed=0):
    """Seeded, stratified, shuffled split of (x, y) into (x_train, y_train, x_val, y_val)."""
    if not 0 <= fraction < 1:
        raise TfcnnError(f"validation fraction {fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    val = _stratified_take(y, int(round(fraction * len(y))), rng)
    rest = np.ones(len(y), bool)
    rest[val] = False
    train = rng.permutation(np.flatnonzero(rest))
    return x[train], y[train], x[val], y[val]


def normalization_stats(x_train):
    """Per-channel mean and std (float32, shape (C,)) of uint8 NHWC images, on the 0-255 scale."""
    x_train = np.asarray(x_train)
    if x_train.ndim != 4 or not len(x_train):
        raise TfcnnError(f"normalization_stats needs a non-empty NHWC batch, got shape {x_train.shape}")
    total = np.zeros(x_train.shape[-1])
    squares = np.zeros(x_train.shape[-1])
    for start in range(0, len(x_train), 2048):  # float64 chunks: exact, without an 8x copy of the set
        chunk = x_train[start:start + 2048].astype(np.float64)
        total += chunk.sum(axis=(0, 1, 2))
        squares += np.square(chunk).sum(axis=(0, 1, 2))
    count = x_train.size / x_train.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    return mean.astype(np.float32), std.astype(np.float32)


# ---------------------------------------------------------------- tf.data pipelines

def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def augment_fn(kind, image_shape, cutout=0, fill=0, translate=None, pad_mode="zeros"):
    """A batch function images(NHWC, any dtype)[, seed(2,)][, mirror(N, 1) bool] -> augmented images, same shape
    and dtype. `mirror` chooses the images to flip (alternating flip) instead of a coin per image.

    crop_flip: 4-pixel zero pad, random crop back, random horizontal flip (He et al. 2016, CIFAR).
    shift: 2-pixel zero pad and random crop: digits and letters must not be mirrored.
    translate: the pad in pixels instead (0: no translation); pad_mode reflect mirrors the border instead of zeros
    (airbench: 2, reflect).
    cutout > 0: after that, a cutout x cutout square at a uniform random centre (clipped at the border)
    is set to `fill` (per-channel, the training mean: zero after the model's normalisation), as in
    DeVries & Taylor 2017 (16 px for CIFAR-10).
    """
    if kind not in AUGMENTATIONS:
        raise TfcnnError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}")
    tf = _tf()
    if cutout < 0:
        raise TfcnnError(f"cutout size {cutout} must be 0 (off) or a positive number of pixels")
    if kind == "none" and not cutout:
        return lambda images, seed=None, mirror=None: images
    height, width = int(image_shape[0]), int(image_shape[1])
    pad, flip = (4, True) if kind == "crop_flip" else (2, False) if kind == "shift" else (0, False)
    if translate is not None and kind != "none":
        pad = int(translate)
    if pad_mode not in ("zeros", "reflect"):
        raise TfcnnError(f"unknown pad mode {pad_mode!r}; choose zeros or reflect")
    if pad_mode == "reflect" and pad >= min(height, width):
        raise TfcnnError(f"reflect padding of {pad} pixels needs images larger than that; got {height}x{width}")

    def erase(images, seed):
        n = tf.shape(images)[0]
        cy = tf.random.stateless_uniform([n, 1, 1], seed, 0, height, dtype=tf.int32)
        cx = tf.random.stateless_uniform([n, 1, 1], tf.random.experimental.stateless_fold_in(seed, 1),
                                         0, width, dtype=tf.int32)
        top, left = cy - cutout // 2, cx - cutout // 2
        rows, cols = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
        hole = (rows >= top) & (rows < top + cutout) & (cols >= left) & (cols < left + cutout)
        filler = tf.cast(tf.reshape(tf.constant(fill, tf.float32), [1, 1, 1, -1]), images.dtype)
        return tf.where(hole[..., None], filler, images)

    def augment(images, seed=None, mirror=None):
        if seed is None:
            seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        cutout_seed = tf.random.experimental.stateless_fold_in(seed, 3)
        if kind == "none":
            return erase(images, cutout_seed)
        n = tf.shape(images)[0]
        dy = tf.random.stateless_uniform([n, 1], seeds[0], 0, 2 * pad + 1, dtype=tf.int32)
        dx = tf.random.stateless_uniform([n, 1], seeds[1], 0, 2 * pad + 1, dtype=tf.int32)
        rows = dy + tf.range(height)[None]
        cols = dx + tf.range(width)[None]
        if flip:
            if mirror is None:
                mirror = tf.random.stateless_uniform([n, 1], seeds[2]) < 0.5
            cols = tf.where(mirror, dx + tf.range(width - 1, -1, -1)[None], cols)
        # One gather per axis crops (and mirrors) every image at its own offset: no per-image loop.
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]],
                        mode="REFLECT" if pad_mode == "reflect" else "CONSTANT")
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        out = tf.gather(out, cols, axis=2, batch_dims=1)
        return erase(out, cutout_seed) if cutout else out

    return augment


def class_weights(y, num_classes, kind="none"):
    """Per-class loss weights of the train labels y, or None for kind "none".

    balanced: scikit-learn's n / (num_classes x n_class), the weights Keras' `class_weight` expects;
    sqrt: their square root, a milder push for rare classes (for macro F1, full balancing trades too
    much precision on the rare classes for recall).
    """
    if kind == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    if len(present) < num_classes:
        raise TfcnnError(f"--class-weight {kind} needs training images of every class; "
                         f"{num_classes - len(present)} of {num_classes} have none")
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=y).astype(np.float32)
    return np.sqrt(weights) if kind == "sqrt" else weights


CHUNK_BATCHES = 32  # train batches gathered and augmented per op


def make_pipelines(ds, *, batch_size, val_fraction=0.1, seed=0, augment=True, normalize=False,
                   limit_train=None, limit_test=None, cache=True, one_hot=False, cutout=0, class_weight="none",
                   flip="random", translate=None, pad_mode="zeros"):
    """Split off validation, then batch train (shuffled, augmented), val and test as tf.data.

    Images stay on the raw 0-255 scale unless normalize=True ((x - mean) / std, train-only stats);
    `augment` may also name a kind from AUGMENTATIONS instead of the dataset's default;
    one_hot=True gives float32 one-hot labels (for label smoothing) instead of int32 ids;
    cutout=N erases an N x N square of each train image (see augment_fn);
    class_weight "balanced" or "sqrt" adds a per-image loss weight to the train batches (see class_weights);
    flip "alternate": a seeded half of the images is flipped in even epochs, the other half in odd ones
    (airbench's alternating flip: every image is seen both ways in any two epochs); translate / pad_mode:
    see augment_fn.
    """
    if flip not in ("random", "alternate"):
        raise TfcnnError(f"unknown flip {flip!r}; choose random or alternate")
    if batch_size < 1:
        raise TfcnnError(f"batch size {batch_size} must be at least 1")
    x_train, y_train, x_val, y_val = split_validation(ds.x_train, ds.y_train, val_fraction, seed)
    if limit_train is not None and limit_train < len(y_train):
        if limit_train < 1:
            raise TfcnnError(f"limit_train {limit_train} must be at least 1")
        keep = _stratified_take(y_train, limit_train, np.random.default_rng(seed + 1))
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = ds.x_test, ds.y_test
    if limit_test is not None and limit_test < len(y_test):
        # Test sets stored class by class (the CIFAR JPEG archive) would give one class from a prefix.
        keep = np.sort(_stratified_take(y_test, limit_test, np.random.default_rng(0)))
        x_test, y_test = x_test[keep], y_test[keep]
    mean, std = normalization_stats(x_train)
    weights = class_weights(y_train, ds.num_classes, class_weight)
    kind = ds.augmentation if augment is True else "none" if augment is False else augment
    tf = _tf()
    fill = np.clip(np.round(mean), 0, 255) if x_train.dtype == np.uint8 else mean
    augment_batch = augment_fn(kind, ds.image_shape, cutout=cutout if augment is not False else 0, fill=fill,
                               translate=translate, pad_mode=pad_mode)
    auto = tf.data.AUTOTUNE
    scale = np.where(std > 0, std, 1).astype(np.float32)

    def to_model(images, labels):
        images = (images - mean) / scale if normalize else images
        return images, tf.one_hot(labels, ds.num_classes) if one_hot else labels

    def eval_pipeline(x, y):
        data = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(batch_size)
        if cache:  # keeps the uint8 batches: later epochs skip slicing and batching
            data = data.cache()
        return data.map(lambda images, labels: to_model(tf.cast(images, tf.float32), labels),
                        num_parallel_calls=auto).prefetch(auto)

    # Train batches are gathered from in-memory tensors by a per-epoch permutation (no element-wise
    # shuffle buffer): vectorised, and an epoch's order and augmentation follow from its seed alone,
    # so `train_epochs` can resume a run at epoch e with exactly the batches it would have seen.
    # Gathering and augmenting CHUNK_BATCHES batches per op (uint8, cast per batch after) instead of
    # one: tiny models (LeNet-5: ~6 ms a step on 2 cores) otherwise lose ~15% to per-batch op
    # overhead (benchmarks/input_batches.py).
    images_t, labels_t = tf.constant(x_train), tf.constant(y_train.astype(np.int32))
    fold_in = tf.random.experimental.stateless_fold_in
    n_train = len(y_train)
    # Alternating flip: which images are mirrored in even epochs, fixed by the run's seed.
    first_flip = tf.constant(np.random.default_rng([seed, 7]).random(n_train) < 0.5)
    full = n_train // batch_size * batch_size  # images in full batches; the rest make one short batch
    chunk = CHUNK_BATCHES * batch_size

    def to_train(images, labels):
        batch = to_model(tf.cast(images, tf.float32), labels)
        # With class weights, (images, labels, sample weights): Keras' train_step weighs each image's loss.
        return batch if weights is None else (*batch, tf.gather(weights, labels))

    def train_epoch(epoch_seed):
        """One epoch of shuffled, augmented batches, determined by epoch_seed (int64, shape (2,))."""
        order = tf.argsort(tf.random.stateless_uniform([n_train], fold_in(epoch_seed, 0)))

        def augmented(start, stop):
            idx = order[start:stop]
            mirror = None
            if flip == "alternate":
                odd = tf.equal(epoch_seed[1] % 2, 1)
                mirror = tf.math.logical_xor(tf.gather(first_flip, idx), odd)[:, None]
            images = augment_batch(tf.gather(images_t, idx), fold_in(epoch_seed, start // batch_size + 1), mirror)
            return images, tf.gather(labels_t, idx)

        def batches(images, labels):
            return tf.data.Dataset.from_tensor_slices(
                (tf.reshape(images, [-1, batch_size, *images.shape[1:]]), tf.reshape(labels, [-1, batch_size])))

        epoch = (tf.data.Dataset.range(0, full, chunk)
                 .map(lambda start: augmented(start, tf.minimum(start + chunk, full))).prefetch(1)
                 .flat_map(batches))
        if full < n_train:
            epoch = epoch.concatenate(tf.data.Dataset.from_tensors(tf.constant(full, tf.int64))
                                      .map(lambda start: augmented(start, n_train)))
        return epoch.map(to_train, num_parallel_calls=auto)

    # A new seeded epoch seed each time the dataset is iterated: fit(train, epochs=N) reshuffles.
    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
    return Pipelines(
        train=epoch_seeds.flat_map(train_epoch).prefetch(auto),
        val=eval_pipeline(x_val, y_val) if len(y_val) else None, test=eval_pipeline(x_test, y_test),
        x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        train_size=len(y_train), val_size=len(y_val), test_size=len(y_test),
        mean=mean, std=std, class_names=list(ds.class_names), image_shape=ds.image_shape,
        seed=seed, train_epoch=train_epoch, x_train=x_train)


def train_epochs(pipes, *, start_epoch=0, epochs, seed=None):
    """Train batches of epochs start_epoch..epochs-1 in one dataset; epoch e depends only on (seed, e).

    For model.fit(..., epochs=epochs, steps_per_epoch=ceil(train_size / batch_size)) resumed after
    epoch start_epoch: the remaining epochs see the same order and augmentation as an unbroken run.
    """
    tf = _tf()
    seed = pipes.seed if seed is None else seed
    return (tf.data.Dataset.range(start_epoch, epochs)
            .flat_map(lambda e: pipes.train_epoch(tf.stack([tf.constant(seed, tf.int64), e])))
            .prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------- CLI

def _counts(y, class_names):
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts)}


def describe(ds):
    """A JSON-ready summary: shapes, per-split per-class counts (with the default 10% validation)."""
    _, _, _, y_val = split_validation(np.arange(len(ds.y_train)), ds.y_train, 0.1, 0)
    return {
        "dataset": ds.name, "image_shape": list(ds.image_shape), "num_classes": ds.num_classes,
        "class_names": ds.class_names, "class_ids": ds.class_ids or list(range(ds.num_classes)),
        "counts": {"train": _counts(ds.y_train, ds.class_names), "test": _counts(ds.y_test, ds.class_names),
                   "validation": _counts(y_val, ds.class_names)},
        "train_size": len(ds.y_train), "test_size": len(ds.y_test),
        "classes_with_images": [ds.class_names[i] for i in np.union1d(ds.y_train, ds.y_test).astype(int)],
        "skipped": list(ds.skipped), "source": ds.source,
    }


def main(argv=None):
    files = "\n".join(f"  {name:17} {what}" for name, what in FILES.items())
    parser = ArgumentParser(prog="python -m tfcnn.data", description="Inspect tfcnn datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list dataset names")
    cmd = sub.add_parser(
        "describe", help="shape, classes and per-split counts of a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"files read from the data directory (first match wins):\n{files}\n  "
               f"{'folder:PATH':17} PATH/<class>/* or PATH/{{train,test}}/<class>/*\n"
               f"name suffixes: cifar100:coarse, cifar100:SUPERCLASS, NAME:class1,class2")
    cmd.add_argument("dataset", help="e.g. mnist, cifar10, cifar100:reptiles, folder:PATH")
    cmd.add_argument("--data-dir", help="folder with the dataset files (default $TFCNN_DATA_DIR, else ./data)")
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(list_datasets() + ["folder:PATH"]))
        return 0
    info = describe(load(args.dataset, args.data_dir, download=not args.no_download))
    if args.json:
        print(json.dumps(info))
        return 0
    counts = info["counts"]
    width = max(len(c) for c in info["class_names"] + ["class"])
    print(f"dataset      {info['dataset']}\nsource       {info['source']}\n"
          f"image shape  {'x'.join(map(str, info['image_shape']))}\n"
          f"classes      {info['num_classes']}\n"
          f"sizes        train {info['train_size']} (of which 10% validation "
          f"{sum(counts['validation'].values())}), test {info['test_size']}\n"
          f"skipped      {len(info['skipped'])}{': ' if info['skipped'] else ''}{', '.join(info['skipped'])}\n")
    populated = info["classes_with_images"]
    if len(populated) < info["num_classes"]:
        # A subset copy (e.g. 13 of CIFAR-100's classes): say which classes can be selected.
        print(f"only {len(populated)} of the {info['num_classes']} classes hold images; "
              f"the other {info['num_classes'] - len(populated)} are not listed\n")
    print(f"{'class':{width}}  {'train':>6}  {'(val)':>6}  {'test':>6}")
    for c in populated:
        print(f"{c:{width}}  {counts['train'][c]:6}  {counts['validation'][c]:6}  {counts['test'][c]:6}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
