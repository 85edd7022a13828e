"""Every lab notebook runs top to bottom in quick mode (papermill), writing only into a temporary folder."""
import os
import pathlib

import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_in_quick_mode(name, tmp_path, shared_data, monkeypatch):
    repo = str(NOTEBOOKS.parent)
    # The kernel imports tfcnn from this checkout even without `pip install -e .`.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name), str(tmp_path / name), kernel_name="python3", cwd=str(NOTEBOOKS),
            parameters=dict(quick=True, workdir=str(tmp_path), data_dir=str(shared_data)),
            progress_bar=False, log_output=False, execution_timeout=300)
    except papermill.PapermillExecutionError as exc:
        pytest.fail(f"{name}: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}", pytrace=False)
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before  # nothing written next to the notebooks
    assert (tmp_path / "runs").is_dir()
