"""Datasets: find or download the files, decode them to uint8 NHWC arrays, split them, take their statistics.

One door in: `load(name, data_dir)` -> `Dataset`. The tf.data pipelines built from it are tfcnn.pipelines.
Names: mnist, notmnist, cifar10, cifar100[:coarse|:SUPERCLASS|:fine,names], cifar10_reptiles,
folder:PATH, and NAME:class,class for a subset of any of them.

Finding, downloading, verifying, reading and decoding the files, and the decoded-array cache, are
tfcnn.datafiles.

Measured on the shared copies (2 shared CPU cores, the `load` call alone, imports excluded):
cifar10 (cifar-10-jpg.tar.gz, 60k JPEGs) cold 6.7-7.3 s, warm 0.1-0.25 s; notmnist (both subset
archives, 18.7k PNGs) cold 1.3-1.4 s, warm 0.01-0.2 s; mnist (npz, not cached) 0.2-0.4 s.

CLI: python -m tfcnn.data describe DATASET [--data-dir D] [--json] [--no-download]
"""
import argparse
import collections
import dataclasses
import json
import logging
import pathlib
import sys

import numpy as np

from tfcnn.datafiles import (cached, decode_all, images_by_class, locate, pil_warnings, read_pickles, read_tar_images,
                             reading, resolve_data_dir)
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- loaders

def _load_mnist(data_dir, download):
    path = locate("mnist", data_dir, ["mnist.npz"], download)
    with reading(path), np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return Dataset("mnist", [str(d) for d in range(10)],
                   arrays["x_train"][..., None].astype(np.uint8), arrays["y_train"].astype(np.int64),
                   arrays["x_test"][..., None].astype(np.uint8), arrays["y_test"].astype(np.int64),
                   source=str(path), augmentation="shift")


def _notmnist_part(data_dir, part, download):
    """(x, y, class_names, skipped, path) for notMNIST_large or notMNIST_small."""
    root = f"notMNIST_{part}"
    path = locate("notmnist", data_dir, [f"{root}_subset.tar.gz", f"{root}.tar.gz", root], download)

    def build():
        if path.is_dir():
            items = {str(p.relative_to(path)): p for p in path.glob("*/*")
                     if p.is_file() and not p.name.startswith(".")}
        else:
            items = read_tar_images(path, root, (".png",))
        classes = sorted({rel.split("/")[0] for rel in items})
        x, y, skipped = images_by_class(items, classes, "L", (28, 28))
        return {"x": x, "y": y, "classes": np.array(classes), "skipped": np.array(skipped, dtype=str)}

    arrays = cached("notmnist", path, build)
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


def _cifar_split(batches, label_key, path):
    """(NHWC images, labels) from CIFAR batch dicts, whose 3072-byte rows are R, G, B 32x32 planes."""
    with reading(path):
        data = np.concatenate([np.asarray(b[b"data"], np.uint8).reshape(-1, 3072) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _load_cifar10(data_dir, download):
    root = "cifar-10-batches-py"
    path = locate("cifar10", data_dir, ["cifar-10-python.tar.gz", root, "cifar-10-jpg.tar.gz"], download)
    if path.name == "cifar-10-jpg.tar.gz":
        return _load_cifar10_jpg(path, name="cifar10")

    def build():  # gunzip + unpickling, the slow part the cache saves (docs/results/cifar.md, "The archives")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        batches = read_pickles(path, root, names)
        x_train, y_train = _cifar_split([batches[n] for n in names[:5]], b"labels", path)
        x_test, y_test = _cifar_split([batches["test_batch"]], b"labels", path)
        with reading(path):
            classes = np.array([c.decode() for c in batches["batches.meta"][b"label_names"]], dtype=str)
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": classes}

    a = cached("cifar10", path, build)
    return Dataset("cifar10", [str(c) for c in a["classes"]], a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   source=str(path), augmentation="crop_flip")


def _load_cifar10_jpg_archive(data_dir, download):
    """cifar10_jpg: the JPEG class-folder archive, chosen explicitly even when the pickles are present."""
    return _load_cifar10_jpg(locate("cifar10_jpg", data_dir, ["cifar-10-jpg.tar.gz"], download), name="cifar10_jpg")


def _load_cifar10_jpg(path, name):
    def build():
        blobs = read_tar_images(path, "cifar-10-jpg", (".jpg", ".jpeg", ".png"))
        arrays = {}
        for split in ("train", "test"):
            items = {rel[len(split) + 1:]: b for rel, b in blobs.items() if rel.startswith(split + "/")}
            found = sorted({rel.split("/")[0] for rel in items})
            if found != sorted(CIFAR10_CLASSES):
                raise TfcnnError(f"{path}: cifar-10-jpg/{split}/ has class folders {found}, "
                                 f"expected the 10 CIFAR-10 classes {CIFAR10_CLASSES}")
            x, y, skipped = images_by_class(items, CIFAR10_CLASSES, "RGB", (32, 32))
            arrays.update({f"x_{split}": x, f"y_{split}": y,
                           f"skipped_{split}": np.array([f"cifar-10-jpg/{split}/{s}" for s in skipped], dtype=str)})
        return arrays

    a = cached("cifar10_jpg", path, build)
    return Dataset(name, list(CIFAR10_CLASSES), a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                   skipped=list(a["skipped_train"]) + list(a["skipped_test"]),
                   source=str(path), augmentation="crop_flip")


def _load_cifar100(data_dir, download, classes=None):
    root = "cifar-100-python"
    path = locate("cifar100", data_dir, ["cifar-100-python.tar.gz", root], download)

    def build():
        parts = read_pickles(path, root, ["train", "test", "meta"])
        # Images once (with the fine labels); the coarse labels come straight from the same pickles.
        x_train, y_train = _cifar_split([parts["train"]], b"fine_labels", path)
        x_test, y_test = _cifar_split([parts["test"]], b"fine_labels", path)
        arrays = {"x_train": x_train, "x_test": x_test, "y_train_fine": y_train, "y_test_fine": y_test}
        with reading(path):
            arrays["y_train_coarse"] = np.asarray(parts["train"][b"coarse_labels"], np.int64)
            arrays["y_test_coarse"] = np.asarray(parts["test"][b"coarse_labels"], np.int64)
            if (len(arrays["y_train_coarse"]), len(arrays["y_test_coarse"])) != (len(y_train), len(y_test)):
                raise ValueError("coarse_labels and fine_labels differ in length")
            for level in ("fine", "coarse"):
                arrays[f"names_{level}"] = np.array([c.decode() for c in parts["meta"][f"{level}_label_names".encode()]],
                                                    dtype=str)
        return arrays

    a = cached("cifar100", path, build)
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
    from PIL import ExifTags, Image

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
        items, skipped, sizes, modes, files = {}, [], collections.Counter(), set(), collections.Counter()
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
                    files[split] += 1
                    try:  # header only: cheap, and finds the common (upright) size before decoding
                        with pil_warnings(), Image.open(file) as img:
                            # Turned by 90 degrees? Only where the header holds EXIF: PIL's getexif() on a PNG
                            # without it decodes the whole image to look behind the pixels.
                            turned = "exif" in img.info and img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
                            sizes[img.size[::-1] if turned else img.size] += 1
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
            x, kept, bad = decode_all([(r, split_items[r]) for r in rels], mode, size)
            skipped += bad
            arrays[f"x_{split}"] = x
            arrays[f"y_{split}"] = np.array(
                [class_names.index(rels[i][len(prefix):].split("/")[0]) for i in kept], np.int64)
        for split, root in roots.items():  # a split of only unreadable files would be an empty one
            if files[split] and not len(arrays.get(f"y_{split}", ())):
                raise TfcnnError(f"none of the {files[split]} files under {root} is an image PIL can read")
        if not files["train"]:
            raise TfcnnError(f"no images under {roots['train']}; put each class's images in its own folder, "
                             f"e.g. {roots['train']}/{class_names[0]}/1.jpg")
        arrays["classes"] = np.array(class_names)
        arrays["skipped"] = np.array(skipped, dtype=str)
        return arrays

    a = cached("folder", path, build)
    class_names = [str(c) for c in a["classes"]]
    if "x_test" in a:
        x_train, y_train, x_test, y_test = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    else:
        n_test = int(round(0.2 * len(a["y_train"])))
        test = np.sort(stratified_take(a["y_train"], n_test, np.random.default_rng(0)))
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
        elif c.isascii() and c.isdigit() and int(c) < ds.num_classes:  # "²".isdigit(), but int("²") fails
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

def stratified_take(y, n, rng):
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
    val = stratified_take(y, int(round(fraction * len(y))), rng)
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
