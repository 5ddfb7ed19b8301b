"""The message-passing examples in examples/mpi/ run at small sizes under
``shoal run`` and under real MPI (``mpiexec``), and print the same."""

from __future__ import annotations

import os
import re

import pytest
from mpi_helpers import require_real_mpi, run, untagged

pytestmark = pytest.mark.timeout(180)

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mpi"
)

# (program, ranks, arguments, a line it must print)
CASES = [
    ("hello.py", 3, [], "All 3 ranks said hello"),
    ("pi.py", 4, ["--steps", "200000"], "pi is about 3.141592653592 (error 2.1e-12)"),
    ("ring.py", 4, ["--laps", "5"], "every rank added its number 5 times: 30 == 30: True"),
    ("scatter_gather.py", 4, ["--per-rank", "5000"], "same as on one rank: True"),
    ("mean_variance.py", 4, ["--size", "400000"], "numpy agrees: True"),
    ("heat.py", 4, ["--points", "200", "--steps", "400"], "same as on one rank: True"),
]

#: Lines that hold a time, which differs from run to run.
TIMED = re.compile(r"\d \s*s$")


def output(backend: str, name: str, n: int, args: list[str]) -> list[str]:
    done = run(backend, os.path.join(EXAMPLES, name), n, *args, timeout=150)
    assert done.returncode == 0, f"{backend}: {done.stdout}\n{done.stderr}"
    return sorted(line for line in untagged(done.stdout) if line and not TIMED.search(line))


@pytest.mark.parametrize(("name", "n", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_example_on_shoal(name, n, args, expected):
    assert expected in output("shoal", name, n, args)


def test_every_example_is_tested():
    names = {c[0] for c in CASES}
    assert names == {f for f in os.listdir(EXAMPLES) if f.endswith(".py")}


@pytest.mark.mpi
@pytest.mark.parametrize(("name", "n", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_example_prints_the_same_on_mpi(name, n, args, expected):
    require_real_mpi()
    ours, theirs = output("shoal", name, n, args), output("mpi", name, n, args)
    assert ours == theirs
    assert expected in theirs
