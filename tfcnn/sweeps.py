"""Sweeps on Optuna: a grid or a search is a study, and each trial is one tfcnn.train run in its own folder.

The thin layer between tfcnn and the engine (tfcnn.experiments builds the grids' and searches' tables on it):
- storage: by default a journal file, <runs_dir>/<study>/study.journal (no server; the same command carries on
  where the last one stopped); --storage takes a database URL (postgresql://..., sqlite:///...) or
  journal:PATH (a journal on a shared filesystem), so that workers on several hosts share one study;
- a grid's runs are enqueued trials (params: the variant's label, and its seed in a seeded grid) that each
  worker claims one at a time; a search's trials are sampled by TPE over a YAML search space;
- a running trial beats a heartbeat; one silent for twice the interval (its worker died) is failed and queued
  again (optuna's RetryHeartbeatStaleTrialCallback), and its retry trains in the same run folder, which resumes
  from its last finished epoch (tfcnn.train). The run folder's lock (tfcnn.runfiles) keeps a trial from running
  twice at once even where a heartbeat is late;
- every epoch's validation accuracy is reported to the trial, and a pruner (median, hyperband) may stop it.
"""
import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import socket
import sys
import time
import typing
import warnings
from pathlib import Path

from tfcnn.config import REUSE_FREE, Config
from tfcnn.errors import TfcnnError

# The study's journal inside <runs_dir>/<study>/ when no --storage is given.
JOURNAL = "study.journal"
# Seconds between a running trial's heartbeats; a trial silent for GRACE x that long is taken as dead and retried.
HEARTBEAT = 30
GRACE = 2
# A trial that died this many times (its worker killed each time) is not retried again.
MAX_RETRY = 3
PRUNERS = ("none", "median", "hyperband")
METRICS = ("best_val_accuracy", "final_val_accuracy")  # what a search maximises: validation, never test
_BEAT = "tfcnn:heartbeat"


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise TfcnnError("sweeps run on Optuna, which is not installed: pip install 'tfcnn[sweeps]' "
                         "(or pip install -r requirements.txt)") from None
    optuna.logging.set_verbosity(logging.WARNING)  # tfcnn prints its own line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ---------------------------------------------------------------- storage

def _heartbeat_journal_class():
    optuna = _optuna()
    from optuna.storages._heartbeat import BaseHeartbeat

    class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with a heartbeat, which optuna 5.1 gives RDBStorage alone: each running
        trial's last beat is a system attribute of the trial, so that a dead worker's trial is found stale
        (and retried) the same way on a journal file as on a database."""

        def __init__(self, backend, heartbeat_interval, grace_period, callback):
            super().__init__(backend)
            self._heartbeat_interval, self._grace_period, self._callback = heartbeat_interval, grace_period, callback

        def record_heartbeat(self, trial_id):
            # A worker that was paused past its grace period finds its trial failed (and retried) by another.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_system_attr(trial_id, _BEAT, time.time())

        def _get_stale_trial_ids(self, study_id):
            # A retried trial carries its dead predecessor's last beat: its own start counts as a beat too.
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            return [t._trial_id for t in running
                    if now - max(t.system_attrs.get(_BEAT, 0.0),
                                 t.datetime_start.timestamp() if t.datetime_start else now) > self._grace_period]

        def get_heartbeat_interval(self):
            return self._heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self._callback

    return HeartbeatJournalStorage


def describe_storage(url, folder=None):
    """The storage as messages name it: the journal's path, or the URL without its password."""
    if not url:
        return str(Path(folder) / JOURNAL)
    if "://" in url and "@" in url:
        scheme, _, rest = url.partition("://")
        credentials, _, host = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if ":" in credentials else url
    return url.removeprefix("journal:")


def open_storage(url=None, folder=None, heartbeat=HEARTBEAT):
    """An Optuna storage with heartbeats and retries: a journal file (default <folder>/study.journal, or
    journal:PATH / a *.journal path) or an RDB URL (postgresql://user:password@host:port/db, sqlite:///file.db)."""
    optuna = _optuna()
    heartbeat = max(1, int(heartbeat))
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)
    where = describe_storage(url, folder)
    if not url or url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url.removeprefix("journal:")) if url else Path(folder) / JOURNAL
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:
            raise TfcnnError(f"cannot open the study journal {path}: {exc.strerror or exc}") from None
        return _heartbeat_journal_class()(backend, heartbeat, GRACE * heartbeat, retry)
    if "://" not in url:
        raise TfcnnError(f"--storage {url!r} is neither a database URL (postgresql://user:password@host/db, "
                         "sqlite:///file.db) nor a journal (journal:PATH or a path ending in .journal)")
    if url.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the sweeps extra pins psycopg2-binary.
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=GRACE * heartbeat,
                                          heartbeat_stale_trial_callback=retry,
                                          engine_kwargs={"pool_pre_ping": True})
    except ImportError as exc:  # Optuna's "Failed to import DB access module", or the driver's own
        raise TfcnnError(f"--storage {where} needs a database driver that is not installed ({exc}; PostgreSQL: "
                         "pip install 'tfcnn[sweeps]', which brings psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError...: the database cannot be reached
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise TfcnnError(f"cannot open --storage {where}: {first[0] if first else exc.__class__.__name__}") from None


def load_or_create_study(storage, name, *, pruner=None, sampler=None, direction="maximize"):
    """The study `name` in `storage`, created if it does not exist yet (by whichever worker comes first)."""
    optuna = _optuna()
    try:
        return optuna.create_study(storage=storage, study_name=name, direction=direction, pruner=pruner,
                                   sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # e.g. a study of that name with other directions
        raise TfcnnError(f"study {name}: {exc}") from None


def make_pruner(name, epochs):
    """None, or Optuna's median or Hyperband pruner over a run's epochs (the steps trials report)."""
    optuna = _optuna()
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        # No pruning before 2 trials have finished, nor in a trial's first epoch (its curve says little yet).
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)  # steps: 1-based epochs
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    raise TfcnnError(f"unknown --pruner {name!r}; choose one of {', '.join(PRUNERS)}")


# ---------------------------------------------------------------- one trial: one run

def finished(config):
    """The metrics of `config`'s run if it finished with the same settings, None if it has not finished.

    Raises TfcnnError if its folder holds a run (finished or not) with other settings: those results
    must not be mixed in silently, nor a resumed run continue with changed settings.
    """
    run_dir = Path(config.runs_dir) / (config.name or "")
    saved = run_dir / "config.json"
    if not config.name or not saved.exists() or config.overwrite:
        return None
    metrics_file = run_dir / "metrics.json"
    old = json.loads(saved.read_text())
    changed = config.changed_from(old, REUSE_FREE)
    if changed:
        state = "finished" if metrics_file.exists() else "unfinished"
        raise TfcnnError(f"{run_dir} holds a {state} run with other settings ({', '.join(changed)}); use another "
                         "--runs-dir for this set of runs, or --set overwrite=true to train them again")
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else None


def run(config, callbacks=()):
    """Train `config` (tfcnn.train), or read back the metrics of its finished run with the same settings (a trial
    whose worker died after the run had finished, or a run from before its study)."""
    metrics = finished(config)
    if metrics is not None:
        print(f"reusing finished run {Path(config.runs_dir) / config.name}", flush=True)
        return metrics
    import keras

    from tfcnn.train import train_and_evaluate

    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)  # SavedModel export's "Assets written" and retracing notices, once per run
    try:
        return train_and_evaluate(config, callbacks=callbacks)
    finally:
        tf_log.setLevel(level)
        keras.utils.clear_session()  # the next run starts from a clean graph and name scope


def report_callback(trial, prune):
    """A Keras callback that reports each epoch's validation accuracy to `trial` (step: the 1-based epoch) and,
    with `prune`, stops the run with optuna.TrialPruned when the study's pruner says so."""
    import keras
    optuna = _optuna()

    class ReportToTrial(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), epoch + 1)
            if prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} (val accuracy {float(value):.4f})")

    return ReportToTrial()


def record_metrics(trial, metrics):
    """Keep a run's metrics (without its per-class report) in its trial, so that a host that cannot read the run
    folder (trained on another host) still tabulates it."""
    test = {k: v for k, v in (metrics.get("test") or {}).items() if k != "per_class"}
    trial.set_user_attr("metrics", {**{k: v for k, v in metrics.items() if k != "test"}, "test": test})


def fingerprint(config):
    """What a trial records of its run's config: every field (the results-free ones are ignored when compared)."""
    return config.to_dict()


def check_settings(study, trial, config):
    """Raise if `trial` (of a study being resumed) ran with results-relevant settings other than `config`'s."""
    saved = trial.user_attrs.get("config")
    changed = config.changed_from(saved, REUSE_FREE) if saved else []
    if changed:
        raise TfcnnError(f"study {study.study_name} holds run {trial.user_attrs.get('run')} with other settings "
                         f"({', '.join(changed)}); use another --runs-dir (or --storage) for these settings, or "
                         "delete the study's folder to train them again")


def trial_config(trial, like):
    """The Config a trial's run trains: the one it was queued with, with this host's folders and output settings
    (those of `like`, a Config of this invocation)."""
    values = dict(trial.user_attrs["config"])
    values.update({k: getattr(like, k) for k in REUSE_FREE if k != "name"})
    return Config(**values)


# ---------------------------------------------------------------- grids: enqueued trials

def grid_params(label, seed=None):
    """A grid run's trial params: its variant's label, and its seed in a seeded grid."""
    return {"variant": label} if seed is None else {"variant": label, "seed": seed}


def enqueue_grid(study, runs):
    """Queue each of `runs` [(run label, params, Config)] that the study has no trial of yet, or only failed ones
    (a failed run is tried again, resuming from its folder, as a new invocation always did). Raises if the study
    holds a run with other settings. Returns the labels of the runs that had finished before."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    trials = _by_run(study)
    done = []
    for label, params, config in runs:
        mine = [t for t in trials.get(label, []) if not t.user_attrs.get("duplicate_of")]
        for t in mine:
            if t.state != state.FAIL:
                check_settings(study, t, config)
        if any(t.state in (state.COMPLETE, state.PRUNED) for t in mine):
            done.append(label)
        if not any(t.state != state.FAIL for t in mine):
            # The params stay the queue's (fixed_params) and the trial's user attributes: as suggested params they
            # would need one categorical distribution for the whole study, which --only or an edited grid changes.
            study.enqueue_trial(params, user_attrs={**params, "run": label, "config": fingerprint(config)})
    return done


def _by_run(study):
    trials = {}
    for t in study.get_trials(deepcopy=False):
        trials.setdefault(t.user_attrs.get("run"), []).append(t)
    return trials


def results(study):
    """{run label: the FrozenTrial that stands for it}: its finished trial (complete, else pruned, else the last
    failed one; not the duplicates a worker skipped), None while only waiting or running ones exist."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    chosen = {}
    for label, trials in _by_run(study).items():
        trials = [t for t in trials if not t.user_attrs.get("duplicate_of")]
        for wanted in (state.COMPLETE, state.PRUNED, state.FAIL):
            found = [t for t in trials if t.state == wanted]
            if found:
                chosen[label] = found[-1]
                break
        else:
            chosen[label] = None
    return chosen


@dataclasses.dataclass
class Outcome:
    """How a run's trial ended, whichever engine ran it: state COMPLETE, PRUNED, FAIL or None (not finished)."""

    state: typing.Optional[str] = None
    error: typing.Optional[str] = None
    metrics: typing.Optional[dict] = None  # the run's metrics as its trial kept them


def outcome(trial):
    """The Outcome of an Optuna FrozenTrial (None: not finished)."""
    if trial is None:
        return Outcome()
    return Outcome(trial.state.name, trial.user_attrs.get("error"), trial.user_attrs.get("metrics"))


# ---------------------------------------------------------------- searches: a YAML search space, TPE

SEARCHES_DIR = Path(__file__).resolve().parents[1] / "configs" / "searches"
SEARCH_KEYS = ("name", "description", "config", "base", "space", "quick", "trials", "metric")


def search_names():
    return sorted(p.stem for p in SEARCHES_DIR.glob("*.yaml"))


def builtin_file(name_or_path, folder, what, suffixes, names):
    """The path of a built-in `what` (folder/<name>.yaml) or of a file the user names, else one TfcnnError line."""
    path = Path(name_or_path)
    if path.suffix not in suffixes:
        if not (folder / f"{name_or_path}.yaml").is_file():
            known = ", ".join(names) or f"none here: they are {folder} of a tfcnn checkout"
            kinds = "/".join(suffixes[:1] + suffixes[2:])
            raise TfcnnError(f"unknown {what} {name_or_path!r}; choose one of {known} or pass a {kinds} {what} file")
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TfcnnError(f"{what} file {path} does not exist")
    return path


def load_search(name_or_path):
    """(name, search dict, base config file or None) of a built-in search's name or a .yaml search file, with its
    space checked: every key a Config field, every value {low, high[, log][, step]} or {choices: [...]}."""
    path = builtin_file(name_or_path, SEARCHES_DIR, "search", (".yaml", ".yml"), search_names())
    import yaml
    try:
        search = yaml.safe_load(path.read_text())
    except Exception as exc:
        raise TfcnnError(f"search file {path} could not be parsed ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0]})") from None
    if not isinstance(search, dict) or not isinstance(search.get("space"), dict) or not search["space"]:
        raise TfcnnError(f"search file {path} needs `space:` a mapping of Config fields to ranges or choices")
    unknown = sorted(set(search) - set(SEARCH_KEYS))
    if unknown:
        raise TfcnnError(f"search file {path} has unknown keys {unknown}; use {', '.join(SEARCH_KEYS)}")
    fields = set(Config.__dataclass_fields__)
    bad = sorted(set(search["space"]) - fields)
    if bad:
        raise TfcnnError(f"search file {path}: unknown field {bad[0]!r} in space; a search varies fields of "
                         "tfcnn.config.Config (see python -m tfcnn.train --help)")
    for key in ("base", "quick"):
        bad = sorted(set(search.get(key) or {}) - fields)
        if bad:
            raise TfcnnError(f"search file {path}: unknown field {bad[0]!r} in {key}")
    if search.get("metric", METRICS[0]) not in METRICS:
        raise TfcnnError(f"search file {path}: metric {search['metric']!r} is not one of {', '.join(METRICS)} "
                         "(a search maximises a validation figure; the test set stays for the final report)")
    config_file = search.get("config")
    if config_file:
        config_file = (path.parent / config_file).resolve()
        if not config_file.is_file():
            raise TfcnnError(f"search file {path}: config {config_file} does not exist")
    for name, spec in search["space"].items():
        distribution(name, spec, path)  # raises on a malformed range
    return str(search.get("name") or path.stem), search, config_file


def distribution(name, spec, where="the search"):
    """The Optuna distribution of one space entry: {low, high[, log][, step]} (int if low and high are ints) or
    {choices: [...]} (or a bare list of choices)."""
    optuna = _optuna()
    dist = optuna.distributions
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise TfcnnError(f"{where}: space entry {name} must be {{low, high[, log][, step]}} or {{choices: [...]}}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise TfcnnError(f"{where}: space entry {name} has unknown keys {unknown}; use low, high, log, step or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices \
                or not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise TfcnnError(f"{where}: space entry {name}: choices is a non-empty list of numbers, strings or "
                             "booleans, alone (a list value such as dense_units is written as a string: '120,84')")
        return dist.CategoricalDistribution(choices)
    try:
        low, high = spec["low"], spec["high"]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and \
                isinstance(spec.get("step", 1), int):
            return dist.IntDistribution(low, high, log=bool(spec.get("log")), step=spec.get("step", 1))
        step = spec.get("step")
        return dist.FloatDistribution(float(low), float(high), log=bool(spec.get("log")),
                                      step=None if step is None else float(step))
    except (KeyError, TypeError, ValueError) as exc:
        raise TfcnnError(f"{where}: space entry {name}: {exc.__class__.__name__}: {exc} (a range needs low < high, "
                         "positive for log, and no step with log)") from None


def check_search(study, space, base):
    """Raise if the study's trials drew from other distributions than `space` (its YAML was edited: Optuna cannot
    mix them in one study) or ran on other settings than the `base` Config's (outside the space)."""
    optuna = _optuna()
    for trial in study.get_trials(deepcopy=False):
        saved = trial.user_attrs.get("config")
        changed = base.changed_from(saved, REUSE_FREE | set(space)) if saved else []
        if changed:
            raise TfcnnError(f"study {study.study_name} holds run {trial.user_attrs.get('run')} with other settings "
                             f"({', '.join(changed)}); use another --runs-dir (or --storage) for these settings")
        for name, old in trial.distributions.items():
            if name in space:
                try:
                    optuna.distributions.check_distribution_compatibility(old, distribution(name, space[name]))
                except ValueError:
                    raise TfcnnError(f"study {study.study_name} drew {name} from {old}, which its search file no "
                                     "longer says; use another --runs-dir (or --storage) for the new space") from None
        if set(trial.distributions) - set(space):
            raise TfcnnError(f"study {study.study_name} also searched {sorted(set(trial.distributions) - set(space))}, "
                             "which its search file no longer has; use another --runs-dir for the new space")


def suggest(trial, space):
    """The trial's values of every space entry (a retried trial gets its first values back)."""
    optuna = _optuna()
    values = {}
    for name, spec in space.items():
        dist = distribution(name, spec)
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return values


# ---------------------------------------------------------------- workers

def _claim(study):
    """A waiting trial, now running and this worker's, or None: study.ask's claim without its fallback of a new
    trial (a grid's workers must only run the queued runs). Optuna 5.1's private API, pinned (requirements.txt)."""
    optuna = _optuna()
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


def _system_attrs(study, trial):
    return study._storage.get_trial_system_attrs(trial._trial_id)


def _skip_duplicate(study, trial):
    """Two hosts queueing the same missing run at once queue it twice: the later copy is skipped, marked
    duplicate_of the earlier. True if `trial` is such a copy."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    label = trial.user_attrs.get("run")
    for other in _by_run(study).get(label, []):
        if other.number == trial.number or other.user_attrs.get("duplicate_of"):
            continue
        if other.state in (state.COMPLETE, state.PRUNED) or (other.state == state.RUNNING
                                                               and other.number < trial.number):
            trial.set_user_attr("duplicate_of", other.number)
            study.tell(trial, state=state.FAIL)
            return True
    return False


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def work(study, objective, *, more=None, log_prefix=None):
    """Run `study`'s trials in this process until none is waiting or running: claim a waiting one, else (a
    search) ask the sampler for a new one while `more(study)` is true, else wait for the running ones: another
    worker's, or a dead worker's until its heartbeat goes stale and its retry is queued.

    `objective(trial) -> value` trains the trial's run; a TfcnnError fails the trial (its message kept as the
    user attribute `error`), optuna.TrialPruned prunes it. Returns the numbers of the trials this worker ran."""
    optuna = _optuna()
    from optuna.storages._heartbeat import get_heartbeat_thread

    state = optuna.trial.TrialState
    prefix = log_prefix or study.study_name
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)() or HEARTBEAT
    ran, waiting_said = [], False
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial goes back to the queue
        trial = _claim(study)
        if trial is None and more is not None and more(study):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": it is, below
                trial = study.ask()
            if "run" not in trial.user_attrs:
                trial.set_user_attr("run", f"trial{trial.number:03d}")
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(state.RUNNING,))
            if not running:
                return ran
            if not waiting_said:
                print(f"[{prefix}] waiting for {len(running)} running trial(s) of other workers (a dead worker's "
                      f"trial is retried once its heartbeat is {GRACE * interval} s old)", flush=True)
                waiting_said = True
            time.sleep(min(5.0, interval))
            continue
        waiting_said = False
        if _skip_duplicate(study, trial):
            continue
        trial.set_user_attr("worker", worker_name())
        retried = _system_attrs(study, trial).get("failed_trial")
        print(f"[{prefix}] trial {trial.number}: {trial.user_attrs.get('run')}"
              + (f" (retry of trial {retried}, whose worker died)" if retried is not None else ""), flush=True)
        value, ended, error = None, state.COMPLETE, None
        with get_heartbeat_thread(trial._trial_id, study._storage):
            try:
                value = objective(trial)
            except optuna.exceptions.UpdateFinishedTrialError:
                # This worker was silent past the grace period (paused, not dead): its trial was failed and queued
                # again meanwhile. The run folder's lock kept the two from training it at once.
                print(f"[{prefix}] trial {trial.number} was failed and retried by another worker while this one "
                      "was silent; its result stays in the run folder", flush=True)
                continue
            except optuna.TrialPruned as exc:
                ended, error = state.PRUNED, str(exc) or "pruned"
            except TfcnnError as exc:  # this run's own failure (e.g. a diverging loss): the others still run
                ended, error = state.FAIL, str(exc)
            except BaseException as exc:  # KeyboardInterrupt or a bug: the trial is failed, not left running
                with contextlib.suppress(Exception):
                    trial.set_user_attr("error", f"interrupted ({exc.__class__.__name__})")
                    study.tell(trial, state=state.FAIL)
                raise
        if error:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("error", error)
            print(f"[{prefix}] trial {trial.number}: {trial.user_attrs.get('run')} "
                  f"{'pruned' if ended == state.PRUNED else 'failed'}: {error}", flush=True)
        study.tell(trial, value if ended == state.COMPLETE else None, state=ended, skip_if_finished=True)
        ran.append(trial.number)


def _worker_main(target, kwargs):
    """A spawned worker process: `target(**kwargs)`; a user error is one line on stderr and exit 2."""
    try:
        target(**kwargs)
    except TfcnnError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def start_workers(n, target, kwargs, group):
    """Run `target(**kwargs)` in `n` new processes (spawned: TensorFlow must not be forked) and wait for them;
    a line for each that did not exit cleanly. Returns their exit codes (negative: killed by that signal)."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(target, kwargs), name=f"tfcnn-sweep-worker-{i}")
               for i in range(n)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except KeyboardInterrupt:  # the workers got the same SIGINT: they fail their trials and stop
        for worker in workers:
            worker.join(timeout=30)
        raise
    for i, worker in enumerate(workers):
        code = worker.exitcode
        if code:
            print(f"[{group}] worker {i} exited with {'signal ' + str(-code) if code < 0 else code}", flush=True)
    return [worker.exitcode for worker in workers]


def threads_per_worker(workers):
    """TensorFlow intra-op threads for each of `workers` processes on this machine: its cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def share_cores(overrides, workers):
    """Give each of `workers` (> 1) worker processes its share of the cores (overrides' cpu_threads), unless the
    caller set cpu_threads or asked for --deterministic, which keeps TensorFlow's own thread count, as one worker (or
    tfcnn.train) has: a thread count changes how float sums split, so the figures would differ."""
    if workers > 1 and overrides.get("cpu_threads") is None and not overrides.get("deterministic"):
        overrides["cpu_threads"] = threads_per_worker(workers)
