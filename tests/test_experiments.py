"""Experiment grids: a tiny real grid (2 LeNet-5 variants, 1 epoch, 256 MNIST images) end to end."""
import json

import pandas as pd
import pytest

from tfcnn import experiments
from tfcnn.errors import TfcnnError

TINY = {
    "description": "two activations, one epoch",
    "base": {"arch": "lenet5", "dataset": "mnist", "epochs": 1, "limit_train": 256, "limit_test": 200,
             "schedule": "constant", "augment": False, "val_fraction": 0.02},
    "variants": [{"activation": "tanh"}, {"activation": "relu", "lr": 0.002}],
}
COLUMNS = ["variant", "activation", "lr", "test_accuracy", "f1_macro", "best_val_accuracy", "best_epoch",
           "final_val_accuracy", "final_train_accuracy", "gap_best_final_val", "gap_train_val", "epoch_time_s",
           "epochs", "params", "run"]


@pytest.fixture()
def tiny_grid(tmp_path, shared_data):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    dirs = dict(runs_dir=str(tmp_path / "runs"), saved_models_dir=str(tmp_path / "saved_models"),
                data_dir=str(shared_data))
    return path, dirs, tmp_path / "out"


def test_grid_writes_table_and_resumes(tiny_grid, capsys):
    path, dirs, out = tiny_grid
    # An "interrupted" grid: only the first variant finished.
    first = experiments.run_grid(path, only=["tanh"], out=out, **dirs)
    assert list(first["variant"]) == ["tanh"]
    finished = out.parent / "runs" / "tiny" / "tanh" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    capsys.readouterr()

    table = experiments.run_grid(path, out=out, **dirs)
    # The grid's study (runs/tiny/study.journal) knows tanh's trial completed: only relu is trained.
    printed = capsys.readouterr().out
    assert "study tiny in " in printed and ": 2 runs, 1 finished earlier" in printed
    assert "trial 1: relu-lr0.002" in printed and "tanh" not in printed.split("finished earlier")[1]
    assert finished.stat().st_mtime_ns == stamp  # read back, not retrained
    assert list(table["variant"]) == ["tanh", "relu-lr0.002"]
    assert set(COLUMNS) <= set(table.columns)
    assert table["epochs"].tolist() == [1, 1]
    assert table["params"].tolist() == [61706, 61706]
    assert table["test_accuracy"].between(0, 1).all()
    assert table["gap_best_final_val"].tolist() == pytest.approx([0.0, 0.0])  # one epoch: best is final
    assert first["test_accuracy"][0] == table["test_accuracy"][0]

    csv = pd.read_csv(out / "tiny.csv")
    assert len(csv) == 2 and set(COLUMNS) <= set(csv.columns)
    assert csv["lr"].tolist() == pytest.approx([0.001, 0.002])
    md = (out / "tiny.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| variant | activation | lr | test acc | macro F1 | best val (epoch)")
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| tanh", "| relu-lr0.002"]
    assert "epochs=1" in md and "limit_train=256" in md
    assert (out / "tiny.png").read_bytes()[:4] == b"\x89PNG"

    # The same runs with other settings are not silently mixed into the table.
    with pytest.raises(TfcnnError, match="^study tiny holds run tanh with other settings \\(epochs\\)"):
        experiments.run_grid(path, out=out, epochs=2, **dirs)
    # A run folder trained before its study existed (e.g. an older tfcnn) is read back, not retrained.
    (out.parent / "runs" / "tiny" / "study.journal").unlink()
    again = experiments.run_grid(path, out=out, **dirs)
    assert capsys.readouterr().out.count("reusing finished run") == 2
    assert finished.stat().st_mtime_ns == stamp and again["test_accuracy"].tolist() == table["test_accuracy"].tolist()


def test_a_failing_run_does_not_stop_the_grid(tiny_grid):
    path, dirs, out = tiny_grid
    grid = dict(TINY, variants=[{"activation": "relu", "optimizer": "sgd", "lr": 1e30, "label": "diverges"},
                                {"activation": "relu"}])
    path.write_text(json.dumps(grid))
    table = experiments.run_grid(path, out=out, **dirs)
    assert list(table["variant"]) == ["diverges", "relu"]
    assert "loss became NaN/inf" in table["error"][0] and pd.isna(table["error"][1])
    assert pd.isna(table["test_accuracy"][0]) and 0 < table["test_accuracy"][1] <= 1
    assert "diverges (failed: loss became NaN/inf" in (out / "tiny.md").read_text()


def test_grid_configs_precedence_and_clashes(tmp_path):
    group, configs, varied, _ = experiments.grid_configs("lenet-variants", quick=True, runs_dir=str(tmp_path))
    assert group == "lenet-variants-quick" and varied == ["optimizer", "activation", "lr"]
    assert len(configs) == 10
    label, config = configs[4]
    assert label == "sgd-tanh-lr0.01" and config.name == "lenet-variants-quick/sgd-tanh-lr0.01"
    assert (config.optimizer, config.lr, config.momentum, config.schedule) == ("sgd", 0.01, 0.0, "constant")
    assert (config.epochs, config.limit_train, config.verbose, config.tensorboard) == (1, 256, 0, False)
    _, configs, _, _ = experiments.grid_configs("notmnist-models", quick=True, epochs=2)
    assert [(c.arch, c.width, c.epochs, c.dataset) for _, c in configs][0] == ("two_conv", 64, 2, "notmnist")
    with pytest.raises(TfcnnError, match="varies lr"):
        experiments.grid_configs("lenet-variants", lr=0.1)
    with pytest.raises(TfcnnError, match="no variant 'adam'"):
        experiments.grid_configs("lenet-variants", only="adam")
    with pytest.raises(TfcnnError, match="unknown config fields"):
        experiments.grid_configs("lenet-study", colour="red")


@pytest.mark.parametrize("name", experiments.grid_names())
def test_every_built_in_grid_makes_valid_configs(name, tmp_path):
    _, configs, _, grid = experiments.grid_configs(name, runs_dir=str(tmp_path))
    assert len(configs) == len(grid["variants"]) * len(grid.get("seeds") or [0])
    assert len({config.name for _, config in configs}) == len(configs)


def test_variant_labels():
    assert experiments.variant_label({"optimizer": "adam", "activation": "tanh", "lr": 0.0001}) == "adam-tanh-lr0.0001"
    assert experiments.variant_label({}) == "baseline"
    assert experiments.variant_label({"label": "mine", "lr": 1.0}) == "mine"
    assert experiments.variant_label({"classes": ["cat", "dog"], "dataset": "folder:/a/b"}) == "classescat+dog-folder:_a_b"


@pytest.mark.parametrize("argv, message", [
    (["nope"], "error: unknown grid 'nope'; choose one of cifar-cnn-lecture, cifar-cnn-seeds, lenet-seeds"),
    (["lenet-study", "--set", "colour=red"], "error: unknown config fields ['colour']"),
    (["lenet-study", "--set", "epochs"], "error: --set takes key=value"),
    (["lenet-variants", "--set", "lr=0.1"], "error: grid lenet-variants varies lr"),
    ([], "error: name a grid"),
])
def test_cli_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiments.run_cli(experiments.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_bad_grid_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("base: {arch: lenet5}\n")
    with pytest.raises(TfcnnError, match="needs `variants:`"):
        experiments.load_grid(path)
    path.write_text("variants: [{lr: 0.1}]\nbase: {}\nrepeats: 3\n")
    with pytest.raises(TfcnnError, match="unknown keys \\['repeats'\\]"):
        experiments.load_grid(path)


def test_seeded_grid_reports_mean_and_spread(tiny_grid):
    path, dirs, out = tiny_grid
    grid = dict(TINY, variants=[{"activation": "relu", "label": "relu"}], seeds=[1, 2])
    path.write_text(json.dumps(grid))
    table = experiments.run_grid(path, out=out, **dirs)
    assert list(table["variant"]) == ["relu-seed1", "relu-seed2"]
    assert list(table["setup"]) == ["relu", "relu"] and list(table["seed"]) == [1, 2]
    assert all((out.parent / "runs" / "tiny" / f"relu-seed{s}" / "metrics.json").exists() for s in (1, 2))
    summary = pd.read_csv(out / "tiny_summary.csv")
    acc = table["test_accuracy"].to_numpy()
    assert summary["n"].tolist() == [2]
    assert summary["test_accuracy_mean"][0] == pytest.approx(acc.mean(), abs=1e-6)
    assert summary["test_accuracy_std"][0] == pytest.approx(acc.std(ddof=1), abs=1e-6)
    md = (out / "tiny.md").read_text()
    assert f"| relu | 2 | {acc.mean():.4f} ± {acc.std(ddof=1):.4f} |" in md


def test_seeds_expand_every_variant(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(dict(TINY, seeds=[3, 7])))
    _, configs, _, _ = experiments.grid_configs(path, runs_dir=str(tmp_path))
    assert [(label, c.seed) for label, c in configs] == [
        ("tanh-seed3", 3), ("tanh-seed7", 7),
        ("relu-lr0.002-seed3", 3), ("relu-lr0.002-seed7", 7)]
    _, configs, _, _ = experiments.grid_configs(path, quick=True, runs_dir=str(tmp_path))
    assert [c.seed for _, c in configs] == [3, 3]  # --quick: one seed per variant
    with pytest.raises(TfcnnError, match="drop the seed override"):
        experiments.grid_configs(path, seed=5)
    path.write_text(json.dumps(dict(TINY, seeds=[1, 1])))
    with pytest.raises(TfcnnError, match="list of distinct integers"):
        experiments.load_grid(path)
