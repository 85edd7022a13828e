"""tf.data pipelines of a loaded dataset: validation split, batching, augmentation, resumable epochs.

`make_pipelines(ds, batch_size=...)` -> `Pipelines` (train, val, test); `train_epochs(pipes, start_epoch=, epochs=)`
for resumable training: epoch e's order and augmentation follow from (seed, e) alone.
"""
import dataclasses
import os
import typing

import numpy as np

from tfcnn.data import class_weights, normalization_stats, split_validation, stratified_take
from tfcnn.errors import TfcnnError

if typing.TYPE_CHECKING:  # annotations only: TensorFlow loads with the first pipeline
    import tensorflow as tf

AUGMENTATIONS = ("crop_flip", "shift", "none")


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
        keep = stratified_take(y_train, limit_train, np.random.default_rng(seed + 1))
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = ds.x_test, ds.y_test
    if limit_test is not None and limit_test < len(y_test):
        # Test sets stored class by class (the CIFAR JPEG archive) would give one class from a prefix.
        keep = np.sort(stratified_take(y_test, limit_test, np.random.default_rng(0)))
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
    # one: tiny models' steps are short enough for per-batch op overhead to show (benchmarks/input_batches.py;
    # the figures are in docs/results/performance.md, "Small models: several batches per call").
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


def epoch_feed(pipes, seed, epoch, steps):
    """Train batches of one whole epoch per iteration: the epoch the int64 variable `epoch` holds when an iterator
    is made (callbacks.EpochFeed sets it at each epoch's start); the same batches train_epochs gives that epoch."""
    tf = _tf()
    seed = tf.constant(seed, tf.int64)
    return (tf.data.Dataset.from_tensors(seed)
            .flat_map(lambda s: pipes.train_epoch(tf.stack([s, epoch.read_value()])))
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE))
