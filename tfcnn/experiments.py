"""Experiment grids and searches: run a set of configurations, one run folder each, and compare them in one table.

    python -m tfcnn.experiments lenet-variants --out docs/experiments     # the MNIST lab's ten variants
    python -m tfcnn.experiments notmnist-models --epochs 3 --set width=1000
    python -m tfcnn.experiments my_grid.yaml --quick                      # 1 epoch on 256 images
    python -m tfcnn.experiments lenet-seeds --workers 2 --deterministic   # two worker processes on one study
    python -m tfcnn.experiments search speedrun-lr --trials 8 --pruner median
    python -m tfcnn.experiments --list

A grid is a base config plus a list of variants (dicts of Config fields): a YAML/JSON file with the keys
description, base, variants and optionally quick (extra settings for --quick, on top of QUICK), seeds (every
variant once per seed) and class_f1 (classes whose F1 the table shows). The built-in grids are
configs/grids/<name>.yaml, run by name. Precedence, lowest first:
per-arch defaults < base < variant < the grid's quick settings (--quick) < --epochs/--limit-train/--set.
An override may not set a field the grid varies (that would make the variants equal).
A search (configs/searches/<name>.yaml, tfcnn.sweeps.load_search) is a base config and a search space that TPE
samples.

Both run on Optuna (tfcnn.sweeps): a grid or a search is a study, by default in the journal file
<runs_dir>/<grid>/study.journal, and each run is a trial that lands in <runs_dir>/<grid>/<label> (<grid>-quick/
with --quick). The same command carries on where the last one stopped: finished trials stay finished, and an
unfinished run resumes from its last epoch (tfcnn.train). --workers N trains N runs at once; the same command on
another host with the same --storage (a PostgreSQL URL, or a journal on a shared filesystem) adds workers there.
The table <out>/<grid>.csv and .md (default out: <runs_dir>/<grid>) and the figure <out>/<grid>.png compare the
runs; a search adds Optuna's optimisation-history and parameter-importance figures.
"""
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfcnn import evaluate, sweeps
# The table and figures live in grid_report; notebooks reach them through experiments, as before.
from tfcnn.grid_report import plot_grid as plot_grid
from tfcnn.grid_report import plot_seed_curves as plot_seed_curves
from tfcnn.grid_report import plot_study as plot_study
from tfcnn.grid_report import summarize as summarize
from tfcnn.grid_report import summary_markdown as summary_markdown
from tfcnn.grid_report import to_markdown as to_markdown
from tfcnn.grid_report import write_results as write_results
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

# The built-in grids: configs/grids/<name>.yaml in a tfcnn checkout (the folder is not part of an installed wheel).
GRIDS_DIR = Path(__file__).resolve().parents[1] / "configs" / "grids"
# --quick: a smoke run of the grid, not a result.
QUICK = dict(epochs=1, limit_train=256, limit_test=500)


# ---------------------------------------------------------------- grids and their configurations

def grid_names():
    """The built-in grids' names (configs/grids/*.yaml)."""
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def load_grid(name_or_path):
    """(name, grid dict) for a built-in grid's name or a .yaml/.json grid file."""
    path = sweeps.builtin_file(name_or_path, GRIDS_DIR, "grid", (".yaml", ".yml", ".json"), grid_names())
    try:
        if path.suffix == ".json":
            grid = json.loads(path.read_text())
        else:
            import yaml
            grid = yaml.safe_load(path.read_text())
    except Exception as exc:
        raise TfcnnError(f"grid file {path} could not be parsed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("variants"), list) or not grid["variants"] \
            or not all(isinstance(v, dict) for v in grid["variants"]):
        raise TfcnnError(f"grid file {path} needs `variants:` a non-empty list of mappings (and optionally `base:`)")
    unknown = sorted(set(grid) - {"name", "description", "base", "variants", "quick", "class_f1", "seeds"})
    if unknown:
        raise TfcnnError(f"grid file {path} has unknown keys {unknown}; use name, description, base, variants, "
                         "quick, class_f1, seeds")
    seeds = grid.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise TfcnnError(f"grid file {path}: `seeds:` must be a list of distinct integers, e.g. [1, 2, 3]")
    return str(grid.get("name") or path.stem), grid


def _label_part(key, value):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return f"{key}{'+'.join(map(str, value))}"
    return f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"


def variant_label(variant):
    """`label` if given, else the variant's values joined: adam-tanh-lr0.01, conv_layers1; {} is baseline."""
    if variant.get("label"):
        return str(variant["label"])
    parts = [_label_part(k, v) for k, v in variant.items() if k != "label"]
    return "-".join(parts).replace("/", "_") or "baseline"


def grid_configs(name_or_path, *, quick=False, only=None, **overrides):
    """(group, [(label, Config)], varied field names, grid dict); every config is validated before any run."""
    from tfcnn.config import Config, make_config

    name, grid = load_grid(name_or_path)
    variants = [dict(v) for v in grid["variants"]]
    varied = list(dict.fromkeys(k for v in variants for k in v if k != "label"))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(Config.__dataclass_fields__))
    if unknown:
        raise TfcnnError(f"unknown config fields {unknown}; a grid override must be a field of "
                         "tfcnn.config.Config (see python -m tfcnn.train --help)")
    clash = sorted(set(overrides) & set(varied))
    if clash:
        raise TfcnnError(f"grid {name} varies {', '.join(clash)}; an override of it would make the variants "
                         "equal: drop it, or write a grid file with the values you want")
    labels = [variant_label(v) for v in variants]
    if len(set(labels)) != len(labels):
        raise TfcnnError(f"grid {name} has variants with the same label; give them distinct `label:` values")
    if only is not None:
        if isinstance(only, int):
            keep = labels[:only]
        else:
            keep = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
            missing = [s for s in keep if s not in labels]
            if missing:
                raise TfcnnError(f"grid {name} has no variant {missing[0]!r}; its variants: {', '.join(labels)}")
        if not keep:
            raise TfcnnError(f"no variants selected from grid {name}; its variants: {', '.join(labels)}")
        variants, labels = zip(*[(v, lab) for v, lab in zip(variants, labels) if lab in keep])
    group = f"{name}-quick" if quick else name
    extra = {**QUICK, **grid.get("quick", {})} if quick else {}
    defaults = dict(verbose=0, tensorboard=False)
    seeds = grid.get("seeds")
    if seeds and ("seed" in overrides or "seed" in varied):
        raise TfcnnError(f"grid {name} repeats every variant over seeds {seeds}; drop the seed override")
    if seeds and quick:
        seeds = seeds[:1]  # a smoke run, not a spread
    configs = []
    for label, variant in zip(labels, variants):
        variant = {k: v for k, v in variant.items() if k != "label"}
        # With `seeds`, every variant runs once per seed (which also draws its validation split) as <label>-seed<N>.
        for seed in seeds or [None]:
            run_label = label if seed is None else f"{label}-seed{seed}"
            values = {**defaults, **grid.get("base", {}), **variant, **extra, **overrides, "name": f"{group}/{run_label}"}
            if seed is not None:
                values["seed"] = seed
            try:
                configs.append((run_label, make_config(values)))
            except TfcnnError as exc:
                raise TfcnnError(f"grid {name}, variant {label}: {exc}") from None
    return group, configs, varied, grid


# ---------------------------------------------------------------- running: a grid is an Optuna study

finished, run = sweeps.finished, sweeps.run  # the notebooks' names for them
history = evaluate.history  # the notebooks' name for it


def _row(label, config, varied, metrics, error=None, class_f1=()):
    hist = history(Path(config.runs_dir) / config.name)
    last = hist.iloc[-1] if len(hist) else {}
    row = {"variant": label}
    for key in varied:
        value = getattr(config, key)
        row[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    test = (metrics or {}).get("test", {})
    best_val, final_val = (metrics or {}).get("best_val_accuracy"), (metrics or {}).get("final_val_accuracy")
    final_train = last.get("accuracy") if len(hist) else None
    row.update({
        "test_accuracy": test.get("accuracy"), "f1_macro": test.get("f1_macro"),
        "best_val_accuracy": best_val, "best_epoch": (metrics or {}).get("best_epoch"),
        "final_val_accuracy": final_val, "final_train_accuracy": final_train,
        "gap_best_final_val": best_val - final_val if best_val is not None and final_val is not None else None,
        "gap_train_val": final_train - final_val if final_train is not None and final_val is not None else None,
        "epoch_time_s": (metrics or {}).get("epoch_time_s"),
        "train_images_per_s": (metrics or {}).get("train_images_per_s"), "epochs": (metrics or {}).get("epochs"),
        "params": (metrics or {}).get("params"), "train_time_s": (metrics or {}).get("train_time_s"),
        "wall_time_s": (metrics or {}).get("wall_time_s"),
        "run": str(Path(config.runs_dir) / config.name),
    })
    per_class = test.get("per_class", {})
    for name in class_f1:  # the classes a grid is about, e.g. the 5 reptiles among 15
        row[f"f1_{name}"] = per_class.get(name, {}).get("f1-score") if per_class else None
    if error:
        row["error"] = error
    return row


def _grid_runs(configs, grid):
    """[(run label, trial params, Config)] of a grid's configs: a trial's params are its variant and seed."""
    seeded = bool(grid.get("seeds"))
    return [(label, sweeps.grid_params(label.rsplit("-seed", 1)[0] if seeded else label,
                                       config.seed if seeded else None), config) for label, config in configs]


def _trial_row(label, config, varied, outcome, class_f1=()):
    """The table's row of a run from its trial's tfcnn.sweeps.Outcome: its run folder's metrics.json if it
    completed (else, for a run trained on another host into its own --runs-dir, the metrics its trial kept); a
    pruned run has `pruned` (when and why), a failed one `error`."""
    metrics = error = pruned = None
    if outcome.state is None:
        error = "not finished: run the same command to carry on"
    elif outcome.state == "COMPLETE":
        metrics = sweeps.finished(config) or outcome.metrics
        if metrics is None:
            error = f"{config.name} completed but has no metrics.json"
    elif outcome.state == "PRUNED":
        pruned = outcome.error or "pruned"
    else:
        error = outcome.error or outcome.state.lower()
    row = _row(label, config, varied, metrics, error=error, class_f1=class_f1)
    if pruned:
        row["pruned"] = pruned
    return row


def _work_grid(study, runs, prune):
    """This process as one worker of a grid's study: it trains the queued runs until none is left."""
    by_label = {label: config for label, _, config in runs}
    any_config = runs[0][2]

    def objective(trial):
        label = trial.user_attrs["run"]
        # A run queued by another invocation (e.g. with --only) trains with the settings it was queued with.
        config = by_label.get(label) or sweeps.trial_config(trial, any_config)
        metrics = sweeps.run(config, callbacks=[sweeps.report_callback(trial, prune)])
        sweeps.record_metrics(trial, metrics)
        value = metrics.get("best_val_accuracy")
        return value if value is not None else metrics["test"]["accuracy"]

    return sweeps.work(study, objective)


def _open_grid_study(group, configs, storage, pruner, heartbeat):
    folder = Path(configs[0][1].runs_dir) / group
    epochs = max(config.epochs for _, config in configs)
    study = sweeps.load_or_create_study(sweeps.open_storage(storage, folder, heartbeat), group,
                                        pruner=sweeps.make_pruner(pruner, epochs))
    return study, folder


def _grid_worker(name_or_path, quick, only, storage, pruner, heartbeat, overrides):
    """A --workers process: the same grid and study as its parent, which has queued the runs."""
    group, configs, _, grid = grid_configs(name_or_path, quick=quick, only=only, **overrides)
    study, _ = _open_grid_study(group, configs, storage, pruner, heartbeat)
    _work_grid(study, _grid_runs(configs, grid), pruner not in (None, "none"))


def _run_grid_study(name_or_path, group, configs, runs, *, quick, only, storage, workers, pruner, heartbeat,
                    overrides):
    """run_grid on Optuna: ({label: Outcome}, labels finished before, the storage's name, the grid's folder)."""
    study, folder = _open_grid_study(group, configs, storage, pruner, heartbeat)
    done_before = sweeps.enqueue_grid(study, runs)
    where = sweeps.describe_storage(storage, folder)
    print(f"[{group}] study {group} in {where}: {len(runs)} runs, {len(done_before)} finished earlier, "
          f"{workers} worker(s) here", flush=True)
    if workers == 1:
        _work_grid(study, runs, pruner not in (None, "none"))
    else:
        sweeps.start_workers(workers, _grid_worker, dict(
            name_or_path=str(name_or_path), quick=quick, only=only, storage=storage, pruner=pruner,
            heartbeat=heartbeat, overrides=overrides), group)
    return {label: sweeps.outcome(trial) for label, trial in sweeps.results(study).items()}, done_before, where, folder


def run_grid(name_or_path, *, quick=False, only=None, out=None, command=None, storage=None, workers=1, pruner=None,
             heartbeat=sweeps.HEARTBEAT, backend="optuna", address=None, cpus_per_trial=None, **overrides):
    """Run every variant of a grid as the trials of an Optuna study; write <out>/<grid>.{csv,md,png}; return the
    table.

    table.attrs holds group (the grid's folder name, also the study's name), varied (the varied fields), the file
    paths and the storage.

    `overrides` are Config fields set on every run (runs_dir, data_dir, epochs, limit_train...);
    `only` keeps some variants (a list of labels, or the first N); `quick` = QUICK + the grid's quick;
    `command` is the command line the Markdown names (default: this call).
    `storage`: None (a journal file, <runs_dir>/<grid>/study.journal) or a URL (tfcnn.sweeps.open_storage);
    `workers`: processes that train the runs at once (the same call on another host, with the same storage,
    adds more); `pruner`: none, median or hyperband; `heartbeat`: seconds between a trial's heartbeats.
    `backend` "ray": Ray Tune trials instead (tfcnn.sweeps_ray; `address` of a Ray cluster, default an embedded
    local Ray; `cpus_per_trial` cores per trial, default all), with ASHA (pruner hyperband) or median stopping.
    Runs that finished in an earlier call (or whose trials completed) are not trained again.
    A run that fails (e.g. its loss diverges) gets an `error` and empty metrics; the others still run.
    """
    import pandas as pd

    if backend not in ("optuna", "ray"):
        raise TfcnnError(f"unknown --backend {backend!r}; choose optuna or ray")
    if backend == "ray":
        from tfcnn import sweeps_ray

        sweeps_ray._ray()  # installed? (before any work)
    if workers < 1:
        raise TfcnnError(f"--workers must be at least 1, got {workers}")
    sweeps.share_cores(overrides, workers)
    group, configs, varied, grid = grid_configs(name_or_path, quick=quick, only=only, **overrides)
    runs = _grid_runs(configs, grid)
    start = time.perf_counter()
    if backend == "ray":
        folder = Path(configs[0][1].runs_dir) / group
        where = str(folder / "ray" / sweeps_ray.EXPERIMENT)
        done_before = [label for label, _, config in runs if sweeps.finished(config) is not None]
        outcomes = sweeps_ray.run_grid(runs, name=group, folder=folder, address=address, pruner=pruner,
                                       cpus_per_trial=cpus_per_trial)
    else:
        outcomes, done_before, where, folder = _run_grid_study(name_or_path, group, configs, runs, quick=quick,
                                                               only=only, storage=storage, workers=workers,
                                                               pruner=pruner, heartbeat=heartbeat, overrides=overrides)
    wall = time.perf_counter() - start
    out = Path(out) if out else folder
    rows = [_trial_row(label, config, varied, outcomes.get(label) or sweeps.Outcome(),
                       class_f1=grid.get("class_f1", ())) for label, _, config in runs]
    table = pd.DataFrame(rows)
    if grid.get("seeds"):
        table.insert(1, "setup", [label.rsplit("-seed", 1)[0] for label, _ in configs])
        table.insert(2, "seed", [config.seed for _, config in configs])
    table.attrs.update(group=group, varied=varied, markdown=str(out / f"{group}.md"), storage=where,
                       csv=str(out / f"{group}.csv"), figure=str(out / f"{group}.png"))
    if command is None:
        args = [repr(str(name_or_path))] + [f"{k}={v!r}" for k, v in
                                           dict(quick=quick, only=only, **overrides).items() if v not in (None, False)]
        command = f"tfcnn.experiments.run_grid({', '.join(args)})"
    if len(table):
        write_results(table, out, group, grid=grid, configs=[c for _, c in configs], varied=varied,
                      command=command, wall_time_s=wall, reused=len(done_before))
    return table


# ---------------------------------------------------------------- searches: TPE over a YAML search space

def search_configs(name_or_path, *, quick=False, **overrides):
    """(group, search dict, base values, base config file, n trials): a search's settings, its base validated."""
    from tfcnn.config import make_config

    name, search, config_file = sweeps.load_search(name_or_path)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    clash = sorted(set(overrides) & set(search["space"]))
    if clash:
        raise TfcnnError(f"search {name} varies {', '.join(clash)}; an override of it would fix what the search "
                         "looks for: drop it, or write a search file with the range you want")
    group = f"{name}-quick" if quick else name
    extra = {**QUICK, **(search.get("quick") or {})} if quick else {}
    base = {"verbose": 0, "tensorboard": False, **(search.get("base") or {}), **extra, **overrides}
    try:
        make_config({**base, "name": f"{group}/base"}, config_file)
    except TfcnnError as exc:
        raise TfcnnError(f"search {name}: {exc}") from None
    return group, search, base, config_file


def _search_objective(group, search, base, config_file, prune):
    from tfcnn.config import make_config

    metric = search.get("metric", sweeps.METRICS[0])

    def objective(trial):
        values = sweeps.suggest(trial, search["space"])
        label = trial.user_attrs["run"]
        try:
            config = make_config({**base, **values, "name": f"{group}/{label}"}, config_file)
        except TfcnnError as exc:
            raise TfcnnError(f"trial {trial.number} ({values}): {exc}") from None
        trial.set_user_attr("config", sweeps.fingerprint(config))
        metrics = sweeps.run(config, callbacks=[sweeps.report_callback(trial, prune)])
        sweeps.record_metrics(trial, metrics)
        if metrics.get(metric) is None:
            raise TfcnnError(f"{config.name} has no {metric}: a search needs a validation split (val_fraction > 0)")
        return metrics[metric]

    return objective


def _search_more(trials):
    def more(study):
        started = {t.user_attrs.get("run", f"#{t.number}") for t in study.get_trials(deepcopy=False)
                   if not t.user_attrs.get("duplicate_of")}
        return len(started) < trials
    return more


def _open_search_study(group, base, config_file, storage, pruner, heartbeat):
    from tfcnn.config import make_config

    config = make_config({**base, "name": f"{group}/base"}, config_file)
    optuna = sweeps._optuna()
    # constant_liar: parallel workers' running trials count as bad results, so they do not all sample one point.
    sampler = optuna.samplers.TPESampler(seed=config.seed, constant_liar=True)
    folder = Path(config.runs_dir) / group
    study = sweeps.load_or_create_study(sweeps.open_storage(storage, folder, heartbeat), group, sampler=sampler,
                                        pruner=sweeps.make_pruner(pruner, config.epochs))
    return study, folder, config


def _search_worker(name_or_path, quick, trials, storage, pruner, heartbeat, overrides):
    """A --workers process of a search."""
    group, search, base, config_file = search_configs(name_or_path, quick=quick, **overrides)
    study, _, _ = _open_search_study(group, base, config_file, storage, pruner, heartbeat)
    sweeps.work(study, _search_objective(group, search, base, config_file, pruner not in (None, "none")),
                more=_search_more(trials))


def run_search(name_or_path, *, trials=None, quick=False, out=None, command=None, storage=None, workers=1,
               pruner=None, heartbeat=sweeps.HEARTBEAT, **overrides):
    """Search a YAML search space (tfcnn.sweeps.load_search) with TPE: `trials` runs in all (default: the search's
    `trials`, else 8), each in <runs_dir>/<search>/trialNNN; an earlier call's trials count, so the same call
    carries on. Writes <out>/<search>.{csv,md,png} (every trial, as a grid's table) and Optuna's figures
    <search>_history.png (optimisation history) and <search>_importances.png (parameter importances).
    Returns (table, best FrozenTrial or None)."""
    import pandas as pd

    if workers < 1:
        raise TfcnnError(f"--workers must be at least 1, got {workers}")
    sweeps.share_cores(overrides, workers)
    group, search, base, config_file = search_configs(name_or_path, quick=quick, **overrides)
    trials = trials or search.get("trials") or 8
    if trials < 1:
        raise TfcnnError(f"--trials must be at least 1, got {trials}")
    study, folder, base_config = _open_search_study(group, base, config_file, storage, pruner, heartbeat)
    sweeps.check_search(study, search["space"], base_config)
    where = sweeps.describe_storage(storage, folder)
    before = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    print(f"[{group}] study {group} in {where}: {trials} trials, {len(before)} finished earlier, {workers} "
          f"worker(s) here", flush=True)
    out = Path(out) if out else folder
    start = time.perf_counter()
    prune = pruner not in (None, "none")
    if workers == 1:
        sweeps.work(study, _search_objective(group, search, base, config_file, prune), more=_search_more(trials))
    else:
        sweeps.start_workers(workers, _search_worker, dict(
            name_or_path=str(name_or_path), quick=quick, trials=trials, storage=storage, pruner=pruner,
            heartbeat=heartbeat, overrides=overrides), group)
    wall = time.perf_counter() - start
    varied = list(search["space"])
    rows, configs = [], []
    for label, trial in sorted(sweeps.results(study).items(), key=lambda item: str(item[0])):
        if trial is None or "config" not in trial.user_attrs:
            continue  # never started its run (e.g. its values did not make a valid config)
        config = sweeps.trial_config(trial, base_config)
        configs.append(config)
        row = _trial_row(label, config, varied, sweeps.outcome(trial))
        row["trial"], row["value"] = trial.number, trial.value
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(group=group, varied=varied, markdown=str(out / f"{group}.md"), storage=where,
                       csv=str(out / f"{group}.csv"), figure=str(out / f"{group}.png"),
                       history=str(out / f"{group}_history.png"), importances=str(out / f"{group}_importances.png"))
    if command is None:
        command = f"tfcnn.experiments.run_search({str(name_or_path)!r}, trials={trials})"
    best = None
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if completed:
        best = study.best_trial
    if len(table):
        write_results(table, out, group, grid=search, configs=configs, varied=varied, command=command,
                      wall_time_s=wall, reused=len(before), kind="Search")
        plot_study(study, out, group)
    return table, best


# ---------------------------------------------------------------- notebook helpers

def workspace(workdir=None, data_dir=None):
    """Config fields that put runs/ and saved_models/ under `workdir` (default: this checkout's root)
    and read data from data_dir, else $TFCNN_DATA_DIR, else ../shared/data next to the checkout."""
    source_root = Path(__file__).resolve().parents[1]
    root = Path(workdir) if workdir else source_root if (source_root / "pyproject.toml").exists() else Path.cwd()
    data_dir = data_dir or os.environ.get("TFCNN_DATA_DIR")
    if not data_dir and (source_root.parent / "shared" / "data").is_dir():
        data_dir = str(source_root.parent / "shared" / "data")
    return dict(runs_dir=str(root / "runs"), saved_models_dir=str(root / "saved_models"), data_dir=data_dir)


def show(table):
    """In a notebook: a grid's Markdown table (with its settings and command) and its figure."""
    from IPython.display import Image, Markdown, display

    display(Markdown(Path(table.attrs["markdown"]).read_text()), Image(filename=table.attrs["figure"]))


# ---------------------------------------------------------------- CLI

def _parse_set(items):
    values = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TfcnnError(f"--set takes key=value (a Config field), got {item!r}")
        values[key.strip().replace("-", "_")] = value
    return values


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("grid", nargs="?", help=f"a grid name ({', '.join(grid_names())}) or a .yaml/.json grid "
                                                 "file; or `search`, followed by a search's name or .yaml file")
    parser.add_argument("search", nargs="?", help=f"after `search`: a search name ({', '.join(sweeps.search_names())})"
                                                   " or a .yaml search file")
    parser.add_argument("--list", action="store_true", help="list the built-in grids and their variants, and the searches")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the grid's)")
    parser.add_argument("--limit-train", type=int, default=None, help="train every run on the first N training images (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK} (+ the grid's own quick settings)")
    parser.add_argument("--only", default=None, help="comma list of variant labels to run")
    parser.add_argument("--runs-dir", default=None, help="where the run folders go (default runs)")
    parser.add_argument("--out", default=None, help="folder for <grid>.csv/.md/.png (default <runs-dir>/<grid>)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="TensorFlow op determinism in every run: bit-identical reruns, slower (default: off)")
    parser.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                        help="a Config field for every run, e.g. --set width=1000 (repeatable)")
    sweep = parser.add_argument_group("sweeps (Optuna studies; README, \"Sweeps on one machine or many\")")
    sweep.add_argument("--storage", default=None, metavar="URL",
                       help="where the study lives: a database URL (postgresql://user:password@host:port/db, "
                            "sqlite:///file.db) or journal:PATH on a shared filesystem, so that workers on several "
                            f"hosts share it (default: the journal file <runs-dir>/<grid>/{sweeps.JOURNAL})")
    sweep.add_argument("--workers", type=int, default=1,
                       help="worker processes on this machine, each training one run at a time with its share of the "
                            "cores; the same command on another host with the same --storage adds more (default 1)")
    sweep.add_argument("--pruner", default="none", choices=sweeps.PRUNERS,
                       help="stop runs whose per-epoch validation accuracy lags: Optuna's median or Hyperband pruner; "
                            "with --backend ray, Tune's median stopping rule or ASHA (default none)")
    sweep.add_argument("--heartbeat", type=int, default=sweeps.HEARTBEAT, metavar="SECONDS",
                       help=f"seconds between a running trial's heartbeats; a trial silent for {sweeps.GRACE}x that "
                            f"(its worker died) is retried by another worker (default {sweeps.HEARTBEAT})")
    sweep.add_argument("--trials", type=int, default=None, help="a search's number of trials (default: the search "
                                                                 "file's `trials`, else 8)")
    sweep.add_argument("--backend", default="optuna", choices=("optuna", "ray"),
                       help="optuna: the workers above; ray: Ray Tune trials on a local or remote Ray (default optuna)")
    sweep.add_argument("--address", default=None, help="--backend ray: the Ray cluster's address (default: start an "
                                                       "embedded local Ray)")
    sweep.add_argument("--cpus-per-trial", type=int, default=None,
                       help="--backend ray: cores each trial reserves and TensorFlow's thread count in it (default: "
                            "all of this machine's, one trial at a time)")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.list:
        for name in grid_names():
            print(f"{name}: {', '.join(variant_label(v) for v in load_grid(name)[1]['variants'])}")
        for name in sweeps.search_names():
            print(f"search {name}: {', '.join(sweeps.load_search(name)[1]['space'])}")
        return 0
    if not args.grid:
        raise TfcnnError("name a grid (python -m tfcnn.experiments --list) or a .yaml/.json grid file")
    if args.grid == "search" and not args.search:
        raise TfcnnError(f"name a search after `search`: {', '.join(sweeps.search_names())} or a .yaml search file")
    if args.grid != "search" and args.search:
        raise TfcnnError(f"unexpected argument {args.search!r} after grid {args.grid!r}")
    overrides = {**_parse_set(args.sets), "epochs": args.epochs, "limit_train": args.limit_train,
                 "runs_dir": args.runs_dir, "data_dir": args.data_dir, "deterministic": args.deterministic}
    command = "python -m tfcnn.experiments " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    engine = dict(storage=args.storage, workers=args.workers, pruner=args.pruner, heartbeat=args.heartbeat)
    if args.backend == "ray" and (args.storage or args.workers != 1 or args.heartbeat != sweeps.HEARTBEAT):
        raise TfcnnError("--storage, --workers and --heartbeat belong to the optuna backend; Ray keeps its state in "
                         "<runs-dir>/<grid>/ray and runs as many trials at once as --cpus-per-trial allows")
    if args.backend == "ray" and args.grid == "search":
        raise TfcnnError("--backend ray runs grids; run searches on the default backend (Optuna's TPE), which "
                         "spans several hosts with --storage")
    if args.backend == "ray":
        table = run_grid(args.grid, quick=args.quick, only=args.only, out=args.out, command=command,
                         backend="ray", address=args.address, cpus_per_trial=args.cpus_per_trial,
                         pruner=args.pruner, **overrides)
    elif args.grid == "search":
        table, best = run_search(args.search, trials=args.trials, quick=args.quick, out=args.out, command=command,
                                 **engine, **overrides)
        print(to_markdown(table, table.attrs["varied"]) if len(table) else "no trial has finished")
        if best is not None:
            print(f"best: trial {best.number} ({best.user_attrs.get('run')}) value {best.value:.4f} with "
                  + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()))
        print(f"-> {table.attrs['markdown']}, {table.attrs['csv']}, {table.attrs['history']}, "
              f"{table.attrs['importances']}")
        return 1 if "error" in table and table["error"].notna().any() else 0
    else:
        table = run_grid(args.grid, quick=args.quick, only=args.only, out=args.out, command=command, **engine,
                         **overrides)
    print(to_markdown(table, table.attrs["varied"]))
    print(f"-> {table.attrs['markdown']}, {table.attrs['csv']}, {table.attrs['figure']}")
    return 1 if "error" in table and table["error"].notna().any() else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
