"""Ray Tune as the cluster backend of tfcnn.experiments (--backend ray): a grid's runs as Tune trials.

Each trial trains one run with tfcnn.train in its usual folder, <runs_dir>/<grid>/<label>, reporting every
epoch's validation accuracy to Tune (whose ASHA or median-stopping scheduler may stop it), with `cpus_per_trial`
cores reserved and as TensorFlow's thread count. The experiment's state lives in <runs_dir>/<grid>/ray/; the same
command restores it (Tuner.restore): finished trials stay finished and an unfinished run resumes from its last
epoch, as any tfcnn run does. Without --address, ray.init starts an embedded local Ray.
"""
import os
from pathlib import Path

from tfcnn.errors import TfcnnError
from tfcnn.sweeps import Outcome

EXPERIMENT = "tune"  # <runs_dir>/<grid>/ray/tune/: Tune's experiment state


def _ray():
    try:
        import ray
        from ray import tune
    except ModuleNotFoundError:
        raise TfcnnError("--backend ray needs Ray Tune, which is not installed: pip install 'tfcnn[sweeps]' "
                         "(ray[tune]==2.60.0)") from None
    return ray, tune


def _train(params, configs):
    """One Tune trial: the run params["run"] of `configs` ({label: Config dict}), reported to Tune."""
    import keras
    from ray import tune

    from tfcnn import sweeps
    from tfcnn.config import Config

    config = Config(**configs[params["run"]])

    class ReportToTune(keras.callbacks.Callback):
        # The last epoch is reported with the run's metrics, below: a scheduler that stops a trial at its last
        # report must not stop it before its test evaluation.
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is not None and epoch + 1 < config.epochs:
                tune.report({"val_accuracy": float(value), "epoch": epoch + 1})

    try:
        metrics = sweeps.run(config, callbacks=[ReportToTune()])
    except TfcnnError as exc:  # the run's own failure (e.g. a diverging loss): no retry, the others go on
        tune.report({"epoch": config.epochs, "final": True, "error": str(exc)})
        return
    # The run's metrics stay in its folder (Ray's workers share --runs-dir): Tune's table shows the headline only.
    tune.report({"val_accuracy": metrics.get("final_val_accuracy") or 0.0, "epoch": config.epochs, "final": True,
                 "test_accuracy": metrics["test"]["accuracy"]})


def _scheduler(pruner, epochs):
    from ray.tune import schedulers

    if pruner in (None, "none"):
        return None
    if pruner == "hyperband":  # ASHA: asynchronous successive halving, Hyperband's bracket without its waits
        return schedulers.ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=max(epochs, 1),
                                        grace_period=1)
    return schedulers.MedianStoppingRule(time_attr="epoch", metric="val_accuracy", mode="max", grace_period=1,
                                         min_samples_required=2)


def run_grid(runs, *, name, folder, address=None, pruner=None, cpus_per_trial=None):
    """Train `runs` [(label, params, Config)] as Ray Tune trials; returns {label: tfcnn.sweeps.Outcome}.

    The Tune experiment lives in <folder>/ray/: a second call restores it (unfinished trials resume, errored ones
    run again) instead of starting over."""
    ray, tune = _ray()
    cores = os.cpu_count() or 1
    cpus = cpus_per_trial or cores
    if cpus < 1:
        raise TfcnnError(f"--cpus-per-trial must be at least 1, got {cpus}")
    labels = [label for label, _, _ in runs]
    configs = {}
    for label, _, config in runs:
        values = config.to_dict()
        for key in ("runs_dir", "saved_models_dir", "data_dir"):  # a trial runs in its own working directory
            if values[key]:
                values[key] = str(Path(values[key]).resolve())
        values["cpu_threads"] = values["cpu_threads"] or cpus
        configs[label] = values
    package_root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if os.environ.get("TFCNN_DATA_DIR"):
        env["TFCNN_DATA_DIR"] = str(Path(os.environ["TFCNN_DATA_DIR"]).resolve())
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
            else:
                ray.init(num_cpus=cores, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise TfcnnError(f"cannot start or reach Ray{' at ' + address if address else ''}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}") \
                from None
    try:
        trainable = tune.with_resources(tune.with_parameters(_train, configs=configs), {"cpu": cpus})
        storage = Path(folder).resolve() / "ray"
        path = storage / EXPERIMENT
        if tune.Tuner.can_restore(str(path)):
            print(f"[{name}] restoring the Ray Tune experiment {path}", flush=True)
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            epochs = max(config.epochs for _, _, config in runs)
            tuner = tune.Tuner(
                trainable, param_space={"run": tune.grid_search(labels)},
                tune_config=tune.TuneConfig(scheduler=_scheduler(pruner, epochs), reuse_actors=False),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(storage), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=2)))
        results = tuner.fit()
        outcomes = {}
        for result in results:
            label = result.config["run"]
            last = result.metrics or {}
            if result.error is not None:
                text = str(result.error).strip().splitlines()
                outcomes[label] = Outcome("FAIL", text[-1] if text else result.error.__class__.__name__)
            elif last.get("final") and last.get("error"):
                outcomes[label] = Outcome("FAIL", last["error"])
            elif last.get("final"):
                outcomes[label] = Outcome("COMPLETE")
            else:
                outcomes[label] = Outcome("PRUNED", f"stopped by the scheduler after epoch {last.get('epoch', 0)}")
        return outcomes
    finally:
        if started:
            ray.shutdown()
