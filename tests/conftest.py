"""Shared pytest configuration for the shoal test suite.

Every test module also sets ``pytestmark = pytest.mark.timeout(60)`` so that a
hang in the engine turns into a test failure instead of a stuck CI job.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
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


# ------------------------------------------------------------------ cluster
# Tests marked `slurm` need the one-node cluster of tests/cluster/ (or any
# SLURM with a node up); tests marked `mpi` need shoal[mpi]. Where that is
# missing they skip, saying why, except under SHOAL_REQUIRE_CLUSTER=1 (set
# by .ci/run), where they fail: CI must not pass by skipping them.

SLURM_COMMANDS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")


@functools.cache
def slurm_missing() -> str | None:
    """Why SLURM cannot run tests here, or None."""
    for command in SLURM_COMMANDS:
        if shutil.which(command) is None:
            return f"{command} not found (tests/cluster/install.sh and start.sh set SLURM up)"
    try:
        done = subprocess.run(
            ["sinfo", "--noheader", "--format", "%T"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s: is slurmctld running? (tests/cluster/start.sh)"
    if done.returncode != 0:
        return f"SLURM does not answer ({done.stderr.strip()}); tests/cluster/start.sh starts it"
    states = done.stdout.split()
    if not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no SLURM node is up (sinfo says: {' '.join(states) or 'no nodes'})"
    return None


@functools.cache
def mpi_missing() -> str | None:
    """Why MPI programs cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'shoal[mpi]')"
    if shutil.which("mpiexec", path=_bin_path()) is None:
        return "mpiexec not found (pip install 'shoal[mpi]' brings Open MPI)"
    return None


def _bin_path() -> str:
    """PATH with this interpreter's scripts first (mpiexec, jupyter, shoal)."""
    return os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def _need(what: str) -> None:
    why = {"slurm": slurm_missing, "mpi": mpi_missing}[what]()
    if why is None:
        return
    if os.environ.get("SHOAL_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"{why} (SHOAL_REQUIRE_CLUSTER=1: this test must run)", pytrace=False)
    pytest.skip(why)


def pytest_runtest_setup(item):
    for what in ("slurm", "mpi"):
        if item.get_closest_marker(what) is not None:
            _need(what)


@pytest.fixture
def slurm_jobs():
    """A list to put the ids of the jobs a test submits in: any still queued
    or running at teardown is cancelled."""
    _need("slurm")
    ids: list[int] = []
    yield ids
    for job in ids:
        subprocess.run(["scancel", str(job)], capture_output=True, timeout=30)


@pytest.fixture
def mpi_env() -> dict[str, str]:
    """An environment to start MPI programs in: mpiexec on PATH, Open MPI
    allowed to run as root (CI runs as root), and shoal's launch settings."""
    _need("mpi")
    from shoal.slurm.batch import LAUNCH_ENV

    env = dict(os.environ, PATH=_bin_path(), **LAUNCH_ENV)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


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
