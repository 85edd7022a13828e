"""Every lab notebook runs top to bottom in quick mode (papermill), writing only into a temporary folder.

The notebooks run two at a time: most of a quick run is single-threaded (kernel start, TensorFlow
import, graph tracing), so a second kernel uses the other core instead of waiting.
"""
import concurrent.futures
import os
import pathlib

import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
# Started first: the MobileNetV2 + SAM quick run (tracing a 153-layer graph twice) takes the longest.
SLOWEST_FIRST = sorted(NAMES, key=lambda name: not name.startswith("05_"))


def _execute(name, workdir, data_dir):
    try:
        papermill.execute_notebook(
            # The kernel starts in notebooks/ through nbclient's resources, not papermill's cwd=: that is a
            # process-wide os.chdir, so with two notebooks in threads one could start its kernel in the other's
            # restored folder (notebook 01 then looked for configs/ one folder too high).
            str(NOTEBOOKS / name), str(workdir / name), kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
            parameters=dict(quick=True, workdir=str(workdir), data_dir=str(data_dir)),
            progress_bar=False, log_output=False, execution_timeout=300)
    except papermill.PapermillExecutionError as exc:
        return f"{name}: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
    return None


@pytest.fixture(scope="module")
def executed(tmp_path_factory, shared_data):
    """{notebook name: (error or None, its workdir)}, all notebooks executed once."""
    repo = str(NOTEBOOKS.parent)
    saved = os.environ.get("PYTHONPATH")
    # The kernels import tfcnn from this checkout even without `pip install -e .`.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, saved]))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    try:
        workdirs = {name: tmp_path_factory.mktemp(name.split("_")[0]) for name in NAMES}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_execute, name, workdirs[name], shared_data) for name in SLOWEST_FIRST}
            results = {name: (future.result(), workdirs[name]) for name, future in futures.items()}
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote next to the notebooks"
    return results


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_quick_mode(name, executed):
    error, workdir = executed[name]
    if error:
        pytest.fail(error, pytrace=False)
    assert (workdir / "runs").is_dir()  # every notebook trains (or reads) its runs there, not in the repo
