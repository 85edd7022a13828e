"""Every use of private Keras and TensorFlow API in tfcnn: one small function per workaround, each naming the
upstream issue it tracks.

No other tfcnn module reaches into `keras.src`, `tensorflow.python` or a private attribute of a Keras or
TensorFlow object (tests/test_compat.py checks). Private API may change in any release, so
tests/test_compat.py fails as soon as the installed Keras or TensorFlow differs from CHECKED_AGAINST. To
upgrade: re-check each entry below (is its upstream issue fixed, so the entry can go? does the private name
still exist and mean the same?), run tests/test_export.py, test_train.py, test_faults.py and
test_multiworker.py, then update CHECKED_AGAINST.

Keras and TensorFlow are imported inside the functions: tfcnn.export imports this module and loads no
TensorFlow until it writes something.
"""
import os

CHECKED_AGAINST = {"keras": "3.15.1", "tensorflow": "2.21.0"}

# Private hooks that tfcnn's subclasses override or read (the override itself has to live in its class).
# tests/test_compat.py checks that each still exists: a renamed hook would otherwise be silently skipped.
OVERRIDDEN = {
    # tfcnn.checkpoints.ModelCheckpoint: writes the best weights atomically; Keras 3 writes them in place, so a
    # kill mid-write leaves a truncated file (related: keras-team/keras#17012).
    "keras.callbacks.ModelCheckpoint": ("_save_model",),
    # tfcnn.checkpoints.BackupAndRestore: two atomically written copies with a checksum; Keras' copies can be
    # truncated or mismatched by a kill (keras-team/keras#20463).
    "keras.callbacks.BackupAndRestore": ("_save_model", "_current_epoch", "_last_batch_seen"),
    # tfcnn.optim.RecipeSGD: airbench's lookahead runs right after each update; Keras has no public per-step
    # hook inside the optimizer's (compiled) apply (no upstream issue found).
    "keras.optimizers.Optimizer": ("_backend_apply_gradients",),
}


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels (the default on Linux x86; TF_ENABLE_ONEDNN_OPTS=0 turns them
    off). TensorFlow has no public query (tensorflow/tensorflow#17176 asked for one and was closed without)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"


def configure_coordination_service(cluster, timeout_ms):
    """Start TF's coordination service for a MultiWorkerMirroredStrategy over `cluster` (TF_CONFIG's) with
    deadlines: waiting for the peers to register ends after `timeout_ms`, and a peer without a heartbeat for
    `timeout_ms` aborts the others' collectives. MWMS starts the service itself with no deadline, so a worker
    whose peer never starts waits forever; TF 2.21 has no public option for this (no upstream issue found)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
                          for job in ("chief", "worker") if job in cluster],
        cluster_register_timeout_in_ms=timeout_ms, heartbeat_timeout_in_ms=timeout_ms)
    # Without the barrier only the other workers' registration has a deadline, not the leader's wait for them.
    context.context().coordination_service.cluster_register_with_barrier = True


def wait_at_barrier(name, timeout_s):
    """Wait at the coordination service's barrier `name` until every task of the cluster got there; fails with a
    tf.errors exception once a task is gone or `timeout_s` passes. TF has no public API for it (its own
    multi-worker code calls this private one)."""
    from tensorflow.python.eager import context

    context.context().wait_at_barrier(name, int(timeout_s * 1000))


def symbolic_build(model, input_spec):
    """Build the compiled model's metric, loss and optimizer state from `input_spec`, as model.fit does first.

    Keras 3.15's fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585: its symbolic build
    and metric reduction call strategy.reduce on per-replica values), so tfcnn.distributed.EpochLoop runs the
    steps itself and needs this build first; the optimizer must exist in the strategy's scope before the first
    distributed step (keras-team/keras#23085, fixed after Keras 3.15.1)."""
    model._symbolic_build(data_batch=input_spec)


def input_signature(model):
    """The serving input signature Keras' own model.export uses for `model` (no public equivalent; no upstream
    issue found)."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)


def drop_duplicate_variables(archive):
    """Keep each weight once in a keras.export.ExportArchive's SavedModel.

    Keras 3.15 stores every weight twice (its `variables` collections and, as separate checkpoint values, the
    serving function's captured variables), so variables/ was twice the weights (keras-team/keras#23553; fix
    proposed in keras-team/keras#23562). The serving signature needs only the captured ones."""
    archive._tf_trackable.variables = []
    archive._tf_trackable.trainable_variables = []
    archive._tf_trackable.non_trainable_variables = []


def frozen_function(concrete_function):
    """`concrete_function` with every variable folded in as a constant (TF2 has no public way to freeze a graph:
    tensorflow/tensorflow#48639)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function)


def patch_tf2onnx():
    """Make tf2onnx 1.17 run on NumPy 2 (it still uses np.object, np.cast etc.: onnx/tensorflow-onnx#2373), with
    the shim Keras ships for its own ONNX exporter (its probes of np.object warn: silenced); a no-op if that shim
    is gone."""
    import warnings

    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch()


def set_initial_epoch(model, epoch):
    """Make model.fit start at `epoch`, set from a callback's on_train_begin (BackupAndRestore's restore point).
    Keras reads the model's private counter and keeps it across fits (related: keras-team/keras#19179)."""
    model._initial_epoch = epoch


def backup_position(callback):
    """(epoch, last batch seen) a keras.callbacks.BackupAndRestore records in its metadata (private counters;
    see OVERRIDDEN)."""
    return callback._current_epoch, callback._last_batch_seen


def ema_pairs(optimizer):
    """(variable, its moving average) for every variable a built `use_ema` optimizer averages. Keras has only
    SwapEMAWeights, which swaps in place by adding and subtracting (rounding), no public access to the
    averages (no upstream issue found)."""
    return [(var, average) for var, average in zip(optimizer._trainable_variables,
                                                   optimizer._model_variables_moving_average)
            if average is not None]


def tensorboard_writers(callback):
    """The summary writers of a keras.callbacks.TensorBoard, to flush them at an epoch's end: Keras buffers up to
    two minutes of events, which a kill loses, and has no public flush (no upstream issue found)."""
    return list(callback._writers.values())


def safe_mode():
    """A context in which Keras deserialises in safe mode (a Lambda layer's Python code is refused), whatever
    keras.config.enable_unsafe_deserialization() set for the process: Keras 3.15's deserialize_keras_object takes
    that process-wide switch over load_model's own safe_mode=True, so one call of it anywhere (a notebook cell) would
    let a model file's code run in tfcnn's loader (no upstream issue found)."""
    from keras.src.saving import serialization_lib

    return serialization_lib.SafeModeScope(True)
