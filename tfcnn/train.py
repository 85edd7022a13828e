"""Training: `train_and_evaluate(config)` runs one experiment end to end on model.fit + callbacks.

    python -m tfcnn.train --arch resnet --stack-n 5            # the ResNet lab's configuration
    python -m tfcnn.train --arch lenet5 --dataset mnist --epochs 15
    python -m tfcnn.train --config configs/lenet5_mnist_demo.yaml

A run lives in runs/<name>/: config.json, history.csv, logs/ (TensorBoard), best.weights.h5
(chosen on the validation split), metrics.json, classification_report.txt, confusion_matrix.png,
curves.png, model.keras. The final model is exported to saved_models/<name>/. Starting the same
command again with the same --name continues an interrupted run from its last finished epoch.

Nothing is lost under faults (README, "When things go wrong"): one process owns a run folder (a lock
beside it, tfcnn.runfiles); every file is written to a temporary sibling and renamed into place, and
the checkpoints come from tfcnn.checkpoints, so a kill at any moment leaves whole files and the same
command resumes to the same result; metrics.json, written last, marks the run finished; a full disk
stops the run with one line and it resumes once space is freed.

Under a mirrored strategy (--strategy mirrored, or multiworker with TF_CONFIG: README, "Training on several
machines") the epochs run in tfcnn.distributed.EpochLoop instead of model.fit, with the same callbacks and
files; in a multi-worker run the chief (worker 0) alone writes them.
"""
import atexit
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from tfcnn import (callbacks as tfcnn_callbacks, checkpoints, compat, config as config_lib, data, distributed, evaluate,
                   export, hardware, initializers, kernels, models, optim, pipelines, runfiles, transfer)
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli
from tfcnn.hardware import cpu_has_bf16 as _cpu_has_bf16  # a module name configure_runtime looks up (tests patch it)

RUN_WRITTEN = "tfcnn-run-written"  # the multi-worker barrier the others wait at while the chief writes the run


def configure_runtime(config):
    """Threads, logical CPU devices, the distribution strategy, seeds and precision, in the order
    TensorFlow needs (before its runtime starts). Returns (strategy, precision policy name)."""
    try:
        # TF's own thread pools unless --cpu-threads is given: with the fused-BatchNorm bfloat16 graph
        # they train faster than pinning inter-op 2 / intra-op all cores (which helped the unfused float32
        # graph); docs/results/performance.md.
        if config.cpu_threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.cpu_threads)
        if config.cpu_devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices)
    except RuntimeError:
        pass  # already initialised (a second run in the same process): keep the first settings
    # Multi-worker collectives must be configured before any op runs, so the strategy comes next.
    strategy = make_strategy(config)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = config.mixed_precision
    gpu = bool(tf.config.list_physical_devices("GPU"))
    onednn = not gpu and compat.onednn_enabled()
    if precision == "auto":
        # CPUs with native bfloat16 (AVX512-BF16, AMX) train faster in bfloat16 at unchanged test accuracy
        # (docs/results/performance.md). Elsewhere oneDNN would emulate bfloat16, slower than float32.
        precision = "float16" if gpu else "bfloat16" if onednn and _cpu_has_bf16() else "float32"
    # bfloat16 on CPU: TF's oneDNN auto-mixed-precision graph pass runs convolutions, matmuls and their
    # neighbours in bfloat16 (variables, softmax and loss stay float32). Its speed-up equals Keras'
    # mixed_bfloat16 policy (measured), but the model itself stays float32, so saved models and their
    # SavedModel/ONNX/TFLite exports carry no bfloat16 ops.
    onednn_amp = precision == "bfloat16" and onednn
    _set_onednn_bfloat16(onednn_amp)
    policy = "float32" if precision == "float32" or onednn_amp else f"mixed_{precision}"
    keras.mixed_precision.set_global_policy(policy)
    return strategy, precision


def _set_onednn_bfloat16(enabled):
    """Switch TF's oneDNN bfloat16 auto-mixed-precision graph pass (for graphs traced from now on)."""
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": enabled})


def make_strategy(config):
    if config.strategy == "multiworker":
        return distributed.multi_worker_strategy(config.peer_timeout)  # cluster from TF_CONFIG; before any op
    gpus = tf.config.list_logical_devices("GPU")
    if config.strategy == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if config.strategy == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _check_run_dir(config, run_dir):
    """Refuse a finished run, or an unfinished one with other settings, before any work (reads only)."""
    saved = run_dir / "config.json"
    if config.overwrite:
        return
    if (run_dir / "metrics.json").exists():
        raise TfcnnError(f"run {run_dir} already finished; choose another --name or pass --overwrite to replace it")
    if saved.exists():
        old = json.loads(saved.read_text())
        changed = config.changed_from(old, config_lib.RESUME_FREE)
        if changed:
            raise TfcnnError(f"{run_dir} holds an unfinished run with different settings ({', '.join(changed)}); "
                             "resume it with the same settings or choose another --name")


def _prepare_run_dir(config, run_dir):
    if config.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    runfiles.makedirs(run_dir)
    runfiles.remove_temporaries(run_dir)  # what a killed run was writing; this process holds the folder's lock
    with runfiles.atomic_path(run_dir / "config.json") as tmp:
        config.to_json(tmp)


@contextlib.contextmanager
def _full_disk_stops_the_run(folder, model, run_folders):
    """A full disk under `folder` ends the run with one line instead of a traceback: every file was written
    atomically, so the last good checkpoint is whole and the same command resumes once space is freed."""
    try:
        yield
    except Exception as exc:
        if not runfiles.out_of_space(exc):
            raise
        raise runfiles.out_of_space_error(folder, _space_needed(model, run_folders)) from None


def _space_needed(model, run_folders):
    """Free space the rest of a run needs, roughly: at its peak a run holds two backup copies while a third is
    being written, the best weights, model.keras (each a checkpoint: weights and optimizer slots) and the
    SavedModel (a checkpoint and the bare weights), plus ~2 MB of figures and logs; less what `run_folders`
    (the run's and its saved model's) hold already."""
    weights = 4 * model.count_params()
    checkpoint = 3 * weights  # the weights and two optimizer slots (Adam's; SGD's momentum has one)
    held = sum(f.stat().st_size for folder in run_folders if folder.exists() for f in folder.rglob("*") if f.is_file())
    return max(6 * checkpoint + weights + 2**21 - held, 2**20)


@dataclasses.dataclass
class RunContext:
    """What every stage of one run shares."""

    config: config_lib.Config
    pipes: object  # tfcnn.pipelines.Pipelines
    run_dir: Path
    strategy: object  # tf.distribute.Strategy
    chief: bool  # this worker writes the run's files
    steps: int  # train batches per epoch
    callbacks: tuple = ()  # the caller's extra Keras callbacks, after tfcnn's own


def _fit_stage(model, run, stage, epochs):
    """One training stage, resumed after its last finished epoch: model.fit on one device, the distributed
    EpochLoop under a tf.distribute strategy (Keras 3.15's fit cannot run under MultiWorkerMirroredStrategy,
    keras-team/keras#20585)."""
    config, pipes, run_dir, strategy, chief, steps = (run.config, run.pipes, run.run_dir, run.strategy, run.chief,
                                                      run.steps)

    backup = run_dir / f"backup_{stage}"
    done = run_dir / f"{stage}.done"
    loop = restore = None
    if _custom_loop(strategy):
        eval_batches = pipes.val if pipes.val is not None else pipes.test  # only their element spec is read
        loop = distributed.EpochLoop(model, strategy, backup, eval_batches.element_spec)
        initial_epoch = loop.restore(chief)  # every worker learns the chief's epoch; if all: on to the .done file
    elif done.exists():
        shutil.rmtree(backup, ignore_errors=True)  # killed between marking the stage done and removing its backup
        return
    else:
        restore = checkpoints.restore_point(backup)  # raises if its checkpoint files are damaged beyond use
        initial_epoch = restore[0] if restore else 0
    if 0 < initial_epoch < epochs:
        print(f"resuming {stage} of {run_dir.name} after epoch {initial_epoch}/{epochs}", flush=True)
    if initial_epoch < epochs:
        callbacks, last = tfcnn_callbacks.make_callbacks(config, run_dir, stage, initial_epoch, restore,
                                                         backup=loop is None, validation=pipes.val is not None)
        callbacks += [*run.callbacks, *last]
        if loop is None and model.steps_per_execution > 1:
            feed = tfcnn_callbacks.EpochFeed(pipes, config.seed, steps)
            train, steps_per_epoch, callbacks = feed.dataset, None, [feed, *callbacks, tfcnn_callbacks.CallProgbar()]
        else:
            train = pipelines.train_epochs(pipes, start_epoch=initial_epoch, epochs=epochs, seed=config.seed)
            steps_per_epoch = steps
        if loop is None:
            model.fit(train, validation_data=pipes.val, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      shuffle=False, callbacks=callbacks, verbose=config.verbose)
        else:
            callback_list = keras.callbacks.CallbackList(callbacks, model=model, add_progbar=config.verbose > 0,
                                                         epochs=epochs, steps=steps, verbose=config.verbose)
            loop.fit(train, pipes.val, epochs=epochs, initial_epoch=initial_epoch, steps=steps, callbacks=callback_list)
        guard = next(c for c in callbacks if isinstance(c, tfcnn_callbacks.NanGuard))
        if guard.failed_at is not None:
            best = run_dir / "best.weights.h5"
            which = "best" if config.checkpoint == "best" else "last"
            kept = (f"the {which} checkpoint of the earlier epochs is kept in {best}" if best.exists()
                    else "no epoch had finished")
            raise TfcnnError(f"loss became NaN/inf in epoch {guard.epoch + 1}, {guard.failed_at}; stopped "
                             f"({kept}). Lower --lr or add --warmup-epochs.")
    runfiles.write_text(done, "ok\n")
    if loop is None:
        runfiles.fault("stage.done")
        shutil.rmtree(backup, ignore_errors=True)


def _custom_loop(strategy):
    """Mirrored strategies (one machine or several) train in distributed.EpochLoop, one device in model.fit."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


# ---------------------------------------------------------------- what a run trains
# The one door to a run's data, model and compile: train_and_evaluate (both loops), tfcnn.bench and the
# benchmarks build through these, so a benchmark times exactly what a run trains.

def decoupled_weight_decay(config):
    """Whether weight decay is the optimizer's (decoupled) rather than L2 in the model: ResNet carries it as L2
    in its layers (the lab's choice); other archs, and any model fine-tuned from a saved one, decay in the
    optimizer."""
    return config.arch != "resnet" or bool(config.init_from)


def load_data(config):
    """The run's dataset (tfcnn.data.load of config.dataset and config.classes)."""
    return data.load(config.dataset, config.data_dir, classes=config.classes)


def make_pipelines(config, ds, global_batch=None):
    """The run's tf.data pipelines of `ds`, batched at `global_batch` (default config.batch_size: one replica)."""
    return pipelines.make_pipelines(ds, batch_size=global_batch or config.batch_size, val_fraction=config.val_fraction,
                                    seed=config.seed, augment=config.augment, limit_train=config.limit_train,
                                    limit_test=config.limit_test, one_hot=config.label_smoothing > 0, cutout=config.cutout,
                                    class_weight=config.class_weight, flip=config.flip, translate=config.translate,
                                    pad_mode=config.pad_mode)


def build_model(config, pipes, num_classes):
    """(model to train, plain model, frozen layer names): the new or fine-tuned network; under SAM the model to
    train wraps the plain one, which is what is saved."""
    frozen = []
    if config.init_from:
        base = models.load_model(config.init_from)
        if tuple(base.input_shape[1:]) != tuple(pipes.image_shape):
            raise TfcnnError(f"--init-from model takes {base.input_shape[1:]} images but {config.dataset} has "
                             f"{tuple(pipes.image_shape)}; fine-tune on data of the same shape")
        model = transfer.replace_head(base, num_classes)
        frozen = transfer.apply_freeze(model, config.freeze)
    else:
        model = models.build(config.arch, pipes.image_shape, num_classes,
                             normalization=(pipes.mean.tolist(), pipes.std.tolist()), **config.model_options())
        _data_driven_init(model, config, pipes)
    if config.optimizer == "sam" or config.sam_epochs:
        # --sam-epochs: plain steps until tfcnn.callbacks.SamFrom turns SAM on for the last epochs.
        sam = optim.with_sam(model, config.sam_rho, sharpness_aware=config.optimizer == "sam")
        return sam, model, frozen
    return model, model, frozen


def compile_model(model, plain, config, steps_per_epoch, *, global_batch=None, steps_per_execution=None, lr=None,
                  epochs=None):
    """Compile `model` (build_model's first) with the config's optimizer, loss and accuracy. `plain`: build_model's
    second (the airbench recipe's optimizer reads its layers); `lr` / `epochs`: a stage's own (fine-tuning);
    `steps_per_execution`: None takes the config's."""
    optimizer = optim.make_optimizer(config, steps_per_epoch, lr=lr, epochs=epochs,
                                     decoupled_weight_decay=decoupled_weight_decay(config), model=plain,
                                     global_batch=global_batch or config.batch_size)
    if config.label_smoothing > 0:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"],
                  steps_per_execution=config.steps_per_execution if steps_per_execution is None
                  else steps_per_execution)


def _data_driven_init(model, config, pipes):
    """airbench's initialisations (tfcnn.initializers), when the config asks for them. A resumed run's backup
    overwrites them with the trained weights."""
    if config.dirac_init:
        initializers.dirac_init(model)
    if config.whiten_init:
        # airbench whitens on the first 5,000 training images (its patch covariance settles well before).
        initializers.init_whitening(model, pipes.x_train[:5000])


def train_and_evaluate(config, callbacks=()):
    """Train per `config`, evaluate the best (validation) checkpoint on test, write every artefact.

    `callbacks` are extra Keras callbacks, run after tfcnn's own (but before the backup, which marks an epoch
    done). Returns the metrics dict that is also written to runs/<name>/metrics.json (None on a multi-worker
    run's other workers, which write no run).
    """
    if config.verbose is None:  # progress bars for a terminal, one line per epoch for a log file or pipe
        config = dataclasses.replace(config, verbose=1 if sys.stdout.isatty() else 2)
    strategy, precision = configure_runtime(config)
    if not config.name:
        config.name = f"{config.arch}-{config.dataset.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    chief = distributed.is_chief(strategy)
    scratch = None
    if not chief:
        # Multi-worker: every worker runs the same steps (collectives need all of them), but only the
        # chief's files are kept; the others write to a scratch folder that is removed at exit (or, after
        # a kill, at the next start).
        scratch = distributed.scratch_folder(Path(config.runs_dir) / config.name, strategy)
        atexit.register(_remove_scratch, scratch, distributed.claim_scratch(scratch))
        config = dataclasses.replace(config, runs_dir=str(scratch), saved_models_dir=str(scratch), tensorboard=False,
                                     verbose=0)
    run_dir = Path(config.runs_dir) / config.name
    with runfiles.Lock(run_dir, "run folder", hint="wait for it to finish or choose another --name"):
        runfiles.fault("lock")
        _check_run_dir(config, run_dir)
        # A peer lost anywhere in the run is one line, from building the model (MWMS broadcasts the chief's initial
        # weights) to the final barrier; only the chief's wait after writing the run catches it itself (a warning).
        with distributed.peers_required(strategy):
            return _run(config, callbacks, strategy, precision, chief, scratch, run_dir)


def _remove_scratch(scratch, lock):
    shutil.rmtree(scratch, ignore_errors=True)
    lock.release()


def _run(config, callbacks, strategy, precision, chief, scratch, run_dir):
    """train_and_evaluate, holding the run folder's lock."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    ds = load_data(config)
    pipes = make_pipelines(config, ds, global_batch)
    if pipes.val_size == 0 and config.checkpoint == "best":
        raise TfcnnError("the validation split is empty; the best checkpoint is chosen on it, so use --val-fraction > 0 "
                         "or --checkpoint last")
    steps = math.ceil(pipes.train_size / global_batch)
    per_call = 1 if _custom_loop(strategy) else config.steps_per_execution  # EpochLoop calls train_step per batch
    start = time.perf_counter()  # the speedrun's clock (airbench's): data-driven init, epochs and the TTA pass
    with strategy.scope():
        model, plain, frozen = build_model(config, pipes, ds.num_classes)
        compile_model(model, plain, config, steps, global_batch=global_batch, steps_per_execution=per_call)
    run = RunContext(config, pipes, run_dir, strategy, chief, steps, tuple(callbacks))
    saved_dir = Path(config.saved_models_dir) / config.name
    with _full_disk_stops_the_run(run_dir, plain, (run_dir, saved_dir)):
        _prepare_run_dir(config, run_dir)
        if not chief:
            print(f"{distributed.task_name(strategy)}: training {config.name} with the chief; its files go to scratch "
                  f"{scratch}", flush=True)
        print(f"run {config.name}: {config.arch} on {config.dataset} ({pipes.train_size} train / {pipes.val_size} "
              f"val / {pipes.test_size} test), {replicas} replica(s), global batch {global_batch}, {precision}, "
              f"{config.epochs} epochs -> {run_dir}  (resume: same command with --name {config.name})", flush=True)
        if per_call != config.steps_per_execution:
            print(f"steps_per_execution {config.steps_per_execution} ignored: under a mirrored strategy the epochs run "
                  "in tfcnn.distributed.EpochLoop, one batch per call", flush=True)
        if frozen:
            print(f"frozen {len(frozen)} layers: {', '.join(frozen[:6])}{', ...' if len(frozen) > 6 else ''}",
                  flush=True)

        _fit_stage(model, run, "train", config.epochs)
        if config.fine_tune_epochs:
            # Second stage: everything but BatchNorm trains, at a lower rate, from the stage-1 best weights
            # (the chief's: other workers get them from it when the stage starts).
            if chief:
                plain.load_weights(run_dir / "best.weights.h5")
            with strategy.scope():
                transfer.unfreeze_for_fine_tuning(plain)
                model = optim.with_sam(plain, config.sam_rho) if config.optimizer == "sam" else plain
                lr = config.fine_tune_lr or config.lr / 10
                compile_model(model, plain, config, steps, global_batch=global_batch, steps_per_execution=per_call,
                              lr=lr, epochs=config.fine_tune_epochs)
            _fit_stage(model, run, "fine_tune", config.fine_tune_epochs)
        wall = time.perf_counter() - start
        if distributed.is_multi_worker(strategy):
            # Workers apply the same all-reduced gradients to the same weights: their copies must be bit-identical.
            print(f"{distributed.task_name(strategy)}: final weights sha256 {distributed.weights_fingerprint(plain)}",
                  flush=True)
        if not chief:
            distributed.barrier(strategy, RUN_WRITTEN)  # stay in the cluster until the chief has written the run
            return None

        metrics = _evaluate_and_save(run, plain, ds, saved_dir, wall=wall, precision=precision, frozen=frozen)
    try:
        with distributed.peers_required(strategy):
            distributed.barrier(strategy, RUN_WRITTEN)  # releases the others, waiting there until the run is written
    except TfcnnError as exc:
        # A worker killed after its last step never gets here; the run is finished and whole all the same.
        print(f"warning: run {config.name} is finished, but {str(exc).split(';')[0]} at its end", file=sys.stderr,
              flush=True)
    return metrics


def _evaluate_and_save(run, plain, ds, saved_dir, *, wall, precision, frozen):
    """Evaluate the best checkpoint on test; write the report, figures, model.keras, the SavedModel and,
    last, metrics.json (which marks the run finished: the same command then stops at once, so every other
    file must be whole before it exists). Returns the metrics."""
    config, pipes, strategy, run_dir = run.config, run.pipes, run.strategy, run.run_dir
    replicas = strategy.num_replicas_in_sync

    tta = None
    if config.tta != "none":
        # The TTA pass is on the speedrun's clock (as airbench's, whose views run at its training precision), so
        # it runs at the training precision too; the single view and every export below are float32.
        plain.load_weights(run_dir / "best.weights.h5")
        tta_start = time.perf_counter()
        with kernels.compiled_inference():
            tta_metrics, _, _ = evaluate.test_report(plain, pipes.x_test, pipes.y_test, pipes.class_names,
                                                     tta=config.tta, batch_size=1000)
        tta_time = time.perf_counter() - tta_start
        tta = {"views": evaluate.TTA_VIEWS[config.tta], "kind": config.tta, "precision": precision,
               "time_s": round(tta_time, 2), **{k: tta_metrics["test"][k] for k in ("accuracy", "f1_macro", "loss")}}
    # Test metrics come from the float32 model that is saved and exported (and that
    # `python -m tfcnn.evaluate` reproduces), not from its bfloat16 rewrite.
    _set_onednn_bfloat16(False)
    plain.load_weights(run_dir / "best.weights.h5")
    if _custom_loop(strategy):
        plain = distributed.outside_strategy(plain)  # evaluated, saved and exported by the chief alone
    hist = evaluate.history(run_dir).to_dict("records")  # epochs numbered from 1
    # Times summed over history.csv: a resumed run counts the epochs of its earlier processes too.
    train_time = sum(row["epoch_time_s"] for row in hist if math.isfinite(row.get("epoch_time_s", math.nan)))
    validated = [row for row in hist if math.isfinite(row.get("val_accuracy", math.nan))]
    best_epoch = max(validated, key=lambda r: r["val_accuracy"]) if validated else {}
    kept = hist[-1] if config.checkpoint == "last" and hist else best_epoch
    extra = {
        "run": config.name, "arch": config.arch, "dataset": config.dataset,
        "params": int(plain.count_params()),
        "epochs": len(hist), "best_epoch": int(best_epoch["epoch"]) if best_epoch else None,
        "best_val_accuracy": best_epoch.get("val_accuracy"),
        "checkpoint": config.checkpoint, "checkpoint_epoch": int(kept.get("epoch", 0)),
        "final_val_accuracy": hist[-1].get("val_accuracy") if validated else None,
        "train_time_s": round(train_time, 2), "wall_time_s": round(wall, 2),
        "epoch_time_s": round(train_time / len(hist), 3) if hist else None,
        "train_images_per_s": round(pipes.train_size * len(hist) / train_time, 1) if train_time else None,
        "precision_policy": precision, "replicas": replicas, "frozen_layers": frozen,
        "cpu": hardware.describe_cpu(hardware.cpu_info()),  # every time above is this machine's
    }
    class_ids = ds.class_ids or list(range(ds.num_classes))
    if tta:
        extra["time_to_tta_s"] = round(wall + tta["time_s"], 2)
    metrics, report, predicted = evaluate.test_report(plain, pipes.x_test, pipes.y_test, pipes.class_names,
                                                      extra=extra, class_ids=class_ids)
    if tta:
        metrics["test"]["tta"] = tta
    runfiles.fault("evaluate")
    evaluate.write_report_files(run_dir, report, pipes.y_test, predicted, pipes.class_names, class_ids)
    if hist:
        evaluate.plot_curves(run_dir / "history.csv", run_dir / "curves.png")
    with runfiles.atomic_path(run_dir / "model.keras") as tmp:
        plain.save(tmp)
    meta = {"name": config.name, "arch": config.arch, "dataset": config.dataset,
            "class_names": list(pipes.class_names), "class_ids": [int(i) for i in class_ids],
            "input_shape": list(pipes.image_shape),
            "preprocessing": "raw pixels 0-255, float32, NHWC; normalisation is inside the model",
            "mean": pipes.mean.tolist(), "std": pipes.std.tolist(),
            "test_accuracy": metrics["test"]["accuracy"]}
    with _full_disk_stops_the_run(saved_dir, plain, (run_dir, saved_dir)):
        target = export.export_saved_model(plain, saved_dir, meta)
    runfiles.write_json(run_dir / "metrics.json", metrics)
    t = metrics["test"]
    chosen = (f"best val {extra['best_val_accuracy']:.4f} at epoch {extra['best_epoch']}"
              if config.checkpoint == "best" else f"last epoch's weights ({extra['checkpoint_epoch']})")
    print(f"done: {config.name} test accuracy {t['accuracy']:.4f} (macro F1 {t['f1_macro']:.4f}), {chosen}, "
          f"{extra['epochs']} epochs in {train_time:.0f}s ({extra['train_images_per_s']} img/s) -> {run_dir}, {target}",
          flush=True)
    if tta:
        print(f"{config.name}: single-view {t['accuracy']:.4f}, TTA {tta['accuracy']:.4f} ({tta['views']} views), "
              f"{extra['time_to_tta_s']:.1f} s from the start of training to the TTA accuracy ({extra['cpu']})",
              flush=True)
    return metrics


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.train", description=__doc__.split("\n")[0])
    config_lib.add_flags(parser)
    args = parser.parse_args(argv)
    config = config_lib.from_args(args)
    train_and_evaluate(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
