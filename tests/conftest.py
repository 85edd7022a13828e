"""Shared test fixtures: where the offline dataset copies live."""
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Lets `pytest` import tfcnn from a plain checkout, before `pip install -e .`.
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def shared_data():
    """The read-only dataset copies in ../shared/data (see /work/shared/data/README.md)."""
    path = (REPO / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"no shared dataset copies at {path}; put mnist.npz etc. there to run real-data tests")
    return path
