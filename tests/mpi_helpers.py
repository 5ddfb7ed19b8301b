"""Running message-passing programs in the tests: under ``shoal run`` and
under real MPI (``mpiexec`` from the ``mpi`` extra), with timeouts.

Test programs print lines that start with their rank (``"0: ..."``), so
the two backends' outputs compare once ``shoal run``'s ``[rank R]`` tags
are stripped and the lines sorted (ranks print in any order)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

BIN = os.path.dirname(sys.executable)
MPIEXEC = shutil.which("mpiexec", path=BIN) or shutil.which("mpiexec")
TAG = re.compile(r"^\[rank (\d+)\] ")

#: The program header every test program starts with: `out(...)` prints
#: a line starting with this rank's number.
PRELUDE = """\
import sys
from shoal import MPI
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

def out(*args):
    print(f"{rank}:", *args, flush=True)

"""


def real_mpi_missing() -> str | None:
    """Why real MPI cannot be used here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'shoal[mpi]')"
    if MPIEXEC is None:
        return "no mpiexec (pip install 'shoal[mpi]' brings Open MPI's)"
    return None


def require_real_mpi() -> None:
    """Skips the test when real MPI is missing, or fails it if
    ``SHOAL_REQUIRE_CLUSTER=1`` (CI, where it must be there)."""
    why = real_mpi_missing()
    if why is None:
        return
    if os.environ.get("SHOAL_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"SHOAL_REQUIRE_CLUSTER=1, but {why}")
    pytest.skip(why)


BACKENDS = [pytest.param("shoal", id="shoal"), pytest.param("mpi", id="mpi", marks=pytest.mark.mpi)]


def program(directory, source: str, name: str = "prog.py", prelude: bool = True) -> str:
    """Writes a program (after the prelude) to `directory`; its path."""
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write((PRELUDE if prelude else "") + textwrap.dedent(source))
    return path


def mpi_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra or {})
    return env


def run(
    backend: str, path: str, n: int, *args: str, timeout: float = 90, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs `path` on `n` ranks of `backend` ("shoal" or "mpi")."""
    if backend == "shoal":
        command = [sys.executable, "-m", "shoal.cli", "run", "-n", str(n), path, *args]
        environ = dict(os.environ, **(env or {}))
    else:
        command = [MPIEXEC, "--oversubscribe", "-n", str(n), sys.executable, path, *args]
        environ = mpi_env(env)
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        cwd=os.path.dirname(path),
    )


def untagged(text: str) -> list[str]:
    """Lines without shoal run's ``[rank R]`` tags."""
    return [TAG.sub("", line) for line in text.splitlines()]


def lines(done: subprocess.CompletedProcess) -> list[str]:
    """The program's `out(...)` lines ("R: ..."), each rank's in the order
    it printed them (compare two runs' with ``sorted``)."""
    return [line for line in untagged(done.stdout) if re.match(r"^\d+: ", line)]


def ok(done: subprocess.CompletedProcess) -> list[str]:
    """Asserts the run succeeded; its lines."""
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return lines(done)


def rank_lines(found: list[str], rank: int) -> list[str]:
    """One rank's lines, without the rank prefix, in the order printed."""
    prefix = f"{rank}: "
    return [line[len(prefix) :] for line in found if line.startswith(prefix)]
