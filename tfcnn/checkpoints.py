"""The Keras callbacks that write a run's checkpoints and logs, made safe to kill at any moment.

Keras 3.15 writes these files in place. A kill inside ModelCheckpoint's or BackupAndRestore's h5 write
leaves a truncated file; BackupAndRestore(double_checkpoint=True) copies its files in place too, and
writes the weights and the epoch number one after the other, so a kill between the two pairs epoch
N's weights with epoch N-1's number (the resumed run then trains epoch N a second time, on top of
itself). Here every file is written to a temporary sibling and renamed (tfcnn.runfiles, which flushes the file
before the rename and its folder after it, so that a power cut too leaves whole files), the backup's
metadata, written last, names the sha256 of its weights, and resume takes the newest copy whose
weights match it. tfcnn.train puts BackupAndRestore after every other callback: an epoch counts as
done only once the best weights, history.csv and TensorBoard hold it.
"""
import contextlib
import json
import logging
import shutil
from pathlib import Path

import keras

from tfcnn import compat, runfiles
from tfcnn.errors import TfcnnError

log = logging.getLogger(__name__)

WEIGHTS, METADATA, PREVIOUS = "latest.weights.h5", "training_metadata.json", ".bkp"  # Keras' names


def _copy(source, target):
    with runfiles.atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _copies(backup_dir):
    """(name, metadata file, weights file) of the current and the previous copy."""
    backup_dir = Path(backup_dir)
    return [("current", backup_dir / METADATA, backup_dir / WEIGHTS),
            ("previous", backup_dir / (METADATA + PREVIOUS), backup_dir / (WEIGHTS + PREVIOUS))]


def _read_copy(meta, weights):
    """The epoch a copy holds, or the reason it cannot be used."""
    try:
        record = json.loads(meta.read_text())
        epoch = int(record["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{meta.name} is unreadable ({type(exc).__name__})"
    if not weights.is_file():
        return None, f"{weights.name} is missing"
    if "sha256" in record:
        if runfiles.sha256(weights) != record["sha256"]:
            return None, f"{weights.name} is not the file {meta.name} was written for (truncated or overwritten)"
        return epoch, None
    try:  # written by Keras' own BackupAndRestore: no checksum, so at least the file must open
        import h5py

        with h5py.File(weights, "r"):
            pass
    except OSError as exc:
        return None, f"{weights.name} is unreadable ({' '.join(str(exc).split())[:80]})"
    return epoch, None


def restore_point(backup_dir):
    """(epoch, weights file, which copy) of the newest usable copy in `backup_dir`; None if it holds none.

    A copy exists once its metadata does (written last). Raises TfcnnError if copies exist but neither
    can be used: resuming would otherwise silently start the stage again from its first epoch.
    """
    problems = []
    for name, meta, weights in _copies(backup_dir):
        if not meta.exists():
            continue
        epoch, problem = _read_copy(meta, weights)
        if problem is None:
            if problems:
                log.warning("the current checkpoint copy in %s is damaged (%s); resuming from the previous copy, "
                            "after epoch %d", backup_dir, problems[0], epoch)
            return epoch, weights, name
        problems.append(problem)
    if problems:
        backup_dir = Path(backup_dir)
        raise TfcnnError(f"cannot resume: neither checkpoint copy in {backup_dir} can be read ({'; '.join(problems)}); "
                         f"delete {backup_dir} to train this stage again from its first epoch, or the run folder "
                         f"{backup_dir.parent} to start over")
    return None


def trim_history(path, epochs):
    """Keep the header and the first `epochs` rows of a CSVLogger file: the epochs a resumed run keeps."""
    path = Path(path)
    if path.exists():
        lines = path.read_text().splitlines()[: 1 + epochs]
        runfiles.write_text(path, "\n".join(lines) + "\n" if lines else "")


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore with two copies (double_checkpoint) written atomically, kept after training
    (tfcnn.train removes the folder once the stage is marked done)."""

    def __init__(self, backup_dir, restore):
        """`restore`: restore_point(backup_dir), read once before training (its checksums read whole files)."""
        # Once per epoch: a run resumes at an epoch boundary (an epoch's batches follow from its seed alone), all
        # Keras 3.15 restores anyway (its metadata's batch is never read back); and with steps_per_execution > 1
        # on_train_batch_end comes once per call, not per batch.
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
        self.dir, self.restore = Path(backup_dir), restore

    def on_train_begin(self, logs=None):
        epoch = 0
        if self.restore:
            epoch, weights, copy = self.restore
            if copy == "previous":
                # The current copy is damaged: make it a copy of the previous one (as Keras does), so that Keras
                # loads a *.weights.h5 name and the next save does not rotate the damaged copy over the good one.
                (_, meta, weights), (_, prev_meta, previous) = _copies(self.dir)
                _copy(previous, weights)
                _copy(prev_meta, meta)
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(weights)
        # Also resets what an earlier fit of the same model left (Keras keeps _initial_epoch across fits).
        compat.set_initial_epoch(self.model, epoch)

    def on_train_batch_end(self, batch, logs=None):
        runfiles.fault("batch")  # counts calls: with steps_per_execution N, one per N batches
        super().on_train_batch_end(batch, logs)

    def _save_model(self):  # a private Keras hook (tfcnn.compat.OVERRIDDEN)
        runfiles.makedirs(self.dir)
        (_, meta, weights), (_, prev_meta, prev_weights) = _copies(self.dir)
        if meta.exists():  # the current copy becomes the previous one; its metadata last, as it vouches for it
            _copy(weights, prev_weights)
            _copy(meta, prev_meta)
        with runfiles.atomic_path(weights) as tmp:
            self.model.save_weights(str(tmp))
            digest = runfiles.sha256(tmp)
        epoch, batch = compat.backup_position(self)
        runfiles.write_json(meta, {"epoch": epoch, "batch": batch, "sha256": digest})


@contextlib.contextmanager
def ema_weights(model):
    """The optimizer's moving average of the weights (--ema, Keras' use_ema) in the model inside the block, the
    trained weights again after it. Swapped through copies: Keras' SwapEMAWeights swaps in place by adding and
    subtracting, which rounds, so a run resumed from its backup would not continue on the same weights."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # float16's LossScaleOptimizer
    if not getattr(optimizer, "use_ema", False) or not optimizer.built:
        yield
        return
    pairs = compat.ema_pairs(optimizer)
    _swap(pairs)
    try:
        yield
    finally:
        _swap(pairs)


def _swap(pairs):
    for var, average in pairs:
        held = keras.ops.convert_to_numpy(var)
        var.assign(average)
        average.assign(held)


class EMAValidation(keras.callbacks.Callback):
    """Validation on the moving average of the weights (--ema), as Keras' SwapEMAWeights, exactly."""

    def __init__(self):
        super().__init__()
        self._swapped = contextlib.ExitStack()

    def on_test_begin(self, logs=None):
        self._swapped.enter_context(ema_weights(self.model))

    def on_test_end(self, logs=None):
        self._swapped.close()


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint whose file is replaced atomically (Keras rewrites it in place), holding the
    moving average of the weights with --ema (the weights validation measured)."""

    def _save_model(self, epoch, batch, logs):  # a private Keras hook (tfcnn.compat.OVERRIDDEN)
        target = self.filepath
        with runfiles.atomic_path(target) as tmp, ema_weights(self.model):
            self.filepath = str(tmp)  # Keras writes here when the epoch is an improvement
            try:
                super()._save_model(epoch, batch, logs)
            finally:
                self.filepath = target


class CSVLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger: one row per epoch, on the disk (fsync) before the backup records the epoch; a resumed
    run first drops the rows of epochs its backup does not hold (trim_history). Without validation its columns
    are the logs' own (Keras adds val_ columns, of NA, for runs that validate every few epochs)."""

    def __init__(self, filename, append=False, validation=True):
        super().__init__(filename, append=append)
        self.validation = validation

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        runfiles.fsync_dir(Path(self.filename).parent)  # the file's name, if this created it

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and not self.validation:
            self.keys = sorted(logs or {})
        super().on_epoch_end(epoch, logs)
        runfiles.fsync(self.filename)  # Keras flushed the row to the kernel only
        runfiles.fault("history")


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard, flushed at every epoch end (to the disk), before the backup records the epoch (the
    writers otherwise buffer up to two minutes of events, which a kill loses)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        runfiles.fault("tensorboard")
        for writer in compat.tensorboard_writers(self):
            writer.flush()
        runfiles.fsync_tree(self.log_dir)
