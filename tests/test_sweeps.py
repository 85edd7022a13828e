"""Sweeps on Optuna (tfcnn.sweeps under tfcnn.experiments): worker processes sharing one study, a killed worker's
trial retried and resumed, a search, a real PostgreSQL server, and bad input as one line and exit 2.

The tests that train start real `python -m tfcnn.experiments` processes on tiny LeNet-5 runs (a few hundred MNIST
images, 1-3 epochs)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tfcnn import experiments, sweeps
from tfcnn.config import Config
from tfcnn.errors import TfcnnError

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = {"arch": "lenet5", "dataset": "mnist", "epochs": 1, "limit_train": 256, "limit_test": 200,
             "schedule": "constant", "augment": False, "val_fraction": 0.05}
# The figures a deterministic run must reproduce exactly (times differ from run to run).
ACCURACY = ["test_accuracy", "f1_macro", "best_val_accuracy", "final_val_accuracy", "final_train_accuracy"]


def test_optuna_is_the_pinned_version():
    # tfcnn.sweeps uses three private parts of Optuna 5.1 (the waiting-trial claim, the heartbeat thread, the
    # stale-trial ids of a storage): a new Optuna must be checked against them before the pin moves.
    import optuna

    assert optuna.__version__ == "5.1.0"


# ---------------------------------------------------------------- the engine, without training

def _study(tmp_path, name="fake", heartbeat=1):
    return sweeps.load_or_create_study(sweeps.open_storage(None, tmp_path / name, heartbeat=heartbeat), name)


def _runs(name, labels):
    return [(label, sweeps.grid_params(label), Config(name=f"{name}/{label}")) for label in labels]


@pytest.fixture()
def deadline():
    """Fail, rather than hang, a worker loop that never ends (e.g. waiting forever on a dead worker's trial)."""
    def expire(signum, frame):
        raise TimeoutError("the worker loop did not end within 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_dead_workers_trial_is_retried_once_its_heartbeat_is_stale(tmp_path, capsys, deadline):
    study = _study(tmp_path)
    assert sweeps.enqueue_grid(study, _runs("fake", ["a", "b"])) == []
    dead = sweeps._claim(study)  # a worker that took trial 0 and died: RUNNING, and no heartbeat ever after
    assert dead.user_attrs["run"] == "a"
    ran = []

    def objective(trial):
        ran.append((trial.number, trial.user_attrs["run"], trial.params))
        return 0.5

    start = time.monotonic()
    assert sweeps.work(study, objective) == [1, 2]
    assert time.monotonic() - start >= sweeps.GRACE * 1  # it waited for the dead trial's heartbeat to go stale
    assert [(number, run) for number, run, _ in ran] == [(1, "b"), (2, "a")]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == 0 and trials[2].user_attrs["run"] == "a"
    assert {label: t.number for label, t in sweeps.results(study).items()} == {"a": 2, "b": 1}
    assert "retry of trial 0, whose worker died" in capsys.readouterr().out
    # Nothing is left to do: the same call again runs nothing and queues nothing.
    assert sweeps.enqueue_grid(study, _runs("fake", ["a", "b"])) == ["a", "b"]
    assert sweeps.work(study, objective) == [] and len(study.get_trials()) == 3


def test_a_run_queued_twice_runs_once(tmp_path, deadline):
    # Two hosts starting the same grid at the same moment may both queue a run; the second copy is skipped.
    study = _study(tmp_path)
    sweeps.enqueue_grid(study, _runs("fake", ["a"]))
    study.enqueue_trial({"variant": "a"}, user_attrs={"run": "a", "config": Config(name="fake/a").to_dict()})
    ran = []
    assert sweeps.work(study, lambda trial: ran.append(trial.number) or 1.0) == [0]
    assert ran == [0]
    assert study.get_trials()[1].user_attrs["duplicate_of"] == 0
    assert sweeps.results(study)["a"].number == 0


def test_a_study_refuses_runs_with_other_settings(tmp_path):
    study = _study(tmp_path)
    sweeps.enqueue_grid(study, _runs("fake", ["a"]))
    changed = [("a", sweeps.grid_params("a"), Config(name="fake/a", epochs=3, runs_dir="elsewhere"))]
    with pytest.raises(TfcnnError, match=r"^study fake holds run a with other settings \(epochs\); use another "):
        sweeps.enqueue_grid(study, changed)


def test_storage_urls(tmp_path):
    assert sweeps.describe_storage(None, tmp_path) == str(tmp_path / "study.journal")
    assert sweeps.describe_storage("postgresql://me:secret@db:5432/sweeps") == "postgresql://me:***@db:5432/sweeps"
    assert sweeps.describe_storage("journal:/shared/x.journal") == "/shared/x.journal"
    storage = sweeps.open_storage(f"journal:{tmp_path / 'shared' / 'grid.journal'}", heartbeat=5)
    assert storage.get_heartbeat_interval() == 5 and (tmp_path / "shared" / "grid.journal").exists()
    sqlite = sweeps.open_storage(f"sqlite:///{tmp_path / 'grid.db'}", heartbeat=5)
    assert sqlite.get_heartbeat_interval() == 5
    with pytest.raises(TfcnnError, match="neither a database URL"):
        sweeps.open_storage("db.example")
    with pytest.raises(TfcnnError, match="^cannot open --storage sqlite:////nonexistent"):
        sweeps.open_storage("sqlite:////nonexistent/folder/grid.db")


def test_search_files(tmp_path):
    name, search, config_file = sweeps.load_search("speedrun-lr")
    assert name == "speedrun-lr" and config_file.name == "cifar10_speedrun.yaml" and search["trials"] == 8
    lr = sweeps.distribution("lr", search["space"]["lr"])
    assert (lr.low, lr.high, lr.log) == (2.0, 20.0, True)
    _, lenet, _ = sweeps.load_search("lenet-lr")
    assert sweeps.distribution("activation", lenet["space"]["activation"]).choices == ("tanh", "relu")
    assert sweeps.distribution("epochs", {"low": 2, "high": 8, "step": 2}).step == 2  # ints stay ints
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("space: {colour: {choices: [red]}}\n", "unknown field 'colour' in space"),
        ("space: {lr: {low: 0.1}}\n", "space entry lr: KeyError"),
        ("space: {lr: {low: -1.0, high: 1.0, log: true}}\n", "space entry lr: ValueError"),
        ("space: {lr: {choices: [0.1], low: 0.2}}\n", "choices is a non-empty list"),
        ("space: {lr: [0.1]}\nmetric: test_accuracy\n", "metric 'test_accuracy' is not one of"),
        ("space: {lr: [0.1]}\nrepeats: 2\n", r"unknown keys \['repeats'\]"),
        ("base: {lr: 0.1}\n", "needs `space:`"),
    ]:
        bad.write_text(text)
        with pytest.raises(TfcnnError, match=message):
            sweeps.load_search(bad)


@pytest.mark.parametrize("name", sweeps.search_names())
def test_every_built_in_search_makes_valid_configs(name, tmp_path):
    group, search, base, config_file = experiments.search_configs(name, runs_dir=str(tmp_path))
    assert group == name and search["trials"] >= 1
    from tfcnn.config import make_config

    for spec_name, spec in search["space"].items():  # the ends of every range, and every choice, make a config
        dist = sweeps.distribution(spec_name, spec)
        for value in getattr(dist, "choices", None) or (dist.low, dist.high):
            make_config({**base, spec_name: value, "name": f"{group}/check"}, config_file)


# ---------------------------------------------------------------- bad input: one line, exit 2

def _one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiments.run_cli(experiments.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    runs = ["--runs-dir", str(tmp_path / "runs"), "--quick"]
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = _one_line_exit_2(["lenet-seeds", "--storage", f"postgresql://tfcnn:secret@127.0.0.1:{port}/sweeps", *runs],
                           capsys)
    assert err.startswith(f"error: cannot open --storage postgresql://tfcnn:***@127.0.0.1:{port}/sweeps: ")
    assert "secret" not in err
    space = tmp_path / "colour.yaml"
    space.write_text("base: {arch: lenet5}\nspace:\n  colour: {choices: [red, blue]}\n")
    err = _one_line_exit_2(["search", str(space), *runs], capsys)
    assert err == f"error: search file {space}: unknown field 'colour' in space; a search varies fields of " \
                  "tfcnn.config.Config (see python -m tfcnn.train --help)\n"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    err = _one_line_exit_2(["lenet-seeds", "--backend", "ray", *runs], capsys)
    assert err.startswith("error: --backend ray needs Ray Tune, which is not installed: pip install 'tfcnn[sweeps]'")
    assert _one_line_exit_2(["search"], capsys).startswith("error: name a search after `search`: ")
    assert "--workers must be at least 1" in _one_line_exit_2(["lenet-seeds", "--workers", "0", *runs], capsys)
    assert not (tmp_path / "runs" / "lenet-seeds-quick").exists() or \
        not list((tmp_path / "runs" / "lenet-seeds-quick").glob("*/metrics.json"))


# ---------------------------------------------------------------- real runs in real worker processes

def _grid_file(tmp_path, **grid):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"description": "tiny", "base": TINY_BASE, **grid}))
    return path


def _cli(args, shared_data, log, **popen):
    """`python -m tfcnn.experiments ARGS` in the background, its output in `log`."""
    env = {**os.environ, "TFCNN_DATA_DIR": str(shared_data), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "tfcnn.experiments", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)


def _second_once_queued(first, args, shared_data, tmp_path):
    """Start a second invocation (log b.log) once the first (log a.log) has queued the study's runs."""
    deadline = time.monotonic() + 1200  # generous: other jobs may share the cores
    while "study tiny in" not in (tmp_path / "a.log").read_text():
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()
        time.sleep(0.2)
    return _cli(args, shared_data, tmp_path / "b.log")


def _finish(process, log, timeout=600):
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    text = Path(log).read_text()
    assert code == 0, text[-3000:]
    return text


def _trials(journal, name):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _epochs(run_dir):
    """The 1-based epochs of a run's history.csv (tfcnn.evaluate.history)."""
    from tfcnn import evaluate

    return evaluate.history(run_dir)["epoch"].tolist()


@pytest.mark.slow
def test_two_workers_run_every_trial_once_and_match_one_worker(tmp_path, shared_data):
    grid = _grid_file(tmp_path, variants=[{"activation": "tanh"}, {"activation": "relu"}], seeds=[1, 2])
    common = [str(grid), "--deterministic", "--set", "cpu_threads=1"]
    tables = {}
    for workers in (1, 2):
        runs = tmp_path / f"runs{workers}"
        out = _finish(_cli([*common, "--workers", str(workers), "--runs-dir", str(runs),
                            "--set", f"saved_models_dir={tmp_path / f'saved{workers}'}"], shared_data,
                           tmp_path / f"w{workers}.log"), tmp_path / f"w{workers}.log")
        trials = _trials(runs / "tiny" / "study.journal", "tiny")
        labels = [t.user_attrs["run"] for t in trials]
        assert sorted(labels) == ["relu-seed1", "relu-seed2", "tanh-seed1", "tanh-seed2"]  # each once
        assert all(t.state.name == "COMPLETE" for t in trials)
        assert len({t.user_attrs["worker"] for t in trials}) == workers  # every worker trained some
        assert out.count("done: tiny/") == 4  # four trainings, no retrain, no reuse
        for label in labels:
            assert _epochs(runs / "tiny" / label) == [1]
        tables[workers] = pd.read_csv(runs / "tiny" / "tiny.csv")
        tables[workers, "summary"] = pd.read_csv(runs / "tiny" / "tiny_summary.csv")
        assert list(tables[workers]["variant"]) == ["tanh-seed1", "tanh-seed2", "relu-seed1", "relu-seed2"]
    # The same table and summary, to the digit (the CSVs' 6 significant digits and the runs' own metrics).
    pd.testing.assert_frame_equal(tables[1][ACCURACY], tables[2][ACCURACY], check_exact=True)
    columns = [c for c in tables[1, "summary"] if c.split("_")[0] in ("setup", "n", "test", "f1", "best")]
    pd.testing.assert_frame_equal(tables[1, "summary"][columns], tables[2, "summary"][columns], check_exact=True)
    for label in tables[1]["variant"]:
        one, two = (json.loads((tmp_path / f"runs{w}" / "tiny" / label / "metrics.json").read_text())
                    for w in (1, 2))
        assert one["test"]["accuracy"] == two["test"]["accuracy"] and one["test"]["loss"] == two["test"]["loss"]


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_run_resumes(tmp_path, shared_data):
    grid = _grid_file(tmp_path, base={**TINY_BASE, "epochs": 4, "limit_train": 2048, "val_fraction": 0.01},
                      variants=[{"activation": "tanh"}, {"activation": "relu"}])
    runs = tmp_path / "runs"
    args = [str(grid), "--runs-dir", str(runs), "--set", f"saved_models_dir={tmp_path / 'saved'}", "--heartbeat", "1"]
    first = _cli(args, shared_data, tmp_path / "a.log")
    try:
        second = _second_once_queued(first, args, shared_data, tmp_path)
        deadline = time.monotonic() + 1200  # generous: other jobs may share the cores
        # Kill A mid-run, once its run's backup holds an epoch: history.csv has a second row only after the first
        # epoch's backup (an epoch counts as done once its backup is written; a kill before loses that epoch only).
        while True:
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()
            started = [line for line in (tmp_path / "a.log").read_text().splitlines() if "] trial " in line]
            if started:
                label = started[-1].split(": ")[-1]
                history = runs / "tiny" / label / "history.csv"
                if history.exists() and len(_epochs(runs / "tiny" / label)) >= 2:
                    first.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.05)
        first.wait()
        rows_at_kill = len(_epochs(runs / "tiny" / label))
        assert 2 <= rows_at_kill < 4 and not (runs / "tiny" / label / "metrics.json").exists()
        out = _finish(second, tmp_path / "b.log")
    finally:
        for process in (first, locals().get("second")):
            if process is not None and process.poll() is None:
                process.kill()
    killed = int(started[-1].split("] trial ")[1].split(":")[0])
    assert f": {label} (retry of trial {killed}, whose worker died)" in out
    resumed = re.search(rf"resuming train of {label} after epoch (\d)/4", out)
    assert resumed and rows_at_kill - 1 <= int(resumed.group(1)) <= rows_at_kill  # not from scratch
    assert _epochs(runs / "tiny" / label) == [1, 2, 3, 4]  # no epoch lost or trained twice
    trials = _trials(runs / "tiny" / "study.journal", "tiny")
    states = {(t.user_attrs["run"], t.state.name) for t in trials}
    assert states == {("tanh", "COMPLETE"), ("relu", "COMPLETE"), (label, "FAIL")} and len(trials) == 3
    table = pd.read_csv(runs / "tiny" / "tiny.csv")
    assert table["epochs"].tolist() == [4, 4] and table["test_accuracy"].between(0.2, 1).all()
    assert "error" not in table or table["error"].isna().all()


@pytest.mark.slow  # ~75 s of 3 trainings: the default suite stays ~15 min
def test_a_search_runs_tpe_trials_and_plots_the_study(tmp_path, shared_data, capsys):
    runs = tmp_path / "runs"
    argv = ["search", "lenet-lr", "--quick", "--trials", "3", "--pruner", "median", "--runs-dir", str(runs),
            "--data-dir", str(shared_data), "--set", f"saved_models_dir={tmp_path / 'saved'}"]
    assert experiments.main(argv) == 0
    out = capsys.readouterr().out
    folder = runs / "lenet-lr-quick"
    table = pd.read_csv(folder / "lenet-lr-quick.csv")
    assert table["variant"].tolist() == ["trial000", "trial001", "trial002"]
    assert table["lr"].between(1e-4, 0.03).all() and set(table["activation"]) <= {"tanh", "relu"}
    assert set(table["conv_layers"]) <= {1, 2, 3}
    # The median pruner may stop a trial below the others' median at epoch 2 (from the third trial on).
    pruned = table["pruned"].notna() if "pruned" in table else pd.Series(False, index=table.index)
    assert not pruned[:2].any() and (table.loc[~pruned, "epochs"] == 2).all()
    assert table.loc[~pruned, "value"].tolist() == pytest.approx(table.loc[~pruned, "best_val_accuracy"].tolist())
    assert table.loc[pruned, "pruned"].str.startswith("pruned after epoch 2 (val accuracy").all()
    best = table.loc[table["value"].idxmax()]
    assert f"best: trial {int(best['trial'])} ({best['variant']}) value {best['value']:.4f} with lr=" in out
    for name in ("lenet-lr-quick.md", "lenet-lr-quick.png", "lenet-lr-quick_history.png",
                 "lenet-lr-quick_importances.png"):
        assert (folder / name).read_bytes()[:4] in (b"\x89PNG", b"# Se"), name
    trials = _trials(folder / "study.journal", "lenet-lr-quick")
    assert [len(t.intermediate_values) for t in trials] == [2, 2, 2]  # each epoch's val accuracy, reported
    # The same command with more trials carries on: the three finished runs are not trained again.
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("trial*/metrics.json")}
    assert experiments.main([*argv[:4], "4", *argv[5:]]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(pd.read_csv(folder / "lenet-lr-quick.csv")) == 4


def _kill_mid_run(process, group_dir, log, epochs, deadline, group=False):
    """SIGKILL `process` (with group: its whole process group) mid-run, once a run in `group_dir` has a backup of
    an epoch: history.csv has a second row only after the first epoch's backup (an epoch counts as done once its
    backup is written). Returns that run's folder and its history rows at the kill."""
    while True:
        assert process.poll() is None and time.monotonic() < deadline, Path(log).read_text()[-3000:]
        for history in group_dir.glob("*/history.csv"):
            done = len(_epochs(history.parent)) if history.stat().st_size else 0
            if 2 <= done < epochs and not (history.parent / "metrics.json").exists():
                if group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.send_signal(signal.SIGKILL)
                process.wait()
                return history.parent, len(_epochs(history.parent))
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_backend_gives_the_same_table_and_resumes_after_a_kill(tmp_path, shared_data):
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'tfcnn[sweeps]')")
    grid = _grid_file(tmp_path, base={**TINY_BASE, "epochs": 4, "limit_train": 1024, "val_fraction": 0.01},
                      variants=[{"activation": "tanh"}, {"activation": "relu"}])
    common = [str(grid), "--deterministic", "--set", "cpu_threads=2"]
    _finish(_cli([*common, "--runs-dir", str(tmp_path / "optuna"), "--set", f"saved_models_dir={tmp_path / 's1'}"],
                 shared_data, tmp_path / "optuna.log"), tmp_path / "optuna.log")
    runs = tmp_path / "ray"
    args = [*common, "--backend", "ray", "--cpus-per-trial", "2", "--runs-dir", str(runs),
            "--set", f"saved_models_dir={tmp_path / 's2'}"]
    # The first invocation is killed mid-run with the embedded Ray it started (its process group).
    first = _cli(args, shared_data, tmp_path / "ray1.log", start_new_session=True)
    try:
        killed, rows = _kill_mid_run(first, runs / "tiny", tmp_path / "ray1.log", 4, time.monotonic() + 1200,
                                     group=True)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    out = _finish(_cli(args, shared_data, tmp_path / "ray2.log"), tmp_path / "ray2.log")
    assert "restoring the Ray Tune experiment" in out
    resumed = re.search(rf"resuming train of {killed.name} after epoch (\d)/4", out)
    assert resumed and rows - 1 <= int(resumed.group(1)) <= rows  # resumed, not restarted
    assert _epochs(killed) == [1, 2, 3, 4]
    one, two = (pd.read_csv(tmp_path / name / "tiny" / "tiny.csv") for name in ("optuna", "ray"))
    assert list(two["variant"]) == ["tanh", "relu"] and (two["epochs"] == 4).all()
    pd.testing.assert_frame_equal(one[ACCURACY], two[ACCURACY], check_exact=True)


# ---------------------------------------------------------------- a real PostgreSQL server

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture()
def postgres(tmp_path):
    """A throwaway PostgreSQL server on a free local port, its socket and data in a tmp folder; yields its URL."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (pip install 'tfcnn[sweeps]')")
    initdb = shutil.which("initdb") or (PG_BIN / "initdb" if (PG_BIN / "initdb").exists() else None)
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    bin_dir = Path(initdb).resolve().parent  # Debian links initdb alone onto the PATH
    folder = tmp_path / "pg"
    folder.mkdir()
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: PostgreSQL cannot be started")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        for parent in [tmp_path, *tmp_path.parents]:  # the postgres user must reach the folder
            if parent.stat().st_mode & 0o001 == 0 and parent != Path("/"):
                os.chmod(parent, parent.stat().st_mode | 0o001)
    data = folder / "data"
    init = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "tfcnn", "--auth=trust",
                           "-E", "UTF8"], capture_output=True, text=True)
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1] if init.stderr.strip() else init.returncode}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                               "-k", str(folder), "-c", "listen_addresses=127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "postgres.log", "w"))
    try:
        deadline = time.monotonic() + 60
        while True:
            created = subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                      "-U", "tfcnn", "sweeps"], capture_output=True, text=True, cwd=folder)
            if created.returncode == 0:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the PostgreSQL server did not start: {created.stderr.strip()[-200:]}")
            time.sleep(0.5)
        yield f"postgresql://tfcnn@127.0.0.1:{port}/sweeps"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_two_worker_processes_share_a_study_in_postgresql(tmp_path, shared_data, postgres):
    grid = _grid_file(tmp_path, variants=[{"activation": "tanh"}, {"activation": "relu"}], seeds=[1, 2])
    runs = tmp_path / "runs"
    args = [str(grid), "--storage", postgres, "--runs-dir", str(runs), "--set", f"saved_models_dir={tmp_path / 's'}"]
    first = _cli(args, shared_data, tmp_path / "a.log")
    second = _second_once_queued(first, args, shared_data, tmp_path)
    outs = [_finish(first, tmp_path / "a.log"), _finish(second, tmp_path / "b.log")]
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=sweeps.open_storage(postgres)).get_trials()
    assert sorted(t.user_attrs["run"] for t in trials) == ["relu-seed1", "relu-seed2", "tanh-seed1", "tanh-seed2"]
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes trained
    assert sum(out.count("done: tiny/") for out in outs) == 4
    assert not (runs / "tiny" / "study.journal").exists()  # the study lived in the database
    for out in outs:  # both wrote the whole table
        assert "| tanh-seed1 |" in out and "| relu-seed2 |" in out
