"""tfcnn.pipelines: splits into batches, shuffling and augmentation, resumable epochs, class weights."""
import numpy as np
import pytest

from tfcnn import data, pipelines
from tfcnn.errors import TfcnnError


def _toy(n=400, shape=(8, 8, 3), classes=4, augmentation="crop_flip"):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n,) + shape, np.uint8)
    y = np.arange(n) % classes
    return data.Dataset("toy", [str(c) for c in range(classes)], x, y, x[:50].copy(), y[:50].copy(),
                        augmentation=augmentation)


def _collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_pipelines_shapes_and_untouched_val_test():
    ds = _toy()
    p = pipelines.make_pipelines(ds, batch_size=32, val_fraction=0.25, limit_test=30)
    assert (p.train_size, p.val_size, p.test_size) == (300, 100, 30)
    x, y = next(iter(p.train))
    assert x.dtype.name == "float32" and y.dtype.name == "int32" and tuple(x.shape) == (32, 8, 8, 3)
    x_val, y_val = _collect(p.val)
    np.testing.assert_array_equal(x_val, p.x_val.astype(np.float32))
    np.testing.assert_array_equal(y_val, p.y_val)
    x_test, y_test = _collect(p.test)
    np.testing.assert_array_equal(x_test, p.x_test.astype(np.float32))
    np.testing.assert_array_equal(y_test, p.y_test)
    # limit_test is a stratified subset, in the test set's order, not a prefix.
    assert np.bincount(p.y_test).min() >= 30 // ds.num_classes
    rows = [np.flatnonzero((ds.x_test == img).all(axis=(1, 2, 3)))[0] for img in p.x_test]
    assert rows == sorted(rows)
    train_part = data.split_validation(ds.x_train, ds.y_train, 0.25, 0)[0]
    np.testing.assert_allclose(p.mean, data.normalization_stats(train_part)[0])
    assert p.class_names == ds.class_names and p.image_shape == (8, 8, 3)


def test_train_pipeline_reshuffles_each_epoch_reproducibly():
    ds = _toy()
    p = pipelines.make_pipelines(ds, batch_size=64, augment=False)
    (x1, y1), (x2, y2) = _collect(p.train), _collect(p.train)
    assert len(y1) == p.train_size == 360
    assert np.bincount(y1).tolist() == np.bincount(y2).tolist() == [90] * 4
    assert not (x1 == x2).all()  # a new order each epoch
    x1_again, _ = _collect(pipelines.make_pipelines(ds, batch_size=64, augment=False).train)
    np.testing.assert_array_equal(x1, x1_again)  # same seed, same order
    x1_other, _ = _collect(pipelines.make_pipelines(ds, batch_size=64, augment=False, seed=5).train)
    assert not (x1 == x1_other).all()


def test_class_weights_weigh_each_train_image_by_its_class_and_leave_val_test_alone():
    # 4 classes with 200 / 100 / 60 / 40 images, as cifar10_reptiles' 5,000 / 500 in miniature.
    x = np.random.default_rng(2).integers(0, 256, (400, 8, 8, 3), np.uint8)
    y = np.repeat([0, 1, 2, 3], [200, 100, 60, 40])
    ds = data.Dataset("imbalanced", list("abcd"), x, y, x[:40].copy(), y[:40].copy(), augmentation="crop_flip")
    balanced = data.class_weights(y, 4, "balanced")
    np.testing.assert_allclose(balanced, 400 / (4 * np.array([200, 100, 60, 40])), rtol=1e-6)
    np.testing.assert_allclose(data.class_weights(y, 4, "sqrt"), np.sqrt(balanced), rtol=1e-6)
    assert data.class_weights(y, 4) is None
    with pytest.raises(TfcnnError, match="2 of 6 have none"):
        data.class_weights(y, 6, "balanced")

    p = pipelines.make_pipelines(ds, batch_size=32, val_fraction=0.1, class_weight="balanced")
    expected = data.class_weights(data.split_validation(x, y, 0.1, 0)[1], 4, "balanced")  # of the train part
    batches = list(p.train)
    assert all(len(batch) == 3 for batch in batches)
    labels = np.concatenate([b[1].numpy() for b in batches])
    weights = np.concatenate([b[2].numpy() for b in batches])
    assert len(labels) == p.train_size
    np.testing.assert_allclose(weights, expected[labels], rtol=1e-6)  # rarest class weighs 5x the commonest
    assert abs(weights.mean() - 1) < 1e-5  # balanced weights keep the mean loss scale
    assert all(len(batch) == 2 for batch in p.val) and all(len(batch) == 2 for batch in p.test)


def test_train_epochs_resume_with_the_same_batches():
    p = pipelines.make_pipelines(_toy(), batch_size=64)  # 360 train images: 6 batches per epoch
    full = [(x.numpy(), y.numpy()) for x, y in pipelines.train_epochs(p, epochs=3)]
    resumed = [(x.numpy(), y.numpy()) for x, y in pipelines.train_epochs(p, start_epoch=2, epochs=3)]
    assert len(full) == 18 and len(resumed) == 6
    for (x, y), (x_r, y_r) in zip(full[12:], resumed):
        np.testing.assert_array_equal(x, x_r)
        np.testing.assert_array_equal(y, y_r)
    epoch0 = np.concatenate([y for _, y in full[:6]])
    epoch1 = np.concatenate([y for _, y in full[6:12]])
    assert np.bincount(epoch0).tolist() == [90] * 4 and not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize("chunk_batches", [1, 2, 32])
def test_train_epoch_chunks_cover_every_image_once(monkeypatch, chunk_batches):
    """Batches are gathered CHUNK_BATCHES at a time: full batches, then one short batch; each image once."""
    monkeypatch.setattr(pipelines, "CHUNK_BATCHES", chunk_batches)
    p = pipelines.make_pipelines(_toy(), batch_size=32, augment=False)  # 360 train images: 11 full + 8
    batches = [(x.numpy(), y.numpy()) for x, y in p.train]
    assert [len(y) for _, y in batches] == [32] * 11 + [8]
    x = np.concatenate([b for b, _ in batches]).reshape(360, -1)
    ds = _toy()
    train_images = data.split_validation(ds.x_train, ds.y_train, 0.1, 0)[0].reshape(360, -1)
    assert sorted(map(bytes, x.astype(np.uint8))) == sorted(map(bytes, train_images))


def test_one_hot_labels():
    p = pipelines.make_pipelines(_toy(), batch_size=16, one_hot=True)
    for dataset in (p.train, p.val, p.test):
        _, y = next(iter(dataset))
        assert y.dtype.name == "float32" and tuple(y.shape) == (16, 4)
    _, y = next(iter(p.test))
    np.testing.assert_array_equal(y.numpy().argmax(1), p.y_test[:16])


def test_limit_train_is_stratified_and_normalize_uses_train_stats():
    ds = _toy()
    p = pipelines.make_pipelines(ds, batch_size=50, limit_train=100, normalize=True, augment=False)
    x, y = _collect(p.train)
    assert p.train_size == len(y) == 100 and np.bincount(y).tolist() == [25] * 4
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1, atol=1e-4)
    x_test, _ = _collect(p.test)
    np.testing.assert_allclose(x_test, (ds.x_test - p.mean) / p.std, rtol=1e-5, atol=1e-5)


def _crop_matches(image, out, pad, flips):
    """Which (dy, dx, flipped) crops of the zero-padded image equal out."""
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    h, w = image.shape[:2]
    hits = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            for flipped in (False, True) if flips else (False,):
                if np.array_equal(crop[:, ::-1] if flipped else crop, out):
                    hits.append((dy, dx, flipped))
    return hits


def test_crop_flip_augmentation_is_a_padded_crop_or_mirror():
    rng = np.random.default_rng(2)
    images = rng.integers(1, 256, (64, 12, 12, 3)).astype(np.float32)
    out = pipelines.augment_fn("crop_flip", (12, 12, 3))(images).numpy()
    assert out.shape == images.shape and not np.array_equal(out, images)
    hits = [_crop_matches(i, o, 4, flips=True) for i, o in zip(images, out)]
    assert all(len(h) == 1 for h in hits)
    assert {h[0][2] for h in hits} == {False, True}  # some mirrored, some not
    assert len({h[0][:2] for h in hits}) > 10  # offsets vary per image


def test_cutout_erases_one_clipped_square_with_the_fill():
    images = np.full((64, 12, 12, 3), 200, np.uint8)
    out = pipelines.augment_fn("none", (12, 12, 3), cutout=4, fill=[1, 2, 3])(images, tf_seed(7)).numpy()
    erased = (out == [1, 2, 3]).all(-1)
    assert ((out == 200).all(-1) | erased).all()  # nothing else changes
    for hole in erased:
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert hole.sum() == len(rows) * len(cols)  # one rectangle ...
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4  # ... of side 4, clipped at most to half at a border
    assert len({tuple(np.argwhere(h)[0]) for h in erased}) > 10  # at random places
    again = pipelines.augment_fn("none", (12, 12, 3), cutout=4, fill=[1, 2, 3])(images, tf_seed(7)).numpy()
    assert np.array_equal(out, again)
    crop = pipelines.augment_fn("crop_flip", (12, 12, 3))(images, tf_seed(7)).numpy()
    both = pipelines.augment_fn("crop_flip", (12, 12, 3), cutout=4, fill=[1, 2, 3])(images, tf_seed(7)).numpy()
    assert np.array_equal(np.where(erased[..., None], [1, 2, 3], crop), both)  # same crop, then the same hole
    with pytest.raises(TfcnnError, match="cutout size -1"):
        pipelines.augment_fn("crop_flip", (12, 12, 3), cutout=-1)


def tf_seed(value):
    import tensorflow as tf

    return tf.constant([value, 0], tf.int64)


def test_shift_augmentation_never_flips():
    rng = np.random.default_rng(3)
    images = rng.integers(1, 256, (64, 10, 10, 1)).astype(np.float32)
    augment = pipelines.augment_fn("shift", (10, 10, 1))
    for _ in range(3):
        out = augment(images).numpy()
        assert out.shape == images.shape
        assert all(len(_crop_matches(i, o, 2, flips=False)) == 1 for i, o in zip(images, out))
    assert pipelines.augment_fn("none", (10, 10, 1))(images) is images
    with pytest.raises(TfcnnError, match="unknown augmentation 'mixup'"):
        pipelines.augment_fn("mixup", (10, 10, 1))


def test_mnist_pipeline_real(shared_data):
    ds = data.load("mnist", shared_data, download=False)
    p = pipelines.make_pipelines(ds, batch_size=128, limit_train=512, limit_test=256)
    assert (p.train_size, p.val_size, p.test_size) == (512, 6000, 256)
    x, y = next(iter(p.train))
    assert tuple(x.shape) == (128, 28, 28, 1) and float(x.numpy().max()) > 200  # raw 0-255 scale
    assert 30 < float(p.mean[0]) < 37  # MNIST pixel mean is 33.3 on the 0-255 scale
