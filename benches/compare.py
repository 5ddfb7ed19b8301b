"""Side-by-side benchmark of shoal against other Python process and thread pools.

Compares ``shoal.Pool`` with ``multiprocessing.Pool``,
``concurrent.futures.ProcessPoolExecutor``, joblib (loky backend) and mpire,
all with 2 worker processes, and ``shoal.ThreadPool`` with
``concurrent.futures.ThreadPoolExecutor`` and ``multiprocessing.pool.ThreadPool``,
in one run, and prints a table of per-call times, per-task costs and ratios
(peer time / shoal time).

Usage::

    python benches/compare.py [--quick] [--only NAME,...] [--rounds N] [--json out.json]

``--only`` takes workload names (trivial-map, chunksize-1, submit, pi,
ms-tasks, startup, replace, sleep, numpy, mandelbrot, auto, checkpoint, primitives, array-same,
array-trip, big-args,
array-memory, zarr-stats, parquet-groupby, numba-mandelbrot, mpi, executor, joblib-array,
joblib-tiny, sklearn, dask-array) and/or library names (shoal, mp, ppe, joblib, mpire, tpe,
mp-threads, dask); shoal is always
run because every ratio is relative to it. ``--quick`` divides the sizes by 10
(CI smoke test, well under a minute).

Workloads (task functions live in ``benches/workloads.py`` so every library can
pickle them by reference):

1. trivial-map  100,000 x inc(x) through ``map`` with each library's default
                chunking (ProcessPoolExecutor: chunksize=1000, because its
                default of 1 is a per-task round trip), plus a serial loop.
2. chunksize-1  the same 100,000 tasks with chunksize=1: map and
                imap_unordered (multiprocessing, shoal), mpire map(chunk_size=1).
3. submit       100,000 submit() calls gathered with as_completed (shoal,
                ProcessPoolExecutor).
4. pi           midpoint-rule pi, 20,000,000 steps in 64 chunks; speed-up over
                the same chunks run serially. Rounds are interleaved
                (serial, shoal, mp, ..., serial, shoal, mp, ...) because CPU
                speed drifts; medians are reported.
   ms-tasks     the same pi as 200 tasks of about 4 ms each, one per call
                (chunksize=1; 60 with --quick): the engine's dispatch while
                every core is busy.
5. startup      Pool construction to the first result of apply(inc, (1,)).
   replace      worker replacement: 20 tasks, chunksize=1, on a warm pool
                with maxtasksperchild=1, so each task runs in a new worker
                (shoal; multiprocessing with fork and with spawn); per task.
6. sleep        8 tasks that each time.sleep(0.5) on 8 threads: shoal.ThreadPool,
                ThreadPoolExecutor, multiprocessing's ThreadPool, serial.
7. numpy        16 x np.sort of 2 million floats (releases the GIL) on 2
                threads, the same libraries; speed-up over serial.
8. mandelbrot   the workshops' 500 x 400 Mandelbrot, at most 1,000 iterations,
                with parallel_for over rows on 2 processes: dynamic (goal) and
                static (contiguous blocks: the imbalance is the lesson), and
                multiprocessing's map(chunksize=1); speed-up over serial.
9. auto         shoal.map with backend "threads", "processes" and "auto" on
                sleeps (8 workers), the numpy sorts and pure-Python pi chunks
                (2 workers); each call starts its own pool. auto must pick
                the right backend and be within 10% of the faster one (a
                wrong pick, on a machine too busy to give threads the cores
                auto measures, is a missed goal, not an error).
10. checkpoint  shoal only: the 100,000-task map of 1 and 2 with
                ``checkpoint=`` (a fresh store each round: every result
                computed and stored), and re-run against a full store; the
                ratio is to the same map without a checkpoint.
11. array-same  16 tasks, each given the same 64 MB float64 array, each
                returning its sum (chunksize 1; joblib memmaps it).
12. array-trip  8 tasks, each receiving a distinct 64 MB array and returning
                a new one (a * 2).
    big-args    one apply() given one large argument, on a fresh warm pool
                (shoal, multiprocessing): a 64 MB array (its sum; against
                a.copy() in this process, one memcpy), a list of 1,100,000
                ints and a dict of 1,000,000 (their len).
14. executor     shoal.ProcessPoolExecutor against concurrent.futures'
                ProcessPoolExecutor: 100,000 submit() calls gathered with
                as_completed, and Executor.map of 100,000 items with
                chunksize=1000 (goal: at least 5x faster per task).
15. joblib-array joblib.Parallel of 16 tasks given the same 64 MB array,
                three calls in a row: backend "shoal" against loky
                (goal: at least 2x faster).
16. joblib-tiny  Parallel of 10,000 tiny calls: "shoal" against loky (goal:
                at least 2x faster).
17. sklearn      scikit-learn GridSearchCV of a small random forest on
                load_digits, n_jobs=2: "shoal" against loky (goal: no slower).
18. dask-array   the mean of a 400 MB dask.array in 64 chunks (from a numpy
                array): scheduler=shoal.ProcessPoolExecutor against dask's
                threaded scheduler and its processes scheduler on a warm
                pool (goal: at least as fast as the processes scheduler).
13. array-memory peak memory, summed over the parent and its workers, while 2
                workers each read one 512 MB array (shoal: a shared array;
                the others: passed as an argument). Reported as the sum of
                memory with every page counted once, and as the plain sum of
                RSS (a shared page counted in every process that maps it), in
                MB and as a multiple of 512 MB. Each library is measured in a
                fresh interpreter of its own.
14. primitives  multiprocessing's primitives, shoal's and multiprocessing's side
                by side: Lock acquire+release, Value ``+= 1`` without and
                with ``get_lock()``, Queue put+get in one process, Pipe
                round trips to a child process (a small object; a 64 MB
                array), and a Manager dict's ``d[k] = v``; per operation.

14. zarr-stats, parquet-groupby, numba-mandelbrot: data bigger than memory
                and compiled kernels, against serial code, dask and numba's
                prange; each run in a fresh interpreter (see
                ``benches/data_bench.py``), with its peak memory. The datasets
                (a 2 GiB zarr array, a 16-file parquet dataset; 1/16 of that
                with --quick) are written to --data-dir (default: a temporary
                directory) after checking the free space, and deleted at the
                end unless --keep-data.

15. mpi         message passing: ``shoal run`` against mpi4py on PyPI's Open
                MPI (``mpiexec``), the same program (benches/mpi_workloads.py)
                on both: ping-pong latency of a small object and of an 8-byte
                buffer, a 64 MB array by send and by Send, Allreduce of 8 MB
                on 2 and 4 ranks, bcast of a 64 MB array to 4 ranks, start-up
                of 4 ranks (see benches/mpi_group.py). Needs the mpi extra.

16. mpi-pool    one Pool across an MPI launch: the Pool served by ``srun -n 3``
                (rank 0 runs the program, two serving ranks with one worker
                each), the local ``shoal.Pool(2)``, and ``python -m
                mpi4py.futures`` under the same srun (2 workers), on
                100,000 trivial tasks (map, default chunks; mpi4py also with
                shoal's chunk size), pi in 64 chunks (64 tasks; speed-up
                over serial)
                and 16 tasks on one 64 MB array. Each is measured inside its
                own launch by ``benches/mpi_probe.py``, launches alternating
                round by round. Skipped, saying why, without SLURM (a node
                up: ``tests/cluster/start.sh``) or mpi4py.

For workloads 1-4, 6-8 and 11-12 every pool is created and warmed with a tiny map before the
clock starts, so start-up cost is excluded; each (library, variant) gets a
fresh pool per round and all workloads interleave their rounds.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import multiprocessing.pool
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

try:
    import shoal
except ImportError as exc:  # pragma: no cover - reported to the user
    sys.exit(
        f"compare.py: cannot import shoal ({exc}).\n"
        "Build and install it first: cd /work/main && pip install -e ."
    )

try:
    import joblib
    from joblib import Parallel, delayed
except ImportError as exc:
    joblib = None
    JOBLIB_MISSING = str(exc)

try:
    import mpire
    from mpire import WorkerPool
except ImportError as exc:
    mpire = None
    MPIRE_MISSING = str(exc)

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
# Workers started as fresh interpreters (rather than forked) must be able to
# import ``workloads`` too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
# Imported as the top-level module ``workloads`` (not ``__main__``) so that its
# functions pickle by reference in every library.
workloads = importlib.import_module("workloads")
data_bench = importlib.import_module("data_bench")
mpi_group = importlib.import_module("mpi_group")
inc = workloads.inc
pi_chunk = workloads.pi_chunk
pi_chunks = workloads.pi_chunks
array_sum = workloads.array_sum
array_scale = workloads.array_scale

# Errors a library may raise during a measurement; recorded, not fatal.
RUN_ERRORS = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,
    OSError,
    RuntimeError,
    TypeError,
    ValueError,
    pickle.PicklingError,
    multiprocessing.ProcessError,
    shoal.ShoalError if hasattr(shoal, "ShoalError") else RuntimeError,
)

WORKERS = 2
DATA_WORKLOADS = tuple(data_bench.WORKLOADS)  # zarr-stats, parquet-groupby, numba-mandelbrot
WORKLOADS = (
    "trivial-map",
    "chunksize-1",
    "submit",
    "pi",
    "ms-tasks",
    "startup",
    "replace",
    "sleep",
    "numpy",
    "mandelbrot",
    "auto",
    "checkpoint",
    "array-same",
    "array-trip",
    "big-args",
    "array-memory",
    *DATA_WORKLOADS,
    "primitives",
    "mpi",
    "executor",
    "joblib-array",
    "joblib-tiny",
    "sklearn",
    "dask-array",
    "mpi-pool",
)
LIB_ALIASES = {
    "shoal": "shoal",
    "serial": "serial",
    "mp": "mp",
    "multiprocessing": "mp",
    "ppe": "ppe",
    "processpoolexecutor": "ppe",
    "concurrent.futures": "ppe",
    "joblib": "joblib",
    "loky": "joblib",
    "mpire": "mpire",
    "tpe": "tpe",
    "threadpoolexecutor": "tpe",
    "mp-threads": "mp-threads",
    "dask": "dask-threads",
    "dask-threads": "dask-threads",
    "dask-processes": "dask-processes",
}
LIB_LABELS = {
    "serial": "serial",
    "shoal": "shoal",
    "mp": "multiprocessing",
    "ppe": "ProcessPoolExecutor",
    "joblib": "joblib(loky)",
    "mpire": "mpire",
    "tpe": "ThreadPoolExecutor",
    "mp-threads": "multiprocessing ThreadPool",
    "dask-threads": "dask threads",
    "dask-processes": "dask processes",
}
LIB_ORDER = (
    "serial",
    "shoal",
    "mp",
    "ppe",
    "joblib",
    "mpire",
    "tpe",
    "mp-threads",
    "dask-threads",
    "dask-processes",
)


# --------------------------------------------------------------------------
# Library adapters: create + warm (untimed), and tear down (untimed).
# --------------------------------------------------------------------------


class Serial:
    key = "serial"

    def start(self, workers=WORKERS):
        return None

    def stop(self, pool):
        pass


class ShoalLib:
    key = "shoal"

    def create(self, workers=WORKERS):
        return shoal.Pool(workers)

    def start(self, workers=WORKERS):
        pool = self.create(workers)
        pool.map(inc, range(4 * workers))
        return pool

    def stop(self, pool):
        pool.terminate()
        pool.join()


class MpLib:
    key = "mp"

    def create(self, workers=WORKERS):
        return multiprocessing.Pool(workers)

    def start(self, workers=WORKERS):
        pool = self.create(workers)
        pool.map(inc, range(4 * workers))
        return pool

    def stop(self, pool):
        pool.terminate()
        pool.join()


class PpeLib:
    key = "ppe"

    def create(self, workers=WORKERS):
        return ProcessPoolExecutor(workers)

    def start(self, workers=WORKERS):
        ex = self.create(workers)
        list(ex.map(inc, range(4 * workers)))
        return ex

    def stop(self, ex):
        ex.shutdown(wait=True)


class JoblibLib:
    """joblib keeps one reusable loky executor per process; reuse it."""

    key = "joblib"

    def create(self, workers=WORKERS):
        return Parallel(n_jobs=workers, backend="loky")

    def start(self, workers=WORKERS):
        par = self.create(workers)
        par(delayed(inc)(i) for i in range(4 * workers))
        return par

    def stop(self, par):
        pass  # the loky executor is shared and reused across Parallel calls

    @staticmethod
    def kill_executor():
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor(max_workers=WORKERS).shutdown(wait=True)


class MpireLib:
    key = "mpire"

    def create(self, keep_alive=True, workers=WORKERS):
        return WorkerPool(n_jobs=workers, keep_alive=keep_alive)

    def start(self, workers=WORKERS):
        pool = self.create(workers=workers)
        pool.map(inc, range(4 * workers))
        return pool

    def stop(self, pool):
        pool.terminate()


class ShoalThreadLib(ShoalLib):
    key = "shoal-threads"

    def create(self, workers=WORKERS):
        return shoal.ThreadPool(workers)


class TpeLib(PpeLib):
    key = "tpe"

    def create(self, workers=WORKERS):
        return ThreadPoolExecutor(workers)


class MpThreadLib(MpLib):
    key = "mp-threads"

    def create(self, workers=WORKERS):
        return multiprocessing.pool.ThreadPool(workers)


class ShoalExecutorLib:
    """shoal.ProcessPoolExecutor (the front end for concurrent.futures code,
    joblib and dask)."""

    key = "shoal-executor"

    def start(self, workers=WORKERS):
        ex = shoal.ProcessPoolExecutor(workers)
        list(ex.map(inc, range(4 * workers)))
        return ex

    def stop(self, ex):
        ex.shutdown(wait=True)


class JoblibShoalLib:
    """joblib.Parallel(backend="shoal"): its executor is kept across calls,
    as loky's is."""

    key = "joblib-shoal"

    def start(self, workers=WORKERS):
        par = Parallel(n_jobs=workers, backend="shoal")
        par(delayed(inc)(i) for i in range(4 * workers))
        return par

    def stop(self, par):
        pass


class DaskThreadsLib(Serial):
    """dask's threaded scheduler: no pool to start."""

    key = "dask-threads"


class DaskProcessesLib:
    """dask's processes scheduler on a warm pool of its own kind (a spawn
    ProcessPoolExecutor, passed as dask's ``pool``), so that starting
    processes is not counted."""

    key = "dask-processes"

    def start(self, workers=WORKERS):
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        list(ex.map(inc, range(4 * workers)))
        return ex

    def stop(self, ex):
        ex.shutdown(wait=True)


def available_libs():
    libs = {
        "serial": Serial(),
        "shoal": ShoalLib(),
        "shoal-threads": ShoalThreadLib(),
        "mp": MpLib(),
        "mp-threads": MpThreadLib(),
        "ppe": PpeLib(),
        "tpe": TpeLib(),
    }
    libs["shoal-executor"] = ShoalExecutorLib()
    if joblib is not None:
        libs["joblib"] = JoblibLib()
        libs["joblib-shoal"] = JoblibShoalLib()
    else:
        print(f"note: joblib not importable ({JOBLIB_MISSING}); skipping it")
    if mpire is not None:
        libs["mpire"] = MpireLib()
    else:
        print(f"note: mpire not importable ({MPIRE_MISSING}); skipping it")
    if importlib.util.find_spec("dask") is not None:
        libs["dask-threads"] = DaskThreadsLib()
        libs["dask-processes"] = DaskProcessesLib()
    else:
        print("note: dask not importable; skipping it")
    return libs


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


@dataclass
class Case:
    workload: str
    lib: str
    variant: str  # what was run, shown next to the library name
    ntasks: int
    run: Callable[[Any], Any]
    check: Callable[[Any], None]
    ref: str | None = None  # variant of the shoal case this one is compared with
    goal: str | None = None  # only on shoal cases
    note: str = ""
    workers: int = WORKERS
    adapter: str | None = None  # the library adapter that starts its pool, if not `lib`
    limit: float | None = None  # seconds, for goals that are a time limit
    times: list[float] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)  # pi: per-round serial/lib
    error: str | None = None
    warm: Callable[[Any], Any] | None = None  # untimed, on the fresh pool
    #: auto: the backend its goal wants, and the one it picked in each round
    #: (a busy machine can make it pick otherwise: a missed goal, not an error).
    wanted: str | None = None
    picked: list[str] = field(default_factory=list)

    @property
    def label(self):
        return f"{LIB_LABELS[self.lib]} {self.variant}".strip()


def check_inc(n, ordered):
    expected = n * (n + 1) // 2

    def check(res):
        res = list(res)
        if len(res) != n or sum(res) != expected:
            raise AssertionError(f"wrong result: {len(res)} items, sum {sum(res)}")
        if ordered and (res[0] != 1 or res[-1] != n):
            raise AssertionError("results out of order")

    return check


def check_pi(res):
    value = sum(res)
    if abs(value - math.pi) > 1e-6:
        raise AssertionError(f"pi came out as {value!r}")


def trivial_map_cases(n):
    rng = range(n)
    ordered = check_inc(n, True)
    w = "trivial-map"
    return [
        Case(w, "serial", "loop", n, lambda _: [inc(x) for x in rng], ordered),
        Case(
            w,
            "shoal",
            "map",
            n,
            lambda p: p.map(inc, rng),
            ordered,
            ref="map",
            goal="trivial-map",
        ),
        Case(w, "mp", "map", n, lambda p: p.map(inc, rng), ordered, ref="map"),
        Case(
            w,
            "ppe",
            "map(cs=1000)",
            n,
            lambda ex: list(ex.map(inc, rng, chunksize=1000)),
            ordered,
            ref="map",
            note="PPE map uses chunksize=1000 (its default 1 is ~100x slower)",
        ),
        Case(
            w,
            "joblib",
            "Parallel",
            n,
            lambda par: par(delayed(inc)(x) for x in rng),
            ordered,
            ref="map",
        ),
        Case(w, "mpire", "map", n, lambda p: p.map(inc, rng), ordered, ref="map"),
    ]


def chunksize1_cases(n):
    rng = range(n)
    ordered = check_inc(n, True)
    unordered = check_inc(n, False)
    w = "chunksize-1"
    return [
        Case(
            w,
            "shoal",
            "map(cs=1)",
            n,
            lambda p: p.map(inc, rng, chunksize=1),
            ordered,
            ref="map(cs=1)",
            goal="chunksize-1",
        ),
        Case(
            w,
            "shoal",
            "imap_unordered(cs=1)",
            n,
            lambda p: list(p.imap_unordered(inc, rng, chunksize=1)),
            unordered,
            ref="imap_unordered(cs=1)",
            goal="chunksize-1",
        ),
        Case(
            w,
            "mp",
            "map(cs=1)",
            n,
            lambda p: p.map(inc, rng, chunksize=1),
            ordered,
            ref="map(cs=1)",
        ),
        Case(
            w,
            "mp",
            "imap_unordered(cs=1)",
            n,
            lambda p: list(p.imap_unordered(inc, rng, chunksize=1)),
            unordered,
            ref="imap_unordered(cs=1)",
        ),
        Case(
            w,
            "mpire",
            "map(chunk_size=1)",
            n,
            lambda p: p.map(inc, rng, chunk_size=1),
            ordered,
            ref="map(cs=1)",
        ),
    ]


def submit_run(n):
    def run(pool):
        futures = [pool.submit(inc, i) for i in range(n)]
        return [f.result() for f in as_completed(futures)]

    return run


def submit_cases(n, n_ppe):
    w = "submit"
    return [
        Case(
            w,
            "shoal",
            "submit",
            n,
            submit_run(n),
            check_inc(n, False),
            ref="submit",
            goal="submit",
        ),
        Case(
            w,
            "ppe",
            "submit",
            n_ppe,
            submit_run(n_ppe),
            check_inc(n_ppe, False),
            ref="submit",
            note="" if n_ppe == n else f"PPE submit runs {n_ppe:,} tasks; per-task compared",
        ),
    ]


def pi_cases(steps, nchunks):
    chunks = pi_chunks(steps, nchunks)
    starts, stops, ns = (list(c) for c in zip(*chunks, strict=True))
    w = "pi"
    return [
        Case(
            w,
            "serial",
            "loop",
            nchunks,
            lambda _: [pi_chunk(*c) for c in chunks],
            check_pi,
        ),
        Case(
            w,
            "shoal",
            "starmap",
            nchunks,
            lambda p: p.starmap(pi_chunk, chunks),
            check_pi,
            ref="starmap",
            goal="pi",
        ),
        Case(
            w,
            "mp",
            "starmap",
            nchunks,
            lambda p: p.starmap(pi_chunk, chunks),
            check_pi,
            ref="starmap",
        ),
        Case(
            w,
            "ppe",
            "map",
            nchunks,
            lambda ex: list(ex.map(pi_chunk, starts, stops, ns)),
            check_pi,
            ref="starmap",
        ),
        Case(
            w,
            "joblib",
            "Parallel",
            nchunks,
            lambda par: par(delayed(pi_chunk)(*c) for c in chunks),
            check_pi,
            ref="starmap",
        ),
        Case(
            w,
            "mpire",
            "map",
            nchunks,
            lambda p: p.map(pi_chunk, chunks),
            check_pi,
            ref="starmap",
        ),
    ]


def ms_tasks_cases(ntasks, steps_per_task):
    """Tasks of a few milliseconds each, one per call (chunksize=1): what
    the engine's dispatch costs when every core is busy and each task's
    answer must reach the parent before the next task goes out."""
    chunks = pi_chunks(ntasks * steps_per_task, ntasks)
    starts, stops, ns = (list(c) for c in zip(*chunks, strict=True))
    w = "ms-tasks"

    def case(lib, variant, run, ref="starmap cs=1", goal=None):
        return Case(w, lib, variant, ntasks, run, check_pi, ref=ref, goal=goal)

    return [
        case("serial", "loop", lambda _: [pi_chunk(*c) for c in chunks], ref=None),
        case("shoal", "starmap cs=1", lambda p: p.starmap(pi_chunk, chunks, chunksize=1)),
        case("mp", "starmap cs=1", lambda p: p.starmap(pi_chunk, chunks, chunksize=1)),
        case("ppe", "map", lambda ex: list(ex.map(pi_chunk, starts, stops, ns))),
        case("joblib", "Parallel", lambda par: par(delayed(pi_chunk)(*c) for c in chunks)),
    ]


def checkpoint_cases(n, store_dir):
    """Plain map and map with ``checkpoint=`` (each round a new store), per
    chunking; and a re-run that finds every result stored."""
    rng = range(n)
    ordered = check_inc(n, True)
    fresh = (os.path.join(store_dir, f"run{i}.sqlite") for i in range(1_000_000))
    full = os.path.join(store_dir, "full.sqlite")
    with shoal.Pool(WORKERS) as pool:
        pool.map(inc, rng, checkpoint=full)
    w = "checkpoint"
    cases = []
    for variant, kwargs in (("map", {}), ("map(cs=1)", {"chunksize": 1})):
        cases += [
            Case(
                w,
                "shoal",
                variant,
                n,
                lambda p, kw=kwargs: p.map(inc, rng, **kw),
                ordered,
                ref=variant,
            ),
            Case(
                w,
                "shoal",
                f"{variant} checkpoint",
                n,
                lambda p, kw=kwargs: p.map(inc, rng, checkpoint=next(fresh), **kw),
                ordered,
                ref=variant,
                goal="checkpoint",
            ),
        ]
    cases.append(
        Case(
            w,
            "shoal",
            "map, all stored",
            n,
            lambda p: p.map(inc, rng, checkpoint=full),
            ordered,
            ref="map",
            note="checkpoint: ratio = time with checkpoint= / the same map without it",
        )
    )
    return cases


def primitives_cases(n, array_mb):
    """Each case runs ``n`` operations of one primitive in the parent (no
    pool: the adapter is "serial"); pipes talk to a child process started,
    untimed, in ``warm``."""
    import numpy as np

    w = "primitives"
    kinds = {"shoal": shoal, "mp": multiprocessing}
    cases = []

    def lock_run(mod):
        lock = mod.Lock()

        def run(_):
            for _ in range(n):
                lock.acquire()
                lock.release()
            return lock

        return run

    def value_run(mod, locked):
        def run(_):
            v = mod.Value("i", 0)
            if locked:
                for _ in range(n):
                    with v.get_lock():
                        v.value += 1
            else:
                for _ in range(n):
                    v.value += 1
            return v.value

        return run

    def queue_run(mod):
        q = mod.Queue()

        def run(_):
            for i in range(n):
                q.put(i)
                q.get()
            return q

        return run

    def pipe_case(mod, payload, count):
        state = {}

        def warm(_):
            old = state.get("process")
            if old is not None:
                old.join(30)
            here, there = mod.Pipe()
            target = workloads.sum_back if payload is not None else workloads.echo
            p = mod.Process(target=target, args=(there,), daemon=True)
            p.start()
            there.close()  # the child has it: its exit is then EOF here
            state.update(conn=here, process=p)

        def run(_):
            conn = state["conn"]
            out = None
            for i in range(count):
                conn.send(i if payload is None else payload)
                out = conn.recv()
            conn.send(None)  # the child ends; joined before the next round
            return out

        return warm, run

    def manager_case(mod):
        state = {}

        def warm(_):
            old = state.get("manager")
            if old is not None:
                old.shutdown()
            state["manager"] = mod.Manager()
            state["dict"] = state["manager"].dict()

        def run(_):
            d = state["dict"]
            for i in range(n // 10):
                d[i] = i
            return len(d)

        return warm, run

    def ok(_):
        return None

    def counted(expected):
        def check(res):
            if res != expected:
                raise AssertionError(f"expected {expected}, got {res!r}")

        return check

    big = np.ones(array_mb * (1 << 20) // 8)
    for lib, mod in kinds.items():
        cases += [
            Case(w, lib, "Lock acquire+release", n, lock_run(mod), ok, ref="Lock acquire+release",
                 adapter="serial"),
            Case(w, lib, "Value += 1", n, value_run(mod, False), counted(n), ref="Value += 1",
                 adapter="serial"),
            Case(w, lib, "Value += 1 with get_lock()", n, value_run(mod, True), counted(n),
                 ref="Value += 1 with get_lock()", adapter="serial"),
            Case(w, lib, "Queue put+get", n, queue_run(mod), ok, ref="Queue put+get",
                 adapter="serial"),
        ]  # fmt: skip
        warm, run = pipe_case(mod, None, n // 10)
        cases.append(
            Case(w, lib, "Pipe round trip", n // 10, run, counted(n // 10 - 1),
                 ref="Pipe round trip", adapter="serial", warm=warm)
        )  # fmt: skip
        warm, run = pipe_case(mod, big, 8)
        cases.append(
            Case(w, lib, f"Pipe {array_mb} MB array round trip", 8, run, counted(float(big.size)),
                 ref=f"Pipe {array_mb} MB array round trip", adapter="serial", warm=warm)
        )  # fmt: skip
        warm, run = manager_case(mod)
        cases.append(
            Case(w, lib, "Manager dict d[k] = v", n // 10, run, counted(n // 10),
                 ref="Manager dict d[k] = v", adapter="serial", warm=warm)
        )  # fmt: skip
    cases.sort(key=lambda c: (c.ref, c.lib != "shoal"))
    return cases


def startup_cases():
    """Each run() builds a pool, gets apply(inc, (1,)) and returns (pool, value)."""

    def shoal_run(lib):
        pool = lib.create()
        return pool, pool.apply(inc, (1,))

    def mp_run(lib):
        pool = lib.create()
        return pool, pool.apply(inc, (1,))

    def mp_spawn_run(lib):
        pool = multiprocessing.get_context("spawn").Pool(WORKERS)
        return pool, pool.apply(inc, (1,))

    def shoal_lambda_run(lib):
        # A function of __main__ (or a lambda, or a notebook's): it travels by
        # value, and loading it makes each worker import cloudpickle.
        pool = lib.create()
        return pool, pool.apply(lambda x: x + 1, (1,))

    def ppe_run(lib):
        ex = lib.create()
        return ex, ex.submit(inc, 1).result()

    def joblib_run(lib):
        par = lib.create()
        return par, par([delayed(inc)(1)])[0]

    def mpire_run(lib):
        pool = lib.create(keep_alive=False)
        return pool, pool.apply(inc, (1,))

    def check(res):
        if res != 2:
            raise AssertionError(f"apply(inc, (1,)) returned {res!r}")

    w = "startup"
    return [
        Case(w, "shoal", "Pool()+apply", 1, shoal_run, check, ref="", goal="startup"),
        Case(
            w,
            "shoal",
            "Pool()+apply(lambda)",
            1,
            shoal_lambda_run,
            check,
            ref="lambda",
            goal="startup",
        ),  # fmt: skip
        Case(w, "mp", "Pool()+apply", 1, mp_run, check, ref=""),
        Case(w, "mp", "Pool(spawn)+apply", 1, mp_spawn_run, check, ref="spawn"),
        Case(w, "ppe", "PPE()+submit", 1, ppe_run, check, ref=""),
        Case(
            w,
            "joblib",
            "Parallel()",
            1,
            joblib_run,
            check,
            ref="",
            note="joblib: loky executor killed before each start-up sample",
        ),
        Case(w, "mpire", "WorkerPool()+apply", 1, mpire_run, check, ref=""),
    ]


def replace_cases(ntasks):
    """Worker replacement: every task of a maxtasksperchild=1 pool runs in a
    worker started for it. Each case's ``warm`` makes its own warm pool."""

    def pool_of(make):
        def warm(lib):
            pool = make()
            pool.map(inc, range(WORKERS), chunksize=1)  # the first workers served and replaced
            return pool

        return warm

    def run(pool):
        return pool.map(inc, range(ntasks), chunksize=1)

    w = "replace"
    cases = [
        ("shoal", "maxtasksperchild=1", lambda: shoal.Pool(WORKERS, maxtasksperchild=1), ""),
        ("mp", "maxtasksperchild=1", lambda: multiprocessing.Pool(WORKERS, maxtasksperchild=1), ""),
        (
            "mp",
            "maxtasksperchild=1 (spawn)",
            lambda: multiprocessing.get_context("spawn").Pool(WORKERS, maxtasksperchild=1),
            "spawn",
        ),
    ]
    return [
        Case(w, lib, variant, ntasks, run, check_inc(ntasks, True), ref=ref, warm=pool_of(make))
        for lib, variant, make, ref in cases
    ]


def thread_pool_cases(workload, func, items, workers, check, goal, note="", limit=None):
    """serial, then shoal.ThreadPool, ThreadPoolExecutor and multiprocessing's
    ThreadPool, each ``map(func, items)`` with ``workers`` threads."""
    n = len(items)
    variant = f"map, {workers} threads"
    return [
        Case(workload, "serial", "loop", n, lambda _: [func(x) for x in items], check),
        Case(
            workload,
            "shoal",
            f"ThreadPool {variant}",
            n,
            lambda p: p.map(func, items),
            check,
            ref="map",
            goal=goal,
            note=note,
            workers=workers,
            adapter="shoal-threads",
            limit=limit,
        ),
        Case(
            workload,
            "tpe",
            variant,
            n,
            lambda ex: list(ex.map(func, items)),
            check,
            ref="map",
            workers=workers,
        ),
        Case(
            workload,
            "mp-threads",
            variant,
            n,
            lambda p: p.map(func, items),
            check,
            ref="map",
            workers=workers,
        ),
    ]


def sleep_cases(seconds):
    items = [seconds] * 8

    def check(res):
        if list(res) != items:
            raise AssertionError(f"wrong result {res!r}")

    return thread_pool_cases(
        "sleep",
        workloads.sleep_for,
        items,
        8,
        check,
        "sleep",
        note=f"sleep: 8 tasks that each sleep {seconds} s",
        limit=1.2 * seconds,
    )


def numpy_cases(ntasks):
    items = list(range(ntasks))
    expected = None

    def check(res):
        nonlocal expected
        expected = expected or [workloads.sort_big(k) for k in items]
        if list(res) != expected:
            raise AssertionError("wrong sort results")

    return thread_pool_cases(
        "numpy",
        workloads.sort_big,
        items,
        2,
        check,
        "numpy",
        note=f"numpy: {ntasks} x np.sort of 2 million floats (releases the GIL)",
    )


def mandelbrot_cases(width, height, max_iter):
    row = functools.partial(workloads.mandelbrot_row, width=width, height=height, max_iter=max_iter)
    expected = None

    def check(res):
        nonlocal expected
        expected = expected or [row(x) for x in range(width)]
        if list(res) != expected:
            raise AssertionError("wrong Mandelbrot rows")

    def loop(schedule):
        return lambda p: shoal.parallel_for(width, row, schedule=schedule, backend=p).values

    w = "mandelbrot"
    note = (
        f"mandelbrot: {width} x {height} points, at most {max_iter} iterations, "
        "parallel_for over rows on 2 processes"
    )
    return [
        Case(w, "serial", "loop", width, lambda _: [row(x) for x in range(width)], check),
        Case(
            w,
            "shoal",
            "parallel_for dynamic",
            width,
            loop("dynamic"),
            check,
            ref="parallel_for dynamic",
            goal="mandelbrot",
            note=note,
        ),
        Case(
            w,
            "shoal",
            "parallel_for static",
            width,
            loop("static"),
            check,
            ref="parallel_for static",
        ),
        Case(
            w,
            "mp",
            "map(cs=1)",
            width,
            lambda p: p.map(row, range(width), chunksize=1),
            check,
            ref="parallel_for dynamic",
        ),
    ]


def auto_cases(sleep_seconds, sort_tasks, pi_steps):
    """shoal.map on each workload with backend threads, processes and auto;
    each call starts its own pool, so start-up is in all three."""
    workloads_ = [
        ("auto:sleep", workloads.sleep_for, [sleep_seconds] * 8, 8, "threads"),
        ("auto:numpy", workloads.sort_big, list(range(sort_tasks)), 2, "threads"),
        (
            "auto:python",
            workloads.pi_chunk_of,
            workloads.pi_chunks(pi_steps, 64),
            2,
            "processes",
        ),
    ]
    cases = []
    expected = {}  # workload -> the serial results, computed once
    for w, func, items, workers, expected_backend in workloads_:
        picked: list[str] = []

        def check(res, w=w, func=func, items=items, picked=picked):
            if w not in expected:
                expected[w] = [func(x) for x in items]
            values, choice = res
            if values != expected[w]:
                raise AssertionError("wrong results")
            if "asked for" not in choice.reason:
                picked.append(choice.backend)

        for backend in ("threads", "processes", "auto"):

            def run(_, func=func, items=items, backend=backend, workers=workers):
                values = shoal.map(func, items, backend=backend, workers=workers)
                return values, shoal.last_choice()

            cases.append(
                Case(
                    w,
                    "shoal",
                    f"map backend={backend!r}",
                    len(items),
                    run,
                    check,
                    ref=f"map backend={backend!r}",
                    goal="auto" if backend == "auto" else None,
                    note=(
                        f"{w}: shoal.map with {workers} workers; auto must pick "
                        f"{expected_backend} and be within 10% of the faster explicit backend"
                    ),
                    workers=workers,
                    adapter="serial",  # shoal.map starts its own pools
                    wanted=expected_backend if backend == "auto" else None,
                    picked=picked if backend == "auto" else [],
                )
            )
    return cases


def array_cases(mb):
    """array-same and array-trip: large arrays in and out of tasks."""
    import numpy as np

    n = mb * (1 << 20) // 8
    rng = np.random.default_rng(0)
    same = rng.standard_normal(n)
    distinct = [rng.standard_normal(n) for _ in range(8)]
    total = float(same.sum())

    def check_same(res):
        if len(res) != 16 or any(abs(r - total) > 1e-6 * abs(total) + 1e-6 for r in res):
            raise AssertionError("wrong sums")

    def check_trip(res):
        res = list(res)
        if len(res) != 8 or not all(
            np.array_equal(r, d * 2.0) for r, d in zip(res, distinct, strict=True)
        ):
            raise AssertionError("wrong arrays back")

    def pool_map(fn, items):
        return lambda p: p.map(fn, items, chunksize=1)

    def joblib_run(fn, items):
        return lambda par: par(delayed(fn)(x) for x in items)

    # Workers import numpy when they first unpickle an array: do that
    # before the clock starts (fork-based pools inherit it).
    tiny = [np.zeros(4)] * 4
    warm = {
        "shoal": pool_map(array_sum, tiny),
        "mp": pool_map(array_sum, tiny),
        "joblib": joblib_run(array_sum, tiny),
        "mpire": mpire_map(array_sum, tiny),
    }
    cases = []
    for w, fn, items, check, ntasks in (
        ("array-same", array_sum, [same] * 16, check_same, 16),
        ("array-trip", array_scale, distinct, check_trip, 8),
    ):
        cases += [
            Case(w, "shoal", "map(cs=1)", ntasks, pool_map(fn, items), check, ref="", goal=w),
            Case(w, "mp", "map(cs=1)", ntasks, pool_map(fn, items), check, ref=""),
            Case(
                w,
                "joblib",
                "Parallel",
                ntasks,
                joblib_run(fn, items),
                check,
                ref="",
                note="joblib memmaps arrays over 1 MB (its default max_nbytes)",
            ),
            Case(w, "mpire", "map(chunk_size=1)", ntasks, mpire_map(fn, items), check, ref=""),
        ]
    for c in cases:
        c.warm = warm[c.lib]
    return cases


def big_args_cases(mb):
    """big-args: one call given one large argument, on a fresh (warmed)
    pool: a 64 MB array (against copying it once in this process), a list
    of 1,100,000 ints and a dict of 1,000,000."""
    import numpy as np

    a = np.random.default_rng(1).standard_normal(mb * (1 << 20) // 8)
    total = float(a.sum())
    ints = list(range(1_100_000))
    table = {i: i for i in range(1_000_000)}
    w = "big-args"

    def apply(fn, arg):
        return lambda p: p.apply(fn, (arg,))

    def equal(want):
        def check(got):
            if got != want:
                raise AssertionError(f"got {got!r}, expected {want!r}")

        return check

    def check_sum(got):
        if abs(got - total) > 1e-6 * abs(total) + 1e-6:
            raise AssertionError("wrong sum")

    def check_copy(got):
        if got.shape != a.shape:
            raise AssertionError("wrong copy")

    array_ref = f"apply(sum, {mb} MB array)"
    cases = [Case(w, "serial", "a.copy() (memcpy)", 1, lambda _: a.copy(), check_copy,
                  ref=array_ref)]  # fmt: skip
    for variant, fn, arg, check in (
        (array_ref, array_sum, a, check_sum),
        ("apply(len, list of 1.1 M ints)", len, ints, equal(len(ints))),
        ("apply(len, dict of 1 M ints)", len, table, equal(len(table))),
    ):
        cases += [
            Case(w, lib, variant, 1, apply(fn, arg), check, ref=variant) for lib in ("shoal", "mp")
        ]
    tiny = np.zeros(4)
    for c in cases:
        if c.lib != "serial":
            c.warm = apply(array_sum, tiny)  # workers import numpy before the clock
    return cases


def executor_cases(n, n_ppe):
    """executor: shoal.ProcessPoolExecutor against the standard one."""
    w = "executor"
    rng = range(n)
    ordered = check_inc(n, True)
    return [
        Case(
            w,
            "shoal",
            "submit",
            n,
            submit_run(n),
            check_inc(n, False),
            ref="submit",
            goal="faster:ppe:5",
            adapter="shoal-executor",
        ),
        Case(
            w,
            "ppe",
            "submit",
            n_ppe,
            submit_run(n_ppe),
            check_inc(n_ppe, False),
            ref="submit",
            note="" if n_ppe == n else f"PPE submit runs {n_ppe:,} tasks; per-task compared",
        ),
        Case(
            w,
            "shoal",
            "map(cs=1000)",
            n,
            lambda ex: list(ex.map(inc, rng, chunksize=1000)),
            ordered,
            ref="map(cs=1000)",
            goal="faster:ppe:5",
            adapter="shoal-executor",
        ),
        Case(
            w,
            "ppe",
            "map(cs=1000)",
            n,
            lambda ex: list(ex.map(inc, rng, chunksize=1000)),
            ordered,
            ref="map(cs=1000)",
        ),
    ]


def joblib_cases(mb, n_tiny):
    """joblib-array and joblib-tiny: Parallel with backend "shoal" and loky."""
    import numpy as np

    same = np.random.default_rng(0).standard_normal(mb * (1 << 20) // 8)
    total = float(same.sum())
    calls = 3

    def run_array(par):
        return [par(delayed(array_sum)(same) for _ in range(16)) for _ in range(calls)]

    def check_array(res):
        sums = [x for call in res for x in call]
        if len(sums) != 16 * calls or any(abs(x - total) > 1e-6 * abs(total) for x in sums):
            raise AssertionError("wrong sums")

    def run_tiny(par):
        return par(delayed(inc)(i) for i in range(n_tiny))

    def warm(par):  # workers import numpy before the clock starts
        par(delayed(array_sum)(np.zeros(4)) for _ in range(4))

    cases = []
    for w, run, check, ntasks, factor in (
        ("joblib-array", run_array, check_array, 16 * calls, 2),
        ("joblib-tiny", run_tiny, check_inc(n_tiny, True), n_tiny, 2),
    ):
        cases += [
            Case(
                w,
                "shoal",
                'Parallel(backend="shoal")',
                ntasks,
                run,
                check,
                ref="",
                goal=f"faster:joblib:{factor}",
                adapter="joblib-shoal",
                warm=warm,
            ),
            Case(w, "joblib", "Parallel", ntasks, run, check, ref="", warm=warm),
        ]
    return cases


def sklearn_cases():
    """sklearn: GridSearchCV of a small forest on load_digits, 2 jobs."""
    from joblib import parallel_config
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV

    x, y = load_digits(return_X_y=True)
    grid = {"n_estimators": [10, 20], "max_depth": [6, 10, None]}
    folds = 3
    fits = folds * len(grid["n_estimators"]) * len(grid["max_depth"])

    def search(backend):
        def run(_):
            with parallel_config(backend=backend):
                forest = RandomForestClassifier(random_state=0)
                return GridSearchCV(forest, grid, cv=folds, n_jobs=WORKERS).fit(x, y)

        return run

    def check(res):
        if res.best_score_ < 0.85:
            raise AssertionError(f"a poor search: best score {res.best_score_:.3f}")

    def warm(backend):  # the workers import scikit-learn before the clock starts
        def run(_):
            with parallel_config(backend=backend):
                GridSearchCV(RandomForestClassifier(2), {"max_depth": [2, 3]}, cv=2, n_jobs=2).fit(
                    x[:100], y[:100]
                )

        return run

    return [
        Case(
            "sklearn",
            "shoal",
            'GridSearchCV (backend="shoal")',
            fits,
            search("shoal"),
            check,
            ref="",
            goal="faster:joblib:1",
            adapter="joblib-shoal",
            warm=warm("shoal"),
        ),
        Case(
            "sklearn",
            "joblib",
            "GridSearchCV",
            fits,
            search("loky"),
            check,
            ref="",
            warm=warm("loky"),
        ),
    ]


def dask_cases(mb, nchunks):
    """dask-array: a 400 MB array's mean, in 64 chunks."""
    import dask
    import dask.array as da
    import numpy as np

    x = np.random.default_rng(0).random(mb * (1 << 20) // 8)
    expected = float(x.mean())
    a = da.from_array(x, chunks=len(x) // nchunks)

    def check(res):
        if abs(res - expected) > 1e-9:
            raise AssertionError(f"wrong mean {res!r}")

    def on_pool(ex):
        with dask.config.set(pool=ex):
            return a.mean().compute(scheduler="processes", num_workers=WORKERS)

    small = da.from_array(x[:1000], chunks=100).mean()

    def warm_shoal(ex):  # the workers import numpy and dask before the clock starts
        small.compute(scheduler=ex)

    def warm_pool(ex):
        with dask.config.set(pool=ex):
            small.compute(scheduler="processes", num_workers=WORKERS)

    w = "dask-array"
    return [
        Case(
            w,
            "shoal",
            "compute(scheduler=executor)",
            nchunks,
            lambda ex: a.mean().compute(scheduler=ex),
            check,
            ref="",
            goal="faster:dask-processes:1",
            adapter="shoal-executor",
            warm=warm_shoal,
        ),
        Case(
            w,
            "dask-threads",
            'compute(scheduler="threads")',
            nchunks,
            lambda _: a.mean().compute(scheduler="threads", num_workers=WORKERS),
            check,
            ref="",
        ),
        Case(
            w,
            "dask-processes",
            'compute(scheduler="processes")',
            nchunks,
            on_pool,
            check,
            ref="",
            note="dask's processes scheduler runs on a warm spawn ProcessPoolExecutor (pool=)",
            warm=warm_pool,
        ),
    ]


def mpire_map(fn, items):
    # Each array wrapped in a tuple (mpire unpacks arguments), and results
    # kept as a list (mpire concatenates numpy results by default).
    args = [(x,) for x in items]
    return lambda p: p.map(fn, args, chunk_size=1, concatenate_numpy_output=False)


def array_memory(libs, mb, rounds, timeout):
    """array-memory: peak PSS/RSS while 2 workers each read one large
    array, each library measured in a fresh interpreter of its own (so
    nothing else this script holds is counted). Returns rows for the
    memory table."""
    import subprocess

    rows = []
    for key in ("shoal", "mp", "joblib", "mpire"):
        if key not in libs:
            continue
        peaks = []
        for r in range(rounds):
            cmd = [sys.executable, os.path.join(HERE, "memory_probe.py"), key, str(mb)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or None)
            if done.returncode != 0:
                print(f"  !! array-memory / {LIB_LABELS[key]}: {done.stderr.strip()[-500:]}")
                break
            unique, rss = json.loads(done.stdout.strip().splitlines()[-1])
            peaks.append((unique, rss))
            print(
                f"  round {r + 1}/{rounds}  array-memory {LIB_LABELS[key]:<22} "
                f"{unique / 2**20:.0f} MB (shared once), RSS sum {rss / 2**20:.0f} MB",
                flush=True,
            )
        if peaks:
            rows.append(
                (LIB_LABELS[key], median([p for p, _ in peaks]), median([r for _, r in peaks]))
            )
    return rows


def print_memory_table(rows, mb):
    size = mb * (1 << 20)
    print(f"\n== array-memory: peak over parent + workers while 2 workers read one {mb} MB array\n")
    x = "x array"
    print(f"{'library':<22} | {'memory':>10} | {x:>7} | {'sum of RSS':>10} | {x:>7}")
    print("-" * 70)
    for label, unique, rss in rows:
        goal = ""
        if label == "shoal" and mb >= 512:  # the goal is for the full size
            goal = "  goal <= 1.2x: " + ("yes" if unique <= 1.2 * size else "NO")
        print(
            f"{label:<22} | {unique / 2**20:>7.0f} MB | {unique / size:>6.2f}x | "
            f"{rss / 2**20:>7.0f} MB | {rss / size:>6.2f}x{goal}"
        )
    print("memory = every page counted once (shared memory by its largest RSS in any")
    print("process, the rest by PSS), summed over the parent and its workers, including")
    print("the interpreters themselves; sum of RSS counts a shared page in every process")
    print("that maps it.")


MPI_POOL_LABELS = {
    "shoal": "shoal, srun -n 3",
    "shoal-local": "shoal.Pool(2), local",
    "mpi4py": "mpi4py.futures, srun -n 3",
}


def mpi_pool_missing():
    """Why the mpi-pool workload cannot run here, or None."""
    import shutil
    import subprocess

    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'shoal[mpi]')"
    if shutil.which("srun") is None:
        return "srun not found (tests/cluster/install.sh and start.sh set SLURM up)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=15)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed ({exc})"
    if not any(s in ("idle", "mixed") for s in done.stdout.split()):
        return f"no SLURM node is free (sinfo: {done.stdout.split() or done.stderr.strip()})"
    return None


def mpi_pool(calls, pi_steps, array_mb, rounds, timeout):
    """mpi-pool: each library's medians over ``rounds`` launches of
    ``mpi_probe.py`` (one round each, alternating)."""
    import subprocess

    probe = os.path.join(HERE, "mpi_probe.py")
    srun = ["srun", "-n", "3", "-O", "-c", "1", "--time", "30:00"]
    commands = {
        "shoal": [*srun, sys.executable, "-m", "shoal.cluster", probe, "shoal"],
        "shoal-local": [sys.executable, probe, "shoal-local"],
        "mpi4py": [*srun, sys.executable, "-m", "mpi4py.futures", probe, "mpi4py"],
    }
    env = dict(os.environ, PMIX_MCA_psec=os.environ.get("PMIX_MCA_psec", "native"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    runs = {key: [] for key in commands}
    for r in range(rounds):
        for key, command in commands.items():
            args = [str(calls), str(pi_steps), str(array_mb), "1"]
            done = subprocess.run([*command, *args], capture_output=True, text=True, env=env,
                                  timeout=timeout or None)  # fmt: skip
            if done.returncode != 0:
                print(f"  !! mpi-pool / {MPI_POOL_LABELS[key]}: {done.stderr.strip()[-800:]}")
                continue
            got = json.loads(done.stdout.strip().splitlines()[-1])["median"]
            runs[key].append(got)
            shown = ", ".join(f"{k} {v:.3f} s" for k, v in got.items())
            print(f"  round {r + 1}/{rounds}  {MPI_POOL_LABELS[key]:<26} {shown}", flush=True)
    medians = {}
    for key, got in runs.items():
        if got:
            medians[key] = {name: median([g[name] for g in got]) for name in got[0]}
            # Speed-up per launch (its own serial run), then the median.
            medians[key]["speedup"] = median([g["serial_pi"] / g["pi"] for g in got])
    return medians


def print_mpi_pool_table(medians, calls, pi_steps, array_mb):
    keys = [k for k in ("shoal", "shoal-local", "mpi4py") if k in medians]
    print(
        "\n== mpi-pool: the Pool served by srun -n 3 (2 serving ranks, 1 worker each), the local "
        "shoal.Pool(2),\n   and mpi4py.futures under srun -n 3 (2 workers); medians\n"
    )
    width = 28
    print(f"{'workload':<44}" + "".join(f" | {MPI_POOL_LABELS[k]:>{width}}" for k in keys))
    print("-" * (44 + (width + 3) * len(keys)))

    def row(label, cells):
        print(f"{label:<44}" + "".join(f" | {c:>{width}}" for c in cells))

    per_task = {k: medians[k]["trivial"] / calls for k in keys}
    row(f"{calls:,} x inc, map: per task", [fmt_time(per_task[k]) for k in keys])
    if "mpi4py" in medians and "trivial_chunked" in medians["mpi4py"]:
        chunked = medians["mpi4py"]["trivial_chunked"] / calls
        row(f"  same, mpi4py chunksize {-(-calls // 8):,}",
            ["" for k in keys[:-1]] + [fmt_time(chunked)])  # fmt: skip
    row(f"pi, {pi_steps / 1e6:g} M steps in 64 chunks: speed-up",
        [f"{medians[k]['speedup']:.2f}x" for k in keys])  # fmt: skip
    row(f"16 tasks on one {array_mb} MB array", [fmt_time(medians[k]["array"]) for k in keys])
    if "shoal" not in medians:
        return
    shoal_ = medians["shoal"]
    print("\ngoals for the Pool served by srun -n 3:")
    if "mpi4py" in medians:
        ratio = per_task["mpi4py"] / per_task["shoal"]
        verdict = "yes" if ratio >= 5 else "NO"
        print(f"  per-task cost at most 1/5 of mpi4py.futures' (default chunks): "
              f"1/{ratio:,.0f}: {verdict}")  # fmt: skip
        if "trivial_chunked" in medians["mpi4py"]:
            ratio = medians["mpi4py"]["trivial_chunked"] / shoal_["trivial"]
            print(f"    (against mpi4py with shoal's chunk size: 1/{ratio:.1f})")
    verdict = "yes" if shoal_["speedup"] >= 1.85 else "NO"
    print(f"  pi speed-up over serial >= 1.85: {shoal_['speedup']:.2f}x: {verdict}")
    if "shoal-local" in medians:
        ratio = shoal_["array"] / medians["shoal-local"]["array"]
        verdict = "yes" if ratio <= 2 else "NO"
        print(f"  the {array_mb} MB array workload within 2x of the local Pool: {ratio:.2f}x: "
              f"{verdict}")  # fmt: skip


# --------------------------------------------------------------------------
# Data bigger than memory and compiled kernels (benches/data_bench.py)
# --------------------------------------------------------------------------

DATA_LABELS = {
    "serial": "serial",
    "serial-refs": "serial, shoal.io refs",
    "shoal": "shoal Pool",
    "shoal-threads": "shoal ThreadPool",
    "dask": "dask (threads)",
    "pyarrow-threads": "pyarrow, 2 threads",
    "numba-prange": "numba prange",
}


def data_dir_for(args, need: int):
    """A directory for the datasets with ``need`` bytes free, or None (and
    a note) when there is no room."""
    import shutil

    root = args.data_dir or tempfile.mkdtemp(prefix="shoal-data-")
    os.makedirs(root, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < need:
        print(
            f"  !! data workloads skipped: {root} has {free / 1e9:.1f} GB free, "
            f"they need {need / 1e9:.1f} GB"
        )
        return None
    return root


def data_workloads(names, args, quick: bool):
    """Runs the data workloads, each library in a fresh interpreter per
    round, rounds interleaved; returns rows for :func:`print_data_table`."""
    import shutil
    import subprocess

    size = data_bench.sizes(quick)
    need = int(1.5 * (size["zarr_bytes"] + 24 * data_bench.PARQUET_FILES * size["parquet_rows"]))
    if any(w != "numba-mandelbrot" for w in names):
        root = data_dir_for(args, need)
        if root is None:
            names = [w for w in names if w == "numba-mandelbrot"]
    else:
        root = tempfile.mkdtemp(prefix="shoal-data-")
    flag = ["--quick"] if quick else []
    script = os.path.join(HERE, "data_bench.py")
    runs = {}
    try:
        if any(w != "numba-mandelbrot" for w in names):
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, script, "prepare", root, *flag],
                capture_output=True,
                text=True,
                timeout=args.timeout or None,
            )
            if done.returncode != 0:
                print(f"  !! preparing the datasets failed: {done.stderr.strip()[-800:]}")
                return []
            info = json.loads(done.stdout)
            print(
                f"  datasets in {root}: {info['on_disk'] / 1e9:.2f} GB on disk, "
                f"ready in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
        for r in range(args.rounds):
            for w in names:
                for lib in data_bench.WORKLOADS[w]:
                    key = (w, lib)
                    if runs.get(key) == "error":
                        continue
                    done = subprocess.run(
                        [sys.executable, script, "run", w, lib, root, *flag],
                        capture_output=True,
                        text=True,
                        timeout=args.timeout or None,
                    )
                    if done.returncode != 0:
                        print(f"  !! {w} / {lib}: {done.stderr.strip()[-800:]}", flush=True)
                        runs[key] = "error"
                        continue
                    out = json.loads(done.stdout.strip().splitlines()[-1])
                    runs.setdefault(key, []).append(out)
                    grew = out["grew"] / 2**20
                    print(
                        f"  round {r + 1}/{args.rounds}  {w:<16} {DATA_LABELS[lib]:<20} "
                        f"{fmt_time(out['seconds']):>10}   peak +{grew:.0f} MB over base",
                        flush=True,
                    )
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    return data_rows(runs)


def same_result(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_result(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_result(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)
    return a == b


def data_rows(runs) -> list[dict]:
    rows = []
    for (w, lib), outs in runs.items():
        if outs == "error":
            rows.append({"workload": w, "lib": lib, "error": True})
            continue
        reference = runs.get((w, "serial"))
        wrong = isinstance(reference, list) and not same_result(
            outs[0]["result"], reference[0]["result"]
        )
        rows.append(
            {
                "workload": w,
                "lib": lib,
                "error": False,
                "wrong": wrong,
                "seconds": median([o["seconds"] for o in outs]),
                "times": [o["seconds"] for o in outs],
                "grew": median([o["grew"] for o in outs]),
                "base": median([o["base"] for o in outs]),
                "chunk_bytes": outs[0].get("chunk_bytes"),
                "array_bytes": outs[0].get("array_bytes"),
            }
        )
    return rows


def round_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of ``a[i] / b[i]``: the libraries of one round
    ran back to back, so a round's ratio sees the same machine."""
    return median([x / y for x, y in zip(a, b, strict=False)])


def shoal_best(rows, workload: str) -> list[float] | None:
    """Per round, the faster of shoal's backends."""
    times = [r["times"] for r in rows if r["workload"] == workload and r["lib"].startswith("shoal")]
    times = [t for t in times if t]
    return [min(ts) for ts in zip(*times, strict=False)] if times else None


def data_goal(row, by_key) -> str:
    w, lib = row["workload"], row["lib"]
    if not lib.startswith("shoal"):
        return ""
    if w == "numba-mandelbrot":
        ref = by_key.get((w, "numba-prange"))
        if not ref or ref["error"]:
            return "? (<= 1.2x prange)"
        ratio = round_ratio(row["times"], ref["times"])
        return ("yes" if ratio <= 1.2 else "NO") + f" ({ratio:.2f}x prange; goal <= 1.2x)"
    ref = by_key.get((w, "dask"))
    speed = "? (>= dask)"
    if ref and not ref["error"]:
        ratio = round_ratio(ref["times"], row["times"])
        speed = ("yes" if ratio >= 1.0 else "NO") + f" ({ratio:.2f}x dask's speed; goal >= 1)"
    if w == "zarr-stats" and row["chunk_bytes"]:
        bound = WORKERS * 2 * row["chunk_bytes"]
        memory = "yes" if row["grew"] <= bound else "NO"
        speed += f"; {memory} (peak <= base + 2 chunks/worker)"
    return speed


def print_data_table(rows) -> None:
    if not rows:
        return
    by_key = {(r["workload"], r["lib"]): r for r in rows}
    print("\n== data bigger than memory and compiled kernels (2 workers)\n")
    headers = ["workload", "library", "time", "vs serial", "vs shoal", "peak above base", "goal"]
    table = []
    for r in rows:
        label = DATA_LABELS[r["lib"]]
        if r["error"]:
            table.append([r["workload"], label, "ERROR", "-", "-", "-", ""])
            continue
        serial = by_key.get((r["workload"], "serial"))
        best = shoal_best([x for x in rows if not x["error"]], r["workload"])
        memory = f"{r['grew'] / 2**20:.0f} MB"
        if r["chunk_bytes"]:
            alone = r["lib"].startswith("serial")
            per = r["grew"] / r["chunk_bytes"] / (1 if alone else WORKERS)
            unit = "" if alone else "/worker"
            memory += f" = {per:.1f} chunks{unit}"
        table.append(
            [
                r["workload"],
                label + (" WRONG RESULT" if r["wrong"] else ""),
                fmt_time(r["seconds"]),
                f"{round_ratio(serial['times'], r['times']):.2f}x"
                if serial and not serial["error"]
                else "-",
                f"{round_ratio(r['times'], best):.2f}x" if best else "-",
                memory,
                data_goal(r, by_key),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    chunk = next((r["chunk_bytes"] for r in rows if r.get("chunk_bytes")), None)
    print(
        "\ntime = median over rounds; vs serial = serial time / library time, and vs shoal = "
        "library time / the faster shoal backend's time (>1: shoal faster), each the median "
        "of the rounds' ratios (a round runs every library back to back). "
        "peak above base = each process's peak RSS (VmHWM, kept by the kernel: no peak "
        "missed) above its RSS with the pool up and the libraries loaded, summed over "
        "the parent and its workers (an upper bound: they need not peak together)."
    )
    if chunk:
        print(f"zarr chunk: {chunk / 2**20:.0f} MiB uncompressed.")


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


def guard(timeout):
    """Dump tracebacks and exit if a single measurement hangs."""
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout, exit=True)


def time_case(case, lib, timeout):
    """One timed run of a workload case on a fresh, warmed pool."""
    guard(timeout)
    pool = lib.start(case.workers)
    try:
        if case.warm is not None:
            case.warm(pool)
        gc.collect()
        t0 = time.perf_counter()
        res = case.run(pool)
        elapsed = time.perf_counter() - t0
    finally:
        lib.stop(pool)
        faulthandler.cancel_dump_traceback_later()
    case.check(res)
    return elapsed


def time_startup(case, lib, timeout):
    guard(timeout)
    try:
        if case.lib == "joblib":
            lib.kill_executor()
        gc.collect()
        t0 = time.perf_counter()
        pool, value = case.run(lib)
        elapsed = time.perf_counter() - t0
        lib.stop(pool)
    finally:
        faulthandler.cancel_dump_traceback_later()
    case.check(value)
    return elapsed


def time_own_pool(case, lib, timeout):
    """One timed run on a pool the case makes and warms itself
    (``case.warm(lib)``, untimed)."""
    guard(timeout)
    pool = case.warm(lib)
    try:
        gc.collect()
        t0 = time.perf_counter()
        res = case.run(pool)
        elapsed = time.perf_counter() - t0
    finally:
        pool.terminate()
        pool.join()
        faulthandler.cancel_dump_traceback_later()
    case.check(res)
    return elapsed


def run_rounds(cases, libs, rounds, timeout, timer):
    """Interleave rounds: every case once per round, in a fixed order."""
    for r in range(rounds):
        serial_t = None
        for case in cases:
            if case.error is not None:
                continue
            try:
                t = timer(case, libs[case.adapter or case.lib], timeout)
            except RUN_ERRORS as exc:  # keep going; report at the end
                case.error = f"{type(exc).__name__}: {exc}"
                print(f"  !! {case.workload} / {case.label}: {case.error}", flush=True)
                continue
            case.times.append(t)
            if case.lib == "serial":
                serial_t = t
            elif serial_t is not None:
                case.speedups.append(serial_t / t)
            print(
                f"  round {r + 1}/{rounds}  {case.workload:<12} {case.label:<36} {fmt_time(t):>10}",
                flush=True,
            )


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def fmt_time(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.3f} s"


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(cases):
    """Compute medians, ratios and goals; returns one dict per case."""
    shoal_by_variant = {}
    for c in cases:
        if c.lib == "shoal" and c.times and c.ref in (c.variant, ""):
            shoal_by_variant[(c.workload, c.ref)] = median(c.times) / c.ntasks
    mp_map = {c.workload: median(c.times) for c in cases if c.lib == "mp" and c.times}
    explicit = {}  # auto workloads: the faster of the explicit backends
    for c in cases:
        if c.workload.startswith("auto:") and c.goal is None and c.times:
            t = median(c.times)
            explicit[c.workload] = min(t, explicit.get(c.workload, t))
    serial = {c.workload: median(c.times) for c in cases if c.lib == "serial" and c.times}
    peers = {(c.workload, c.lib, c.ref): median(c.times) / c.ntasks for c in cases if c.times}

    rows = []
    for c in cases:
        t = median(c.times)
        per_task = t / c.ntasks if t is not None else None
        shoal_per_task = shoal_by_variant.get((c.workload, c.ref))
        if shoal_per_task is None:
            shoal_per_task = next(
                (v for (w, _), v in shoal_by_variant.items() if w == c.workload), None
            )
        ratio = per_task / shoal_per_task if per_task and shoal_per_task else None
        vs_serial = None
        if c.lib != "serial" and t is not None and c.workload in serial:
            vs_serial = median(c.speedups) if c.speedups else serial[c.workload] / t
        goal_text, goal_met = goal_check(c, t, per_task, vs_serial, mp_map, explicit, ratio, peers)
        rows.append(
            {
                "workload": c.workload,
                "library": LIB_LABELS[c.lib],
                "lib": c.lib,
                "variant": c.variant,
                "ntasks": c.ntasks,
                "times_s": c.times,
                "median_s": t,
                "per_task_us": per_task * 1e6 if per_task is not None else None,
                "ratio_to_shoal": ratio,
                "is_ref": c.ref in (c.variant, ""),
                "vs_serial": vs_serial,
                "goal": goal_text,
                "goal_met": goal_met,
                "note": c.note,
                "error": c.error,
            }
        )
    return rows


def goal_check(c, t, per_task, vs_serial, mp_map, explicit, ratio, peers=None):
    if c.goal is None or t is None:
        return None, None
    if c.goal.startswith("faster:"):  # faster:<peer lib>:<factor>, per task
        _, peer, factor = c.goal.split(":")
        text = (
            f"<= {LIB_LABELS[peer]}'s time"
            if factor == "1"
            else f">= {factor}x faster than {LIB_LABELS[peer]}"
        )
        theirs = (peers or {}).get((c.workload, peer, c.ref))
        if theirs is None:
            return text, None
        return text, theirs / per_task >= float(factor)
    if c.goal == "trivial-map":
        ref = mp_map.get("trivial-map")
        if ref is None:
            return "<= multiprocessing map", None
        return "<= multiprocessing map", t <= ref
    if c.goal == "chunksize-1":
        return "<= 2 µs/task", per_task <= 2e-6
    if c.goal == "submit":
        return "<= 5 µs/task", per_task <= 5e-6
    if c.goal == "pi":
        return ">= 1.90x serial", vs_serial is not None and vs_serial >= 1.90
    if c.goal == "startup":
        spawn = (peers or {}).get(("startup", "mp", "spawn"))
        if spawn is None:
            return "<= 0.5x multiprocessing (spawn)", None
        return "<= 0.5x multiprocessing (spawn)", t <= 0.5 * spawn
    if c.goal == "sleep":
        return f"<= {c.limit:g} s", t <= c.limit
    if c.goal == "numpy":
        return ">= 1.80x serial", vs_serial is not None and vs_serial >= 1.80
    if c.goal == "mandelbrot":
        return ">= 1.90x serial", vs_serial is not None and vs_serial >= 1.90
    if c.goal == "auto":
        best = explicit.get(c.workload)
        others = sorted(set(c.picked) - {c.wanted})
        if others:  # the load it measured decided otherwise in some round
            return f"picks {c.wanted} (picked {', '.join(others)} in a round)", False
        if best is None:
            return "<= 1.10x best explicit", None
        return f"<= 1.10x best explicit ({fmt_time(best)})", t <= 1.10 * best
    if c.goal == "checkpoint":
        return "<= 1.5x without", ratio is not None and ratio <= 1.5
    if c.goal == "array-same":
        return "<= 0.09 s", t <= 0.09
    if c.goal == "array-trip":
        return "<= 0.28 s", t <= 0.28
    return None, None


def print_table(rows):
    headers = [
        "workload",
        "library",
        "time",
        "per-task",
        "ratio to shoal",
        "vs serial",
        "goal met?",
    ]
    table = []
    for r in rows:
        if r["error"]:
            goal = "NO (error)" if r["lib"] == "shoal" else ""
            table.append(
                [
                    r["workload"],
                    f"{r['library']} {r['variant']}",
                    "ERROR",
                    "-",
                    "-",
                    "-",
                    goal,
                ]
            )
            continue
        per_task = r["per_task_us"]
        if per_task is None or r["ntasks"] == 1:
            per_task_s = "-"
        elif per_task >= 1000:
            per_task_s = f"{per_task / 1000:.2f} ms"
        else:
            per_task_s = f"{per_task:.2f} µs"
        ratio = r["ratio_to_shoal"]
        if r["lib"] == "shoal" and r["is_ref"]:
            ratio_s = "1.00 (ref)"
        else:
            ratio_s = f"{ratio:.2f}x" if ratio is not None else "-"
        vs = r["vs_serial"]
        vs_s = f"{vs:.2f}x" if vs is not None else "-"
        if r["goal"] is None:
            goal = ""
        elif r["goal_met"] is None:
            goal = f"? ({r['goal']})"
        else:
            goal = ("yes" if r["goal_met"] else "NO") + f" ({r['goal']})"
        table.append(
            [
                r["workload"],
                f"{r['library']} {r['variant']}",
                fmt_time(r["median_s"]),
                per_task_s,
                ratio_s,
                vs_s,
                goal,
            ]
        )
    widths = [
        max(len(h), *(len(row[i]) for row in table)) if table else len(h)
        for i, h in enumerate(headers)
    ]

    def line(cells):
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    prev = None
    for row in table:
        if prev is not None and row[0] != prev:
            print("-+-".join("-" * w for w in widths))
        prev = row[0]
        print(line(row))
    notes = sorted({r["note"] for r in rows if r["note"]})
    print()
    print("time = median wall time of one whole call (workload), over all rounds;")
    print("ratio to shoal = peer per-task time / shoal per-task time (>1: shoal faster);")
    print("vs serial = serial time / library time (median of per-round ratios).")
    for n in notes:
        print(f"note: {n}")


def versions():
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "shoal": getattr(shoal, "__version__", "?"),
    }
    if joblib is not None:
        out["joblib"] = joblib.__version__
    if mpire is not None:
        out["mpire"] = importlib.metadata.version("mpire")
    return out


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes / 10, for a < 1 minute smoke test")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated workloads and/or libraries to run "
        f"(workloads: {', '.join(WORKLOADS)}; "
        "libraries: shoal, mp, ppe, joblib, mpire)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per workload (default 3)",
    )
    ap.add_argument("--json", metavar="OUT", help="also write results as JSON")
    ap.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="abort with tracebacks if one measurement takes longer "
        "(seconds, 0 = never; default 300)",
    )
    ap.add_argument(
        "--data-dir",
        help="where the data workloads write their datasets (default: a temporary directory)",
    )
    ap.add_argument(
        "--keep-data", action="store_true", help="keep the datasets (default: deleted at the end)"
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    workloads, lib_keys = [], []
    for name in filter(None, (s.strip().lower() for s in args.only.split(","))):
        if name in WORKLOADS:
            workloads.append(name)
        elif name in LIB_ALIASES:
            lib_keys.append(LIB_ALIASES[name])
        else:
            ap.error(f"--only: unknown name {name!r}")
    args.workloads = workloads or list(WORKLOADS)
    args.lib_keys = set(lib_keys or LIB_ORDER) | {
        "shoal",
        "shoal-threads",
        "shoal-executor",
        "joblib-shoal",
        "serial",
    }
    return args


def main(argv=None):
    args = parse_args(argv)
    scale = 10 if args.quick else 1
    n_calls = 100_000 // scale
    n_ppe_submit = 10_000 if args.quick else 100_000
    pi_steps = 20_000_000 // scale
    pi_nchunks = 64
    startup_repeats = 3 if args.quick else 7
    replace_tasks = 6 if args.quick else 20
    sleep_seconds = 0.05 if args.quick else 0.5
    sort_tasks = 4 if args.quick else 16
    mandelbrot_size = (100, 80, 200) if args.quick else (500, 400, 1000)
    array_mb = 64 // scale
    memory_mb = 512 // scale
    memory_rows = None
    mpi_rows = []
    mpi_pool_rows = None

    libs = {k: v for k, v in available_libs().items() if k in args.lib_keys}
    info = versions()
    print(
        f"shoal compare: {WORKERS} workers, "
        f"cpus: os={os.cpu_count()} affinity={len(os.sched_getaffinity(0))} "
        f"shoal={shoal.cpu_count()}; mp start method: "
        f"{multiprocessing.get_start_method()}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(
        f"mode: {'quick' if args.quick else 'full'}, rounds={args.rounds}, "
        f"calls={n_calls:,}, pi steps={pi_steps:,} in {pi_nchunks} chunks, "
        f"workloads: {', '.join(args.workloads)}",
        flush=True,
    )

    all_cases = []
    store_dir = tempfile.TemporaryDirectory(prefix="shoal-bench-")
    t_start = time.perf_counter()
    data_names = [w for w in args.workloads if w in DATA_WORKLOADS]
    data_table = []
    if data_names:
        print(f"\n== {', '.join(data_names)}", flush=True)
        data_table = data_workloads(data_names, args, args.quick)
    for w in args.workloads:
        if w in DATA_WORKLOADS:
            continue
        if w == "trivial-map":
            cases = trivial_map_cases(n_calls)
        elif w == "chunksize-1":
            cases = chunksize1_cases(n_calls)
        elif w == "submit":
            cases = submit_cases(n_calls, n_ppe_submit)
        elif w == "pi":
            cases = pi_cases(pi_steps, pi_nchunks)
        elif w == "ms-tasks":
            cases = ms_tasks_cases(60 if args.quick else 200, 40_000)
        elif w == "checkpoint":
            cases = checkpoint_cases(n_calls, store_dir.name)
        elif w in ("array-same", "array-trip"):
            cases = [c for c in array_cases(array_mb) if c.workload == w]
        elif w == "big-args":
            cases = big_args_cases(array_mb)
        elif w == "array-memory":
            print(f"\n== {w}", flush=True)
            memory_rows = array_memory(libs, memory_mb, args.rounds, args.timeout)
            continue
        elif w == "mpi":
            print(f"\n== {w}", flush=True)
            mpi_rows = mpi_group.run(args.rounds, args.quick, args.timeout)
        elif w == "mpi-pool":
            print(f"\n== {w}", flush=True)
            why = mpi_pool_missing()
            if why is not None:
                print(f"  skipped: {why}")
                continue
            mpi_pool_rows = mpi_pool(n_calls, pi_steps, array_mb, args.rounds, args.timeout)
            continue
        elif w == "startup":
            cases = startup_cases()
        elif w == "replace":
            cases = replace_cases(replace_tasks)
        elif w == "sleep":
            cases = sleep_cases(sleep_seconds)
        elif w == "numpy":
            cases = numpy_cases(sort_tasks)
        elif w == "mandelbrot":
            cases = mandelbrot_cases(*mandelbrot_size)
        elif w == "primitives":
            cases = primitives_cases(n_calls, array_mb)
        elif w == "executor":
            cases = executor_cases(n_calls, n_ppe_submit)
        elif w in ("joblib-array", "joblib-tiny"):
            if joblib is None:
                continue
            cases = [c for c in joblib_cases(array_mb, n_calls // 10) if c.workload == w]
        elif w == "sklearn":
            if importlib.util.find_spec("sklearn") is None:
                print("note: scikit-learn not importable; skipping sklearn")
                continue
            cases = sklearn_cases()
        elif w == "dask-array":
            if "dask-threads" not in libs:
                continue
            cases = dask_cases(400 // scale, 64)
        else:
            cases = auto_cases(sleep_seconds, sort_tasks, pi_steps)
        cases = [c for c in cases if c.lib in libs and (c.adapter or c.lib) in libs]
        print(f"\n== {w}", flush=True)
        if w == "startup":
            run_rounds(cases, libs, startup_repeats, args.timeout, time_startup)
        elif w == "replace":
            run_rounds(cases, libs, args.rounds, args.timeout, time_own_pool)
        else:
            run_rounds(cases, libs, args.rounds, args.timeout, time_case)
        all_cases.extend(cases)

    store_dir.cleanup()
    rows = summarize(all_cases)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== results ({time.perf_counter() - t_start:.1f} s total; load average {load})\n")
    if rows:
        print_table(rows)
    if memory_rows is not None:
        print_memory_table(memory_rows, memory_mb)
    print_data_table(data_table)
    mpi_group.print_table(mpi_rows)
    if mpi_pool_rows:
        print_mpi_pool_table(mpi_pool_rows, n_calls, pi_steps, array_mb)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "meta": {
                        "workers": WORKERS,
                        "quick": args.quick,
                        "rounds": args.rounds,
                        "calls": n_calls,
                        "ppe_submit_calls": n_ppe_submit,
                        "pi_steps": pi_steps,
                        "pi_chunks": pi_nchunks,
                        "startup_repeats": startup_repeats,
                        "cpu_count": os.cpu_count(),
                        "mp_start_method": multiprocessing.get_start_method(),
                        "versions": info,
                    },
                    "results": rows,
                    "data": data_table,
                    "mpi": mpi_rows,
                },
                f,
                indent=2,
            )
        print(f"\nwrote {args.json}")

    shoal_errors = [r for r in rows if r["lib"] == "shoal" and r["error"]] + [
        r for r in data_table if r["lib"].startswith("shoal") and (r["error"] or r["wrong"])
    ]
    return 1 if shoal_errors else 0


if __name__ == "__main__":
    sys.exit(main())
