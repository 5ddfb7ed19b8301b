"""Shared pytest configuration for the shoal test suite.

Every test module also sets ``pytestmark = pytest.mark.timeout(60)`` so that a
hang in the engine turns into a test failure instead of a stuck CI job.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Make ``helpers_mod`` importable from the test modules regardless of pytest's
# import mode.  Deliberately *not* exported through PYTHONPATH: like
# multiprocessing, shoal's workers are expected to be able to import whatever
# the parent could import (functions from the test modules and helpers_mod).
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


#: Set in the interpreter that runs an ``isolated`` test for real.
_ISOLATED_CHILD = "SHOAL_ISOLATED_TEST"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs a test marked ``isolated`` in a fresh interpreter of its own, so
    a fault that escapes (a crash, a stuck thread, a leaked child) fails that
    test alone. The child gets a timeout a little under the test's own."""
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(_ISOLATED_CHILD):
        return None
    marker = pyfuncitem.get_closest_marker("timeout")
    limit = (marker.args[0] if marker else 120) - 5
    env = dict(os.environ, **{_ISOLATED_CHILD: "1"})
    command = [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            command,
            cwd=pyfuncitem.config.rootpath,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"isolated test still running after {limit} s (a hang):\n{exc.stdout}")
    if done.returncode != 0:
        pytest.fail(f"isolated test failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return True


@pytest.fixture
def make_pool():
    """Factory for fresh pools; every pool is terminated at teardown."""
    import shoal

    pools = []

    def factory(*args, **kwargs):
        p = shoal.Pool(*args, **kwargs)
        pools.append(p)
        return p

    yield factory
    for p in pools:
        with contextlib.suppress(ValueError, OSError, shoal.ShoalError):
            p.terminate()
            p.join()


# ------------------------------------------------- the workshops' datasets, small
@pytest.fixture(scope="session")
def zarr_dataset(tmp_path_factory):
    """The workshop's compressed zarr array, made small: 4 MiB of float32
    in 16 chunks (bands of 16 rows x 4096), written by
    ``shoal.io.write_zarr_dataset``."""
    pytest.importorskip("zarr", reason="the zarr tests need zarr (the data extra)")
    import shoal.io

    path = tmp_path_factory.mktemp("data") / "field.zarr"
    return shoal.io.write_zarr_dataset(path, nbytes=4 << 20, chunks=16, workers=2)


@pytest.fixture(scope="session")
def parquet_dataset(tmp_path_factory):
    """The workshop's 16-file parquet dataset, made small: 16 files of 3,000
    rows in row groups of 1,000, written by ``shoal.io.write_parquet_dataset``."""
    pytest.importorskip("pyarrow", reason="the parquet tests need pyarrow (the data extra)")
    import shoal.io

    path = tmp_path_factory.mktemp("data") / "weather"
    return shoal.io.write_parquet_dataset(
        path, files=16, rows_per_file=3_000, row_group_size=1_000, workers=2
    )
