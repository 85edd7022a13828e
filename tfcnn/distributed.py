"""tf.distribute for tfcnn: the cluster from TF_CONFIG, MultiWorkerMirroredStrategy with deadlines, and the
epoch loop `tfcnn.train` runs under a distribution strategy instead of model.fit.

Keras 3.15's model.fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585: its symbolic
build and metric reduction call strategy.reduce on per-replica values in ways MWMS rejects). `EpochLoop`
runs the model's own train_step/test_step under strategy.run, so losses, metrics, SAM, label smoothing and
frozen layers behave as under fit; callbacks, artefacts and the test report stay in tfcnn.train.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfcnn import compat, runfiles
from tfcnn.errors import TfcnnError, native_stderr_off_from_now

BARRIER_TIMEOUT_S = 7 * 24 * 3600  # a week: peers' deaths end a wait, not this
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'


def cluster_from_env():
    """(cluster, task type, task index) from the TF_CONFIG environment variable."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise TfcnnError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's place in it), e.g. "
                         f"TF_CONFIG='{TF_CONFIG_EXAMPLE}'; on one machine `python -m tfcnn.launch --workers N -- ...` "
                         "sets it")
    try:
        spec = json.loads(raw)
        cluster, task_type, index = spec["cluster"], spec["task"]["type"], int(spec["task"]["index"])
        cluster[task_type][index]
    except (ValueError, KeyError, TypeError, IndexError):
        raise TfcnnError(f"TF_CONFIG {raw!r} does not name this worker in its cluster; expected e.g. "
                         f"'{TF_CONFIG_EXAMPLE}'") from None
    return cluster, task_type, index


def multi_worker_strategy(peer_timeout):
    """MultiWorkerMirroredStrategy over TF_CONFIG's cluster, with deadlines for unreachable peers.

    MWMS starts TF's coordination service itself with no deadline: a worker whose peer never starts (or
    has a wrong address) waits forever. Configured here first, with the same jobs and leader, waiting for
    the cluster ends after `peer_timeout` seconds, and a peer that dies during training (no heartbeat for
    `peer_timeout` seconds) aborts the collectives of the others (tfcnn.compat: TF 2.21 has no public option).
    """
    cluster, task_type, index = cluster_from_env()
    me = cluster[task_type][index]
    peers = [address for tasks in cluster.values() for address in tasks if address != me]
    compat.configure_coordination_service(cluster, int(peer_timeout * 1000))
    # A lost peer makes every layer of TF report it in many lines, so a worker's error would not be one line.
    native_stderr_off_from_now()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError):
        raise TfcnnError(f"{task_type} {index} ({me}) could not reach its peers ({', '.join(peers)}) within "
                         f"{peer_timeout:g} s; start every worker of TF_CONFIG's cluster with the same command, check "
                         "their addresses, or raise --peer-timeout") from None
    except tf.errors.OpError as exc:
        raise TfcnnError(f"{task_type} {index} could not join the cluster at {me}: "
                         f"{exc.message.strip().splitlines()[0]}") from None


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task_name(strategy):
    """'worker 1' (TF_CONFIG's task type and index), 'process' outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "process"
    return f"{resolver.task_type} {resolver.task_id}"


def scratch_folder(run_dir, strategy):
    """Where a non-chief worker writes its own copy of the chief's run `run_dir`: one folder per run and task under
    the temp dir (tfcnn-worker-<hash of run_dir>-<task>), so the next start of a worker finds the folder an earlier,
    killed one left (claim_scratch)."""
    key = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    resolver = strategy.cluster_resolver
    return Path(tempfile.gettempdir()) / f"tfcnn-worker-{key}-{resolver.task_type}{resolver.task_id}"


def claim_scratch(scratch):
    """Own the folder `scratch` (a runfiles.Lock beside it) and make it new and empty: whatever is in it was left by
    a killed worker, its lock's owner gone. Returns the lock; release it after removing the folder."""
    lock = runfiles.Lock(scratch, "worker scratch folder", hint="a worker of this run already runs on this host; "
                         "stop it or give this one another --name").acquire()
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return lock


def is_chief(strategy):
    """The worker that writes the run: TF_CONFIG's chief, else worker 0; every single-process run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


@contextlib.contextmanager
def peers_required(strategy):
    """Turn collectives aborted by a lost or unreachable peer into one line that says how to recover."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError) as exc:
        if not is_multi_worker(strategy):
            raise
        tasks = {f"{job} {task}" for job, task in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", exc.message)}
        lost = sorted(tasks - {task_name(strategy)})
        refused = re.search(r"ipv[46]:(\S+?): Failed to connect", exc.message)
        why = f"no connection to {refused.group(1)}" if refused else type(exc).__name__
        raise TfcnnError(f"lost contact with {', '.join(lost) or 'a peer worker'} ({why}); check that every worker "
                         "runs and that TF_CONFIG's addresses match, then restart every worker with the same command: "
                         "the run resumes from its last finished epoch") from None


def barrier(strategy, name):
    """Return when every worker got here (a no-op in one process).

    A wait at TF's coordination service, not a collective: the service lives in the chief, so a chief that dies
    breaks the others' wait at once, and a worker that dies is noticed by the chief's service after --peer-timeout
    without a heartbeat. A collective all-reduce here noticed a chief killed while the others waited only after
    ~10 minutes. The wait itself has no practical deadline: the chief may evaluate and export for a long time.
    """
    if not is_multi_worker(strategy):
        return
    try:
        compat.wait_at_barrier(name, timeout_s=BARRIER_TIMEOUT_S)
    except tf.errors.InternalError as exc:  # how the service reports a task gone ("heartbeat timeout"): a lost peer
        raise tf.errors.UnavailableError(None, None, exc.message) from None


def sync_from_chief(strategy, variables):
    """Give every worker worker 0's values of `variables` (after the chief alone restored them).

    Each worker contributes its values (worker 0) or zeros (the others) to one all-reduce sum: x + 0 == x,
    so the copies end bit-identical.
    """
    if is_multi_worker(strategy):
        _all_reduce_into(strategy, variables, "sum", lambda ctx, value: tf.where(
            tf.equal(ctx.replica_id_in_sync_group, 0), value, tf.zeros_like(value)))


def average_batch_statistics(strategy, model):
    """Average BatchNorm's moving mean and variance over the replicas.

    Keras 3 creates them unsynchronised (aggregation 'none'): each replica updates its own copy from its
    slice of the batch, so the copies drift apart. The moving average is linear, so averaging the copies
    gives the moving mean one process would have computed from the whole batches (the variance misses
    only the spread between the slices' means).
    """
    stats = [var for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
             for var in (layer.moving_mean, layer.moving_variance)]
    if stats and strategy.num_replicas_in_sync > 1:
        _all_reduce_into(strategy, stats, "mean")


def _all_reduce_into(strategy, variables, op, contribution=lambda ctx, value: value):
    """Assign to every copy of `variables` the all-reduce (op 'sum' or 'mean') of each replica's contribution."""

    def contribute():
        ctx = tf.distribute.get_replica_context()
        # One packed all-reduce needs one dtype: float64 holds every float32 weight and integer counter exactly.
        values = [tf.cast(tf.convert_to_tensor(var), tf.float64) for var in variables]
        return ctx.all_reduce(op, [contribution(ctx, value) for value in values])

    @tf.function
    def exchange():
        return strategy.run(contribute)

    for var, value in zip(variables, exchange()):
        var.assign(tf.cast(strategy.experimental_local_results(value)[0], var.dtype))


def weights_fingerprint(model):
    """sha256 of every weight's bytes (16 hex digits): equal on two workers iff their weights are bit-identical."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def outside_strategy(model):
    """A copy of `model` with the same weights whose variables belong to no strategy: the chief predicts,
    saves and exports it alone, without collectives."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _sharded_by_data(dataset):
    # Every worker builds the same global batches and keeps its replica's slice of each: the steps are
    # exactly those of one process with the global batch (files-based sharding would change the order).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# Fault point "checkpoint.written" (tests/test_multiworker_faults.py): TF calls write callbacks once a checkpoint's
# files are written, before the manager's own, which records it as the latest in the folder's `checkpoint` file.
_SAVE_OPTIONS = tf.train.CheckpointOptions(experimental_write_callbacks=[lambda: runfiles.fault("checkpoint.written")])


class EpochLoop:
    """model.fit's epoch loop for a distribution strategy: train_step under strategy.run, validation, callbacks,
    and a tf.train checkpoint at the end of every epoch (on every worker; `checkpoint_dir` is the chief's run
    folder on the chief, scratch on the others)."""

    def __init__(self, model, strategy, checkpoint_dir, input_spec):
        self.model, self.strategy = model, strategy
        with strategy.scope():
            compat.symbolic_build(model, input_spec)  # as fit does first, on a path MWMS accepts
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(checkpoint_dir), max_to_keep=2)

    def restore(self, chief):
        """Epochs finished before an interruption: the chief reads its checkpoint, the others get its values."""
        if chief and self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        sync_from_chief(self.strategy, [*self.model.variables, *self.model.optimizer.variables, self.epoch])
        return int(self.epoch.numpy())

    def fit(self, train, val, *, epochs, initial_epoch, steps, callbacks):
        """Epochs initial_epoch..epochs-1 of `steps` global batches from `train`, each validated on `val`
        (None: no validation)."""
        model, strategy = self.model, self.strategy
        batches = iter(strategy.experimental_distribute_dataset(_sharded_by_data(train)))
        val_steps = int(val.cardinality()) if val is not None else 0
        if val is not None:
            val = strategy.experimental_distribute_dataset(_sharded_by_data(val))
        loss = next(m for m in model.metrics if m.name == "loss")

        @tf.function
        def train_step(iterator):
            strategy.run(model.train_step, args=(next(iterator),))
            # The epoch's running loss over all workers: each sees the same value and stops at the same batch.
            return loss.result()

        @tf.function
        def evaluate(iterator):
            for _ in tf.range(val_steps):
                strategy.run(model.test_step, args=(next(iterator),))
            return model.get_metrics_result()

        results = tf.function(model.get_metrics_result)
        model.stop_training = False
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                callbacks.on_train_batch_end(step, {"loss": float(train_step(batches))})
                if model.stop_training:
                    break
            if model.stop_training:
                break
            average_batch_statistics(strategy, model)  # before validation and the checkpoint: every copy alike
            logs = {name: float(value) for name, value in results().items()}
            model.reset_metrics()
            if val is not None:
                callbacks.on_test_begin()
                val_logs = {name: float(value) for name, value in evaluate(iter(val)).items()}
                callbacks.on_test_end(val_logs)
                logs.update({f"val_{name}": value for name, value in val_logs.items()})
            callbacks.on_epoch_end(epoch, logs)
            # After the epoch's files: a kill in between repeats the epoch, which gives the same batches.
            self.epoch.assign(epoch + 1)
            runfiles.fault("checkpoint")
            self.manager.save(options=_SAVE_OPTIONS)
            runfiles.fsync_tree(self.manager.directory)  # TensorFlow renames its checkpoint files unflushed (no fsync)
            runfiles.fault("checkpoint.saved")
        callbacks.on_train_end(logs)
