"""The ``mpi`` group of ``benches/compare.py``: shoal's message passing
(``shoal run``) side by side with mpi4py on PyPI's Open MPI (``mpiexec``),
the same program (``mpi_workloads.py``) on both, in one run.

Each measurement starts the program anew on each side, alternating shoal
and Open MPI round by round (the machine's speed drifts); the figure is
the median over rounds. Start-up is the wall time of launching 4 ranks of
an empty program, also alternated.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "mpi_workloads.py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
MB64 = 64e6

# (workload, ranks, what is reported, goal, how shoal must compare to Open MPI)
CASES = [
    ("pingpong-object", 2, "latency", "latency <= mpi4py's", 1.0),
    ("pingpong-buffer", 2, "latency", "latency <= 2x Open MPI's", 2.0),
    ("send-object", 2, "throughput", "throughput >= 2x mpi4py's", 0.5),
    ("send-buffer", 2, "throughput", "throughput >= Open MPI's / 1.5", 1.5),
    ("allreduce", 2, "time", "time <= 1.5x Open MPI's", 1.5),
    ("allreduce", 4, "time", "time <= 1.5x Open MPI's", 1.5),
    ("bcast-object", 4, "throughput", "throughput >= 2x mpi4py's", 0.5),
]

LABELS = {
    "pingpong-object": "ping-pong, small object (send/recv)",
    "pingpong-buffer": "ping-pong, 8-byte numpy Send/Recv",
    "send-object": "one 64 MB array, lower-case send",
    "send-buffer": "one 64 MB array, upper-case Send",
    "allreduce": "Allreduce of 8 MB",
    "bcast-object": "bcast of a 64 MB array",
    "startup": "start-up of 4 ranks, empty program",
}


def missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'shoal[mpi]')"
    if MPIEXEC is None:
        return "no mpiexec (pip install 'shoal[mpi]' brings Open MPI's)"
    return None


def _command(backend: str, n: int, program: str, *args: str) -> list[str]:
    if backend == "shoal":
        return [sys.executable, "-m", "shoal.cli", "run", "-n", str(n), program, *args]
    return [MPIEXEC, "--oversubscribe", "-n", str(n), sys.executable, program, *args]


def _env() -> dict:
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def _measure(backend: str, workload: str, n: int, scale: int, timeout: float) -> float:
    done = subprocess.run(
        _command(backend, n, PROGRAM, workload, "1", str(scale)),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    for line in done.stdout.splitlines():
        line = line.split("] ", 1)[-1]  # shoal run's [rank 0] tag
        if line.startswith("{"):
            return json.loads(line)["seconds"][0]
    raise RuntimeError(
        f"{backend} {workload} on {n} ranks: exit {done.returncode}\n{done.stderr[-2000:]}"
    )


def _startup(backend: str, empty: str, timeout: float) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        _command(backend, 4, empty), capture_output=True, timeout=timeout, env=_env()
    )
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{backend} start-up: exit {done.returncode}\n{done.stderr[-2000:]}")
    return took


def _figure(kind: str, seconds: float, scale: int) -> float:
    """What the table shows: µs, GB/s or ms."""
    if kind == "latency":
        return seconds * 1e6
    if kind == "throughput":
        return MB64 / scale / seconds / 1e9
    return seconds * 1e3


UNITS = {"latency": "µs", "throughput": "GB/s", "time": "ms"}


def run(rounds: int, quick: bool, timeout: float) -> list[dict]:
    """Measures every case; returns rows for the table (and JSON)."""
    why = missing()
    if why is not None:
        print(f"mpi: skipped: {why}")
        return []
    scale = 10 if quick else 1
    rows = []
    for workload, n, kind, goal, bound in CASES:
        times = {"shoal": [], "mpi": []}
        for _ in range(rounds):
            for backend in ("shoal", "mpi"):
                times[backend].append(_measure(backend, workload, n, scale, timeout))
        rows.append(_row(workload, n, kind, goal, bound, times, scale))
        print(_line(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty.py")
        with open(empty, "w") as f:
            f.write("from shoal import MPI\nMPI.COMM_WORLD.Barrier()\n")
        times = {"shoal": [], "mpi": []}
        for _ in range(max(rounds, 5)):
            for backend in ("shoal", "mpi"):
                times[backend].append(_startup(backend, empty, timeout))
    rows.append(_row("startup", 4, "time", "start-up <= mpiexec's", 1.0, times, 1))
    print(_line(rows[-1]), flush=True)
    return rows


def _row(workload, n, kind, goal, bound, times, scale) -> dict:
    ours = statistics.median(times["shoal"])
    theirs = statistics.median(times["mpi"])
    # time ratio: shoal's time over Open MPI's (lower is better for shoal)
    ratio = ours / theirs
    return {
        "workload": workload,
        "ranks": n,
        "label": LABELS[workload],
        "kind": kind,
        "shoal": _figure(kind, ours, scale),
        "openmpi": _figure(kind, theirs, scale),
        "unit": UNITS[kind],
        "time_ratio": ratio,
        "goal": goal,
        "goal_met": ratio <= bound,
        "seconds": times,
    }


def _line(row: dict) -> str:
    return (
        f"{row['label']}, {row['ranks']} ranks: shoal {row['shoal']:.3g} {row['unit']}, "
        f"Open MPI {row['openmpi']:.3g} {row['unit']}"
    )


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    print("\nmessage passing: shoal run against mpi4py on Open MPI (mpiexec), same program\n")
    headers = ["workload", "ranks", "shoal", "mpi4py + Open MPI", "shoal's time", "goal met?"]
    table = [
        [
            r["label"],
            str(r["ranks"]),
            f"{r['shoal']:.3g} {r['unit']}",
            f"{r['openmpi']:.3g} {r['unit']}",
            f"{r['time_ratio']:.2f}x theirs",
            ("yes" if r["goal_met"] else "NO") + f" ({r['goal']})",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for t in table:
        print(" | ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    print(
        "\nmedians over rounds, shoal and Open MPI alternating; latency = half a round "
        "trip; throughput = 64 MB / time until every receiver has it"
    )
