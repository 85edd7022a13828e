"""Reports of a grid's or a search's runs: the comparison table (CSV, Markdown), its figure, the per-setup
summary over seeds, and Optuna's figures of a study. tfcnn.experiments writes them; notebooks call them too."""
import os
import sys
import time
from pathlib import Path

import numpy as np

from tfcnn import evaluate
from tfcnn.config import REUSE_FREE

history = evaluate.history


_MD_COLUMNS = [("test_accuracy", "test acc", "{:.4f}"), ("f1_macro", "macro F1", "{:.4f}"),
               ("best_val_accuracy", "best val (epoch)", None), ("final_val_accuracy", "final val", "{:.4f}"),
               ("gap_best_final_val", "best - final val", "{:+.4f}"), ("gap_train_val", "train - val (final)", "{:+.4f}"),
               ("epoch_time_s", "s/epoch", "{:.1f}"), ("epochs", "epochs", "{:d}"),
               ("train_time_s", "train s", "{:.0f}"), ("params", "params", "{:,d}")]


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if fmt and "d}" in fmt:
        value = int(value)
    return fmt.format(value) if fmt else str(value)


def to_markdown(table, varied=()):
    """The comparison as a Markdown table (no tabulate dependency)."""
    columns = list(_MD_COLUMNS)
    columns[2:2] = [(k, f"F1 {k[3:]}", "{:.3f}") for k in table.columns if k.startswith("f1_") and k != "f1_macro"]
    header = ["variant", *varied] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * (1 + len(varied)) + ["---:"] * len(columns)) + "|"]
    for row in table.to_dict("records"):
        cells = [str(row["variant"])] + [_cell(row.get(k), None if not isinstance(row.get(k), float) else "{:g}")
                                         for k in varied]
        for key, _, fmt in columns:
            if key == "best_val_accuracy":
                best = row.get(key)
                cells.append("-" if best is None or np.isnan(best) else f"{best:.4f} ({int(row['best_epoch'])})")
            else:
                cells.append(_cell(row.get(key), fmt))
        if isinstance(row.get("error"), str):
            cells[0] += f" (failed: {row['error']})"
        if isinstance(row.get("pruned"), str):
            cells[0] += f" ({row['pruned']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_SUMMARY = [("test_accuracy", "test acc", "{:.4f}"), ("f1_macro", "macro F1", "{:.4f}"),
            ("best_val_accuracy", "best val", "{:.4f}"), ("epoch_time_s", "s/epoch", "{:.1f}"),
            ("train_time_s", "train s", "{:.0f}")]


def summarize(table):
    """A seeded grid's runs per setup: n, and mean and sample std (ddof 1) of each figure, in the grid's order."""
    import pandas as pd

    rows = []
    for setup, runs in table.groupby("setup", sort=False):
        row = {"setup": setup, "n": int(runs["test_accuracy"].notna().sum())}
        for key, _, _ in _SUMMARY:
            values = runs[key].astype(float) if key in runs else pd.Series(dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std(ddof=1)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary):
    """Mean ± std per setup as a Markdown table."""
    lines = ["| setup | seeds | " + " | ".join(title for _, title, _ in _SUMMARY) + " |",
             "|---|---:|" + "|".join(["---:"] * len(_SUMMARY)) + "|"]
    for row in summary.to_dict("records"):
        cells = [row["setup"], str(row["n"])]
        for key, _, fmt in _SUMMARY:
            mean, std = row[f"{key}_mean"], row[f"{key}_std"]
            cells.append(_cell(mean, fmt) + ("" if np.isnan(mean) or np.isnan(std) else f" ± {fmt.format(std)}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _common_settings(configs, varied):
    """Fields every run shares that differ from the Config defaults: what the table's header states."""
    from tfcnn.config import Config

    default = Config().to_dict()
    first = configs[0].to_dict()
    skip = REUSE_FREE | set(varied) | {"seed"}
    shared = {k: v for k, v in first.items() if k not in skip and all(c.to_dict()[k] == v for c in configs)}
    keys = ["arch", "dataset", "classes", "epochs", "batch_size", "limit_train", "limit_test"]
    keys += [k for k in shared if k not in keys and shared[k] != default.get(k)]
    return ", ".join(f"{k}={shared[k]}" for k in keys if k in shared and shared[k] is not None)


def write_results(table, out, group, *, grid, configs, varied, command, wall_time_s, reused=0, kind="Grid"):
    """<out>/<group>.csv (every column), .md (the readable table) and .png (the comparison figure)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{group}.csv", index=False, float_format="%.6g")
    run_walls = table["wall_time_s"].fillna(0).sum() if "wall_time_s" in table else 0
    md = [f"# {kind} `{group}`", "", grid.get("description", "").strip(), "",
          f"Common settings: {_common_settings(configs, varied)}.", ""]
    if "setup" in table:
        summary = summarize(table)
        summary.to_csv(out / f"{group}_summary.csv", index=False, float_format="%.6g")
        md += [f"Each setup over seeds {', '.join(map(str, sorted(set(table['seed']))))}: mean ± sample standard "
               "deviation (ddof 1).", "", summary_markdown(summary), "", "Every run:", ""]
    md += [to_markdown(table, varied), "",
          "test acc and macro F1: the best-validation checkpoint on the test set. best val (epoch): highest "
          "validation accuracy and its 1-based epoch; best - final val: how much validation accuracy was lost by "
          "the last epoch; train - val: final training accuracy (on the training batches, during the epoch) minus "
          "final validation accuracy, the overfitting gap. s/epoch: training time per epoch on this machine (it moves "
          "with whatever else the machine runs: compare within a grid with care).", "",
          f"Command: `{command}`  ",
          f"Time: the runs' own wall times (training and evaluation, from their metrics.json) sum to "
          f"{run_walls:.0f} s; " + (f"all {len(table)} runs were read back from an earlier invocation. "
                                    if reused == len(table) else
                                    f"this invocation took {wall_time_s:.0f} s ({reused} finished run(s) read back). ")
          + f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU core(s).", ""]
    (out / f"{group}.md").write_text("\n".join(md))
    plot_grid(table, out / f"{group}.png", title=group)
    return out


def plot_grid(table, path, title=None):
    """Bar chart of test accuracy per variant and validation-accuracy curves per variant."""
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    seeded = "setup" in table
    summary = summarize(table) if seeded else None
    labels = list(summary["setup"] if seeded else table["variant"])
    acc = (summary["test_accuracy_mean"] if seeded else table["test_accuracy"]).astype(float).to_numpy()
    spread = summary["test_accuracy_std"].astype(float).to_numpy() if seeded else None
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.42 * len(labels) + 1.5)))
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(np.arange(len(labels)) % 20)
    y = np.arange(len(labels))
    bars.barh(y, np.nan_to_num(acc), color=colors,
              xerr=None if spread is None else np.nan_to_num(spread), capsize=3)
    ends = np.nan_to_num(acc) + (0 if spread is None else np.nan_to_num(spread))  # right of the error bar
    for yi, a, end in zip(y, acc, ends):
        text = f" {a:.4f}" if np.isfinite(a) else " failed"
        bars.text(end, yi, text, va="center", fontsize=8)
    bars.set_yticks(y, labels, fontsize=8)
    bars.invert_yaxis()
    finite = acc[np.isfinite(acc)]
    low = max(0.0, float(finite.min()) - 0.05) if len(finite) else 0.0
    bars.set_xlim(low, 1.0 + (1.0 - low) * 0.12)
    bars.set_xlabel("test accuracy" + (" (mean ± std over seeds)" if seeded else ""))
    bars.grid(axis="x", alpha=0.3)
    if seeded:
        plot_seed_curves(curves, table, labels, colors)
    for label, run_dir, color in ([] if seeded else zip(labels, table["run"], colors)):
        hist = history(run_dir)
        if len(hist) and "val_accuracy" in hist:
            curves.plot(hist["epoch"], hist["val_accuracy"], marker="o", markersize=3, color=color, label=label)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation accuracy")
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_seed_curves(ax, table, setups, colors=None, metric="val_accuracy"):
    """On `ax`, per setup of a seeded grid: the mean curve of its seeds and a band of ± one std across them."""
    import pandas as pd

    colors = [None] * len(setups) if colors is None else colors
    for setup, color in zip(setups, colors):
        frames = [history(run) for run in table.loc[table["setup"] == setup, "run"]]
        frames = [h.set_index("epoch")[metric] for h in frames if len(h) and metric in h]
        if frames:
            runs = pd.concat(frames, axis=1)
            mean, std = runs.mean(axis=1), runs.std(axis=1, ddof=1).fillna(0)
            line, = ax.plot(mean.index, mean, color=color, label=f"{setup} (n={runs.shape[1]})")
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    return ax


def plot_study(study, out, group):
    """Optuna's own figures of a study: <group>_history.png and, with 2+ completed trials, <group>_importances.png."""
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    completed = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    figures = [("history", optuna_plots.plot_optimization_history)] if completed else []
    if completed >= 2:
        figures.append(("importances", optuna_plots.plot_param_importances))
    for suffix, plot in figures:
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances when every trial drew the same values
            print(f"[{group}] no {suffix} figure: {exc}", flush=True)
            continue
        figure = ax.figure if hasattr(ax, "figure") else ax
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = Path(out) / f"{group}_{suffix}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
