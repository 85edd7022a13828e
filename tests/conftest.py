"""Shared test fixtures: where the offline dataset copies live; --slow for the long tests."""
import os
import pathlib
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Lets `pytest` import tfcnn from a plain checkout, before `pip install -e .`.
sys.path.insert(0, str(REPO))


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (e.g. every fault-injection point of tests/test_faults.py)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or config.option.markexpr:  # -m picks the tests itself
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(scope="session")
def shared_data():
    """The read-only dataset copies in ../shared/data (see /work/shared/data/README.md)."""
    path = (REPO / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"no shared dataset copies at {path}; put mnist.npz etc. there to run real-data tests")
    return path


def pytest_configure(config):
    """Hypothesis profiles for tests/test_fuzz.py: a few derandomised cases per front door by default, 10,000
    under --slow; no deadline (the cores are shared) and no example database written into the checkout."""
    try:
        from hypothesis import HealthCheck, settings
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # hypothesis is a test dependency (requirements.txt); only test_fuzz.py needs it
        return
    # Its caches (constants, Unicode tables) go to the temp folder, not a .hypothesis/ in the checkout.
    set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "tfcnn-hypothesis"))
    common = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])
    settings.register_profile("tfcnn", max_examples=50, derandomize=True, **common)
    settings.register_profile("tfcnn-slow", max_examples=10_000, **common)
    settings.load_profile("tfcnn-slow" if config.getoption("--slow") else "tfcnn")
