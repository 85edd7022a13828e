"""tfcnn.data and tfcnn.datafiles: real shared files, small files in the canonical layouts, splits, statistics, CLI."""
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
from PIL import Image

from tfcnn import data, datafiles
from tfcnn.errors import TfcnnError, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
NOTMNIST_BAD = ["notMNIST_large/A/RGVtb2NyYXRpY2FCb2xkT2xkc3R5bGUgQm9sZC50dGY=.png",
                "notMNIST_large/F/Q3Jvc3NvdmVyIEJvbGRPYmxpcXVlLnR0Zg==.png"]
# Fine ids of crocodile, dinosaur, lizard, snake, turtle in the canonical (alphabetical) list.
REPTILE_IDS = [27, 29, 44, 78, 93]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    """Synthetic files get a throwaway cache; real-data tests keep ~/.cache/tfcnn warm."""
    if "shared_data" not in request.fixturenames:
        monkeypatch.setenv("TFCNN_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------- writers of canonical layouts

def _add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _cifar_rows(red):
    """CIFAR rows whose R plane is `red`, G plane the row index, B plane the column index."""
    red = np.asarray(red, np.uint8)
    green = np.repeat(np.arange(32, dtype=np.uint8), 32)
    blue = np.tile(np.arange(32, dtype=np.uint8), 32)
    return np.stack([np.concatenate([np.full(1024, r, np.uint8), green, blue]) for r in red])


def write_cifar10(path, per_batch=20):
    """cifar-10-python.tar.gz in the canonical layout; R plane = 100 + label + 10 * batch."""
    with tarfile.open(path, "w:gz") as tar:
        for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            labels = [(i + b) % 10 for i in range(per_batch)]
            batch = {b"batch_label": name.encode(), b"labels": labels,
                     b"data": _cifar_rows([100 + y + 10 * b for y in labels]),
                     b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
        meta = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES],
                b"num_cases_per_batch": per_batch, b"num_vis": 3072}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
    return path


def write_cifar100(path):
    """cifar-100-python.tar.gz: 2 train + 1 test image per fine class; R plane = fine id."""
    fine = sorted(n for names in data.CIFAR100_SUPERCLASSES.values() for n in names)
    coarse_names = list(data.CIFAR100_SUPERCLASSES)
    coarse_of = {n: coarse_names.index(s) for s, names in data.CIFAR100_SUPERCLASSES.items() for n in names}
    with tarfile.open(path, "w:gz") as tar:
        for split, copies in (("train", 2), ("test", 1)):
            labels = [i for i in range(100) for _ in range(copies)]
            part = {b"fine_labels": labels, b"coarse_labels": [coarse_of[fine[i]] for i in labels],
                    b"data": _cifar_rows(labels), b"batch_label": split.encode()}
            _add(tar, f"cifar-100-python/{split}", pickle.dumps(part, protocol=2))
        meta = {b"fine_label_names": [n.encode() for n in fine],
                b"coarse_label_names": [n.encode() for n in coarse_names]}
        _add(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
    return path


def write_mnist(path, n=30):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), np.uint8), y_train=np.arange(n) % 10,
             x_test=rng.integers(0, 256, (10, 28, 28), np.uint8), y_test=np.arange(10))
    return path


def png(array, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- real shared files

def test_mnist_real(shared_data):
    ds = data.load("mnist", shared_data, download=False)
    assert (ds.x_train.shape, ds.x_test.shape) == ((60000, 28, 28, 1), (10000, 28, 28, 1))
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.class_names == [str(d) for d in range(10)] and ds.augmentation == "shift"
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10 and ds.skipped == []


def test_notmnist_real_skips_the_two_unreadable_pngs(shared_data, caplog):
    ds = data.load("notmnist", shared_data, download=False)
    assert (len(ds.y_train), len(ds.y_test)) == (18238, 486)
    assert ds.skipped == NOTMNIST_BAD
    assert ds.class_names == list("ABCDEFGHIJ") and ds.image_shape == (28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [1823, 1824, 1824, 1824, 1824, 1823, 1824, 1824, 1824, 1824]
    assert np.bincount(ds.y_test).sum() == 486 and ds.augmentation == "shift"
    assert "skipped 2 unreadable" in caplog.text


def test_cifar10_jpg_real(shared_data):
    # `cifar10` resolves to the lossless pickles when present; the JPEG class-folder archive is chosen by name.
    ds = data.load("cifar10_jpg", shared_data, download=False)
    assert ds.source.endswith("cifar-10-jpg.tar.gz") and ds.name == "cifar10_jpg"
    assert (ds.x_train.shape, ds.x_test.shape) == ((50000, 32, 32, 3), (10000, 32, 32, 3))
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names == data.CIFAR10_CLASSES and ds.augmentation == "crop_flip"
    # Not blank, and colour: real photos have R != B somewhere.
    assert 100 < ds.x_train.mean() < 150 and (ds.x_test[:100, ..., 0] != ds.x_test[:100, ..., 2]).any()


# The published per-channel train mean and std of CIFAR-10 (0-1 scale), which only the original pixels give.
CIFAR10_MEAN = [0.49139968, 0.48215841, 0.44653091]
CIFAR10_STD = [0.24703223, 0.24348513, 0.26158784]
CIFAR100_SUBSET = {0: "apple", 5: "bed", 21: "chimpanzee", 27: "crocodile", 29: "dinosaur", 35: "girl", 44: "lizard",
                   50: "mouse", 54: "orchid", 55: "otter", 58: "pickup_truck", 78: "snake", 93: "turtle"}


def test_cifar10_real_is_the_lossless_canonical_archive(shared_data):
    ds = data.load("cifar10", shared_data, download=False)
    assert ds.source.endswith("cifar-10-python.tar.gz") and ds.class_names == data.CIFAR10_CLASSES
    assert (ds.x_train.shape, ds.x_test.shape) == ((50000, 32, 32, 3), (10000, 32, 32, 3))
    assert np.bincount(ds.y_train).tolist() == [5000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    # data_batch_1 is the first 10,000 train images, in canonical order.
    assert np.bincount(ds.y_train[:10000]).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    mean, std = data.normalization_stats(ds.x_train)
    np.testing.assert_allclose(mean / 255, CIFAR10_MEAN, atol=1e-6)
    np.testing.assert_allclose(std / 255, CIFAR10_STD, atol=1e-6)


def test_cifar100_real_subset_and_its_selections(shared_data):
    ds = data.load("cifar100", shared_data, download=False)
    assert ds.num_classes == 100 and len(ds.y_train) == 6500 and len(ds.y_test) == 1300
    assert data.describe(ds)["classes_with_images"] == list(CIFAR100_SUBSET.values())
    lecture = data.load("cifar100:0,55,58", shared_data, download=False)
    assert lecture.class_names == ["apple", "otter", "pickup_truck"]
    assert np.bincount(lecture.y_train).tolist() == [500] * 3 and np.bincount(lecture.y_test).tolist() == [100] * 3
    by_name = data.load("cifar100:apple,otter,pickup_truck", shared_data, download=False)
    assert np.array_equal(by_name.x_test, lecture.x_test) and np.array_equal(by_name.y_train, lecture.y_train)
    with pytest.raises(TfcnnError, match=r"^cifar100 has no images of class 1 aquarium_fish in .*; "
                                         r"classes with images: 0 apple, 5 bed, .*93 turtle$"):
        data.load("cifar100:0,1,55", shared_data, download=False)


def test_cifar10_reptiles_real(shared_data):
    ds = data.load("cifar10_reptiles", shared_data, download=False)
    assert ds.num_classes == 15 and ds.class_names[10:] == ["crocodile", "dinosaur", "lizard", "snake", "turtle"]
    assert np.bincount(ds.y_train).tolist() == [5000] * 10 + [500] * 5
    assert np.bincount(ds.y_test).tolist() == [1000] * 10 + [100] * 5


def test_canonical_archives_are_decoded_once_then_cached(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    first = {name: data.load(name, tmp_path, download=False) for name in ("cifar10", "cifar100", "cifar100:coarse")}
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["cifar10", "cifar100"]

    def no_reading(*args):
        raise AssertionError("the archive was decoded again")

    monkeypatch.setattr(data, "read_pickles", no_reading)
    for name, ds in first.items():
        again = data.load(name, tmp_path, download=False)
        assert again.class_names == ds.class_names
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(again, key), getattr(ds, key))
    # A replaced archive (new size/mtime) is decoded afresh.
    os.utime(tmp_path / "cifar-10-python.tar.gz", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        data.load("cifar10", tmp_path, download=False)


# ---------------------------------------------------------------- canonical CIFAR pickles

def test_cifar10_pickle_layout_is_converted_to_hwc(tmp_path):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    ds = data.load("cifar10", tmp_path, download=False)
    assert (ds.x_train.shape, ds.x_test.shape) == ((100, 32, 32, 3), (20, 32, 32, 3))
    assert ds.class_names == data.CIFAR10_CLASSES
    # Batches in order 1..5: R plane encodes (label, batch), G the row, B the column.
    expected_red = [100 + (i + b) % 10 + 10 * b for b in range(5) for i in range(20)]
    assert ds.x_train[:, 5, 7, 0].tolist() == expected_red
    assert ds.y_train.tolist() == [(i + b) % 10 for b in range(5) for i in range(20)]
    assert (ds.x_train[3, :, :, 1] == np.arange(32)[:, None]).all()
    assert (ds.x_train[3, :, :, 2] == np.arange(32)[None, :]).all()
    assert ds.x_test[:, 0, 0, 0].tolist() == [150 + (i + 5) % 10 for i in range(20)]


def test_cifar10_prefers_pickle_over_jpg_and_reads_extracted_folder(tmp_path):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    (tmp_path / "cifar-10-jpg.tar.gz").write_bytes(b"not read when the pickle archive exists")
    assert data.load("cifar10", tmp_path).source.endswith("cifar-10-python.tar.gz")
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    ds = data.load("cifar10", extracted, download=False)
    assert ds.source.endswith("cifar-10-batches-py") and ds.x_train.shape == (100, 32, 32, 3)


def test_cifar10_jpg_layout_uses_canonical_class_order(tmp_path):
    path = tmp_path / "cifar-10-jpg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split in ("test", "train"):
            for label, cls in sorted(enumerate(data.CIFAR10_CLASSES), key=lambda t: t[1], reverse=True):
                for i in range(2):
                    img = np.full((32, 32, 3), 20 * label, np.uint8)
                    _add(tar, f"cifar-10-jpg/{split}/{cls}/{i:04d}.jpg", png(img, "JPEG"))
        _add(tar, "cifar-10-jpg/train/cat/broken.jpg", b"\xff\xd8 truncated")
    ds = data.load("cifar10", tmp_path, download=False)
    assert ds.y_train.tolist() == [k for k in range(10) for _ in range(2)]
    assert np.abs(ds.x_train[:, 16, 16, 0].astype(int) - 20 * ds.y_train).max() <= 2
    assert ds.skipped == ["cifar-10-jpg/train/cat/broken.jpg"]


def test_cifar100_fine_coarse_and_superclass(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    fine = data.load("cifar100", tmp_path, download=False)
    assert fine.num_classes == 100 and fine.class_names[REPTILE_IDS[0]] == "crocodile"
    assert (fine.x_train[:, 0, 0, 0] == fine.y_train).all() and len(fine.y_train) == 200

    coarse = data.load("cifar100:coarse", tmp_path, download=False)
    assert coarse.class_names == list(data.CIFAR100_SUPERCLASSES) and coarse.num_classes == 20
    reptile_rows = np.isin(coarse.x_train[:, 0, 0, 0], REPTILE_IDS)
    assert (coarse.y_train[reptile_rows] == 15).all() and reptile_rows.sum() == 10

    reptiles = data.load("cifar100", tmp_path, classes=["reptiles"])  # as `--classes reptiles` gives
    assert reptiles.name == "cifar100:reptiles"
    assert reptiles.class_names == ["crocodile", "dinosaur", "lizard", "snake", "turtle"]
    assert reptiles.y_train.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert reptiles.x_train[:, 0, 0, 0].tolist() == [i for i in REPTILE_IDS for _ in range(2)]

    picked = data.load("cifar100:bus,apple,2", tmp_path)  # names or ids, relabelled in fine-id order
    assert picked.class_names == ["apple", "baby", "bus"] and picked.y_test.tolist() == [0, 1, 2]


def test_cifar100_unknown_class_lists_valid_ones(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    with pytest.raises(TfcnnError, match=r"no class 'reptile'.*ids 0-99.*describe cifar100.*superclass.*reptiles"):
        data.load("cifar100:reptile", tmp_path)
    with pytest.raises(TfcnnError, match=r"no class '999'"):
        data.load("cifar100:0,55,999", tmp_path)


def test_a_class_without_images_is_an_error_not_an_empty_class():
    y = np.arange(9)  # classes 0-8: no truck (9), as a subset copy of a dataset may lack classes
    ds = data.Dataset("cifar10", list(data.CIFAR10_CLASSES), np.zeros((9, 4, 4, 3), np.uint8), y,
                      np.zeros((9, 4, 4, 3), np.uint8), y, source="subset.tar.gz")
    assert data._select(ds, "0,8").num_classes == 2
    with pytest.raises(TfcnnError, match=r"^cifar10 has no images of class 9 truck in subset.tar.gz; "
                                         r"classes with images: 0 airplane, .*8 ship$"):
        data._select(ds, "ship,truck")


def test_cifar10_reptiles_has_15_classes(tmp_path):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    ds = data.load("cifar10_reptiles", tmp_path, download=False)
    assert ds.class_names == data.CIFAR10_CLASSES + ["crocodile", "dinosaur", "lizard", "snake", "turtle"]
    assert (len(ds.y_train), len(ds.y_test)) == (110, 25)
    added = ds.y_train >= 10
    assert added.sum() == 10 and ds.y_test.max() == 14
    assert (ds.x_train[added, 0, 0, 0] == np.array(REPTILE_IDS)[ds.y_train[added] - 10]).all()
    assert (ds.x_train[~added, 0, 0, 0] >= 100).all()  # CIFAR-10 rows keep their labels 0-9


def test_cifar10_reptiles_needs_both_files(tmp_path):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(TfcnnError, match="cifar100: no dataset file found.*cifar-100-python.tar.gz"):
        data.load("cifar10_reptiles", tmp_path, download=False)


# ---------------------------------------------------------------- broken and missing files

def test_truncated_archive_is_a_clear_error(tmp_path):
    blob = write_cifar10(tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TfcnnError, match=r"cannot read .*cifar-10-python.tar.gz .*truncated, corrupt or not in the expected layout"):
        data.load("cifar10", tmp_path, download=False)


def test_corrupt_npz_and_wrong_layout_are_clear_errors(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(TfcnnError, match=r"cannot read .*mnist.npz"):
        data.load("mnist", tmp_path)
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", pickle.dumps({}, protocol=2))
    with pytest.raises(TfcnnError, match=r"has no cifar-100-python/train; expected the canonical"):
        data.load("cifar100", tmp_path)


def test_cifar_pickle_without_labels_is_a_clear_error(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps({b"data": _cifar_rows([1])}, protocol=2))
    with pytest.raises(TfcnnError, match=r"cannot read .*cifar-10-python.tar.gz \(b'labels'\)"):
        data.load("cifar10", tmp_path)


def test_pickle_that_runs_code_is_refused(tmp_path):
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name in ("train", "test", "meta"):
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(os.getcwd, protocol=2))
    with pytest.raises(TfcnnError, match="unexpected object"):
        data.load("cifar100", tmp_path)


def test_data_dir_resolution(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.setenv("TFCNN_DATA_DIR", str(tmp_path))
    assert datafiles.resolve_data_dir() == tmp_path
    assert datafiles.resolve_data_dir(tmp_path / "sub" / "..") == tmp_path  # absolute, for clear messages
    monkeypatch.delenv("TFCNN_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert datafiles.resolve_data_dir() == tmp_path / "data"
    with pytest.raises(TfcnnError, match=r"data directory .*nope does not exist; pass --data-dir or set TFCNN_DATA_DIR"):
        datafiles.resolve_data_dir(tmp_path / "nope")


def test_unknown_dataset_lists_choices():
    with pytest.raises(TfcnnError, match=r"unknown dataset 'nosuchset'; choose one of mnist, notmnist, cifar10"):
        data.load("nosuchset")
    assert data.list_datasets() == ["mnist", "notmnist", "cifar10", "cifar10_jpg", "cifar100", "cifar10_reptiles"]


def test_missing_file_without_download_names_paths_and_fix(tmp_path):
    with pytest.raises(TfcnnError) as err:
        data.load("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert msg.startswith("cifar10: no dataset file found") and "\n" not in msg
    for name in ("cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar-10-jpg.tar.gz"):
        assert str(tmp_path / name) in msg
    assert f"put cifar-10-python.tar.gz in {tmp_path} or pass --data-dir" in msg


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server for `served/`; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum(tmp_path, http_server, monkeypatch):
    served, base = http_server
    good = write_mnist(served / "mnist.npz").read_bytes()
    target = tmp_path / "target"
    target.mkdir()
    monkeypatch.setitem(datafiles.URLS, "mnist.npz", f"{base}/mnist.npz")

    monkeypatch.setitem(datafiles.SHA256, "mnist.npz", "0" * 64)
    with pytest.raises(TfcnnError, match=r"sha256 .*expected 0{64}.*corrupt and was deleted"):
        data.load("mnist", target)
    assert os.listdir(target) == []  # no partial or temporary file left behind

    monkeypatch.setitem(datafiles.SHA256, "mnist.npz", hashlib.sha256(good).hexdigest())
    ds = data.load("mnist", target)
    assert (target / "mnist.npz").read_bytes() == good and os.listdir(target) == ["mnist.npz"]
    assert ds.x_train.shape == (30, 28, 28, 1)


def test_failed_download_is_one_error_with_the_fix(tmp_path, http_server, monkeypatch):
    _, base = http_server
    monkeypatch.setitem(datafiles.URLS, "mnist.npz", f"{base}/missing/mnist.npz")  # 404
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(TfcnnError) as err:
        data.load("mnist", target)
    msg = str(err.value)
    assert msg.startswith("mnist: no dataset file found") and "404" in msg and "\n" not in msg
    assert f"put mnist.npz in {target} or pass --data-dir" in msg and os.listdir(target) == []


# ---------------------------------------------------------------- notMNIST layouts, folders, cache

def _letters(root, part, bad=()):
    rng = np.random.default_rng(len(part))
    for letter in "AB":
        (root / f"notMNIST_{part}" / letter).mkdir(parents=True)
        for i in range(3):
            (root / f"notMNIST_{part}" / letter / f"{i}.png").write_bytes(
                png(rng.integers(0, 256, (28, 28), np.uint8)))
    for rel in bad:
        (root / f"notMNIST_{part}" / rel).write_bytes(b"")


def test_notmnist_extracted_folders_and_bad_tar(tmp_path, caplog):
    _letters(tmp_path, "large", bad=["B/empty.png"])
    _letters(tmp_path, "small")
    ds = data.load("notmnist", tmp_path, download=False)
    assert (ds.x_train.shape, ds.x_test.shape) == ((6, 28, 28, 1), (6, 28, 28, 1))
    assert ds.skipped == ["notMNIST_large/B/empty.png"] and "skipped 1 unreadable" in caplog.text
    with tarfile.open(tmp_path / "notMNIST_small_subset.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "notMNIST_small", arcname="./notMNIST_small")  # as `tar czf x ./dir` writes
    from_tar = data.load("notmnist", tmp_path)
    assert from_tar.source.endswith("notMNIST_small_subset.tar.gz")
    np.testing.assert_array_equal(from_tar.x_test, ds.x_test)
    (tmp_path / "notMNIST_large_subset.tar.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(TfcnnError, match=r"cannot read .*notMNIST_large_subset.tar.gz"):
        data.load("notmnist", tmp_path)


def test_folder_dataset_carves_stratified_test_and_caches(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    for k, cls in enumerate(["circle", "square"]):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            size = (12, 10) if i else (24, 20)  # one odd size: resized to the common one
            Image.new("L", size, 10 * k + i).save(root / cls / f"{i}.png")
    (root / "square" / "notes.txt").write_text("not an image")
    before = sorted(p.name for p in root.rglob("*"))
    ds = data.load(f"folder:{root}")
    assert ds.class_names == ["circle", "square"] and ds.image_shape == (10, 12, 1)
    assert np.bincount(ds.y_test).tolist() == [2, 2] and np.bincount(ds.y_train).tolist() == [8, 8]
    assert ds.skipped == ["square/notes.txt"] and ds.augmentation == "shift"
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written into the data
    cached = list((tmp_path / "cache").glob("folder-*.npz"))
    assert len(cached) == 1
    # Served from the cache while the folder is unchanged, re-read after it changes.
    with monkeypatch.context() as patch:
        patch.setattr(data, "decode_all", lambda *a: pytest.fail("decoded again"))
        assert (data.load(f"folder:{root}").x_train == ds.x_train).all()
    Image.new("RGB", (12, 10), (255, 0, 0)).save(root / "circle" / "red.png")
    rgb = data.load(f"folder:{root}")
    assert rgb.image_shape == (10, 12, 3) and rgb.augmentation == "crop_flip"
    now = list((tmp_path / "cache").glob("folder-*.npz"))
    assert len(now) == 1 and now != cached  # the stale version of this folder was removed


def test_folder_with_train_and_test(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b", "c"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / split / cls / f"{i}.jpg")
    ds = data.load(f"folder:{tmp_path}")
    assert (ds.x_train.shape, ds.x_test.shape) == ((12, 8, 8, 3), (6, 8, 8, 3))
    assert ds.y_test.tolist() == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------- splits and statistics

def test_split_validation_is_stratified_seeded_and_disjoint():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    idx = np.arange(len(y))
    x_tr, y_tr, x_val, y_val = data.split_validation(idx, y, 0.1, seed=0)
    assert np.bincount(y_val).tolist() == [50, 30, 20] and np.bincount(y_tr).tolist() == [450, 270, 180]
    assert sorted(np.concatenate([x_tr, x_val]).tolist()) == idx.tolist()  # disjoint and complete
    assert (y[x_tr] == y_tr).all() and (y[x_val] == y_val).all()
    assert not (np.diff(x_tr) > 0).all()  # shuffled
    again = data.split_validation(idx, y, 0.1, seed=0)
    other = data.split_validation(idx, y, 0.1, seed=1)
    assert (again[2] == x_val).all() and (again[0] == x_tr).all()
    assert set(other[2].tolist()) != set(x_val.tolist())
    assert len(data.split_validation(idx, y, 0.0)[2]) == 0
    with pytest.raises(TfcnnError, match=r"fraction 1.5 must be in \[0, 1\)"):
        data.split_validation(idx, y, 1.5)


def test_normalization_stats_per_channel():
    x = np.random.default_rng(0).integers(0, 256, (3000, 4, 4, 3), np.uint8)
    mean, std = data.normalization_stats(x)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (3,)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-5)


# ---------------------------------------------------------------- CLI

def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tfcnn.data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_cli_describe_json(shared_data):
    res = _cli("describe", "mnist", "--json", "--data-dir", str(shared_data), "--no-download")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["dataset"] == "mnist" and info["image_shape"] == [28, 28, 1] and info["num_classes"] == 10
    assert list(info["counts"]["train"].values()) == MNIST_TRAIN
    assert list(info["counts"]["test"].values()) == MNIST_TEST
    assert sum(info["counts"]["validation"].values()) == 6000 and info["counts"]["validation"]["1"] == 674
    assert (info["train_size"], info["test_size"], info["skipped"]) == (60000, 10000, [])
    assert info["source"] == str(shared_data / "mnist.npz")


def test_cli_describe_text(tmp_path, capsys):
    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    assert run_cli(data.main, ["describe", "cifar10", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "image shape  32x32x3" in out and "test 20" in out
    assert "airplane        10       1       2" in out  # class, train, (val), test


def test_cli_describe_into_a_closed_pipe_is_quiet(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    res = subprocess.run(f"{sys.executable} -m tfcnn.data describe cifar100 --data-dir {tmp_path} | head -2",
                         shell=True, cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TFCNN_CACHE_DIR": str(tmp_path / "cache")})
    assert res.stdout.splitlines()[0] == "dataset      cifar100" and len(res.stdout.splitlines()) == 2
    assert res.stderr == ""


def test_cli_describe_names_the_classes_that_hold_images(shared_data):
    res = _cli("describe", "cifar100", "--data-dir", str(shared_data), "--no-download")
    assert res.returncode == 0, res.stderr
    assert "only 13 of the 100 classes hold images; the other 87 are not listed" in res.stdout
    rows = [line.split()[0] for line in res.stdout.split("class ", 1)[1].splitlines()[1:] if line.strip()]
    assert rows == list(CIFAR100_SUBSET.values())
    res = _cli("describe", "cifar100:0,1,55", "--data-dir", str(shared_data), "--no-download")
    assert res.returncode == 2 and res.stdout == "" and len(res.stderr.splitlines()) == 1
    assert "no images of class 1 aquarium_fish" in res.stderr


def test_cli_unknown_dataset_is_one_line_exit_2():
    res = _cli("describe", "nosuchset")  # a real process: no traceback may reach the terminal
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: unknown dataset 'nosuchset'; choose one of mnist, notmnist, cifar10, cifar10_jpg, cifar100, "
        "cifar10_reptiles, or folder:PATH"]


@pytest.mark.parametrize("args, message", [
    (["describe", "mnist", "--data-dir", "/nonexistent/tfcnn"],
     "error: data directory /nonexistent/tfcnn does not exist; pass --data-dir or set TFCNN_DATA_DIR"),
    (["describe"], "python -m tfcnn.data describe: error: the following arguments are required: dataset"),
])
def test_cli_errors_are_one_line_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(data.main, args)
    err = capsys.readouterr()
    assert exit_.value.code == 2 and err.out == ""
    assert err.err.strip().splitlines() == [message + (" (see --help)" if "arguments" in message else "")]
