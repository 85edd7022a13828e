"""The trainer's Keras callbacks, for model.fit and the distributed EpochLoop alike: epoch times, the NaN stop,
freezing a layer or turning SAM on mid-run, the best checkpoint, history.csv, TensorBoard and the backup that marks
an epoch done."""
import math
import time

import keras
import tensorflow as tf

from tfcnn import checkpoints, initializers, pipelines


def make_callbacks(config, run_dir, stage, initial_epoch, restore, backup=True, validation=True):
    """tfcnn's callbacks for both loops; `backup`: BackupAndRestore (model.fit's; the distributed loop checkpoints
    itself), restoring `restore` (checkpoints.restore_point). It goes last, after any `extra` callbacks: an epoch
    counts as done once every other file holds it, so a kill before that redoes the epoch and loses nothing."""
    history = run_dir / ("history.csv" if stage == "train" else f"history_{stage}.csv")
    checkpoints.trim_history(history, initial_epoch)  # rows of epochs the backup does not hold
    callbacks = [
        EpochTimer(),
        NanGuard(),
        checkpoints.ModelCheckpoint(
            str(run_dir / "best.weights.h5"), monitor="val_accuracy", mode="max",
            save_best_only=config.checkpoint == "best",
            save_weights_only=True, initial_value_threshold=_best_val_from_history(run_dir)),
        checkpoints.CSVLogger(str(history), append=initial_epoch > 0, validation=validation),
    ]
    if config.ema > 0:
        callbacks.insert(0, checkpoints.EMAValidation())
    if config.whiten_bias_epochs is not None and stage == "train":
        callbacks.insert(0, FreezeAt(initializers.WHITEN_LAYER, config.whiten_bias_epochs))
    if config.sam_epochs and stage == "train":
        callbacks.insert(0, SamFrom(config.epochs - config.sam_epochs))
    if config.tensorboard:
        callbacks.append(checkpoints.TensorBoard(str(run_dir / "logs" / stage), profile_batch=0))
    last = [checkpoints.BackupAndRestore(run_dir / f"backup_{stage}", restore)] if backup else []
    return callbacks, last


def _best_val_from_history(run_dir):
    import pandas as pd

    best = None
    for path in sorted(run_dir.glob("history*.csv")):
        try:
            hist = pd.read_csv(path)
        except Exception:
            continue
        if "val_accuracy" in hist and len(hist):
            value = float(hist["val_accuracy"].max())
            best = value if best is None else max(best, value)
    return best


class EpochTimer(keras.callbacks.Callback):
    """Adds epoch_time_s to the logs, so history.csv has it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


class FreezeAt(keras.callbacks.Callback):
    """From epoch `epoch` (0-based) on, layer `name` stops training and the train step is traced again without its
    gradients, which then are not computed at all (airbench sets requires_grad=False on its whitening bias after
    3 epochs; with it goes the input gradient of the first conv group). A resumed run freezes at its first epoch."""

    def __init__(self, name, epoch):
        super().__init__()
        self.name, self.epoch = name, epoch

    def on_epoch_begin(self, epoch, logs=None):
        layer = self.model.get_layer(self.name)
        if epoch >= self.epoch and layer.trainable:
            layer.trainable = False
            self.model.make_train_function(force=True)


class SamFrom(keras.callbacks.Callback):
    """From epoch `epoch` (0-based) on, the SAMModel being trained takes SAM steps: its train step is traced again
    with the climb (--sam-epochs). A resumed run turns SAM on at its first epoch if that is already late enough."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch and not self.model.sharpness_aware:
            self.model.sharpness_aware = True
            self.model.make_train_function(force=True)


class NanGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss; the best checkpoint of earlier epochs stays on disk. With
    steps_per_execution N it sees the epoch's running loss once per call of up to N batches, so it names
    the call's batches (0-based, within the epoch)."""

    def on_train_begin(self, logs=None):
        self.failed_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.first = batch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            steps = (self.params or {}).get("steps")
            last = min(batch, steps - 1) if steps else batch  # an epoch's last call may run fewer than N
            self.failed_at = f"batch {last}" if last == self.first else f"batches {self.first}-{last}"
            self.model.stop_training = True


class EpochFeed(keras.callbacks.Callback):
    """model.fit's train batches when steps_per_execution > 1: `dataset` yields one whole epoch per iteration,
    the epoch this callback set at its start (the batches pipelines.train_epochs gives that epoch).

    Keras runs whole calls of steps_per_execution batches: on train_epochs' one stream of all epochs, an epoch's
    last call runs on into the next epoch's batches whenever the epoch's steps are not a multiple of it (a
    resumed run then sees other batches than an unbroken one). An iterator that ends with its epoch stops that
    call short. Keras makes a new iterator at each epoch's start when fit has no steps_per_epoch."""

    def __init__(self, pipes, seed, steps):
        super().__init__()
        self.current = tf.Variable(0, dtype=tf.int64, trainable=False, name="feed_epoch")
        self.dataset = pipelines.epoch_feed(pipes, seed, self.current, steps)

    def on_epoch_begin(self, epoch, logs=None):
        self.current.assign(epoch)


class CallProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar for calls of several batches: Keras numbers an epoch's short last call as if it were
    whole, so the bar would read 448/422 steps, with a negative ETA, until the epoch ends."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(min(batch, self.target - 1) if self.target else batch, logs)
