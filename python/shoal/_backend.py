"""Threads or processes: ``backend=`` of ``shoal.map``, ``parallel_for``
and ``parallel_reduce``, and the measured choice behind ``backend="auto"``.

Threads win when the function waits (I/O, sleeps) or releases the GIL
(numpy, compiled kernels); processes win for pure-Python CPU work. ``auto``
runs the first items on threads -- every thread busy, chunks growing until
each runs about a millisecond, for about 30 ms -- and measures how many
cores the threads kept busy: the CPU time of each call's own thread,
summed, over the time the probe's calls spanned. Far below one core, the
function mostly waits, and threads overlap the waits; about as many cores
as threads (up to the cores there are), it runs in parallel on threads;
about one core, the GIL serialises it, and the rest of the items go to
processes. The probe's items are real work: their results are kept, and
nothing runs twice.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter, thread_time

from ._cpus import cpu_count

BACKENDS = ("auto", "processes", "threads")

#: How long auto measures, at least (it also waits for a first result).
PROBE_SECONDS = 0.03
#: Probe chunks grow until each runs this long, so that the engine's own
#: per-task work does not blur the measure.
PROBE_TASK_SECONDS = 0.001
#: Below this many cores busy on threads, the function mostly waits.
WAITING_BELOW = 0.5
#: Threads that keep this share of the cores they could use run in parallel.
PARALLEL_SHARE = 0.75


@dataclass(frozen=True)
class BackendChoice:
    """Which backend a call ran on, and why (see :func:`shoal.last_choice`)."""

    backend: str  # "threads" or "processes"
    reason: str
    #: Cores the probe's threads kept busy between them (auto only).
    cores_used: float | None = None
    #: Items run during the measurement, and how long it took (auto only).
    probe_items: int = 0
    probe_seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.backend}: {self.reason}"


_last = threading.local()


def last_choice() -> BackendChoice | None:
    """The backend the calling thread's latest ``shoal.map``,
    ``parallel_for`` or ``parallel_reduce`` ran on, and why; None before
    the first."""
    return getattr(_last, "choice", None)


def _record(choice: BackendChoice) -> BackendChoice:
    _last.choice = choice
    return choice


def check_backend(backend) -> None:
    from ._pool import Pool

    if isinstance(backend, Pool):
        backend._check_running()
    elif backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(repr(b) for b in BACKENDS)} or a shoal.Pool / "
            f"shoal.ThreadPool to run on, got {backend!r}"
        )


def check_workers(workers) -> None:
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")


def decide(cpu: float, elapsed: float, threads: int, cores: int) -> tuple[str, str, float]:
    """``(backend, reason, cores_used)`` from the probe's measures: its
    calls used ``cpu`` seconds of their threads' CPU within ``elapsed``
    seconds, while ``threads`` threads had calls to run, on a machine where
    this process may use ``cores``."""
    used = cpu / elapsed if elapsed > 0 else 0.0
    could = min(threads, cores)
    measured = f"{threads} thread{'s' * (threads > 1)} kept {used:.2f} cores busy"
    if cores < 2:
        return "threads", f"one core: processes cannot run Python in parallel ({measured})", used
    if used < WAITING_BELOW:
        return "threads", f"{measured}: it mostly waits, and threads overlap the waits", used
    if used >= PARALLEL_SHARE * could:
        return "threads", f"{measured} of {could}: it runs in parallel on threads", used
    return "processes", f"{measured} of {could}: the GIL serialises it", used


def _timed(task: Callable, start: int, stop: int):
    began, cpu = perf_counter(), thread_time()
    value = task(start, stop)
    return value, thread_time() - cpu, began, perf_counter()


class _Probe:
    """Runs ``task(start, stop)`` over the first items on a ThreadPool's
    threads, keeping every thread busy, with chunks doubling until each
    runs :data:`PROBE_TASK_SECONDS`; after :data:`PROBE_SECONDS` it lets
    the chunks sent finish. Then ``head`` holds each chunk's ``(start,
    stop, value)`` in order, ``stop`` is the first item not run, and
    ``cpu``, ``busy`` and ``elapsed`` are the measures :func:`decide` takes."""

    def __init__(self, pool, threads: int, n: int, task: Callable[[int, int], object]) -> None:
        answers: queue.SimpleQueue = queue.SimpleQueue()
        put = answers.put
        self.head: list[tuple[int, int, object]] = []
        self.stop, self.cpu = 0, 0.0
        first = last = None
        in_flight, size = 0, 1
        began = perf_counter()
        while True:
            measuring = perf_counter() - began < PROBE_SECONDS or not self.head
            while measuring and in_flight < threads and self.stop < n:
                start, self.stop = self.stop, min(self.stop + size, n)
                pool.apply_async(
                    _timed,
                    (task, start, self.stop),
                    callback=lambda value, s=start, e=self.stop: put((s, e, True, value)),
                    error_callback=lambda exc, s=start, e=self.stop: put((s, e, False, exc)),
                )
                in_flight += 1
            if in_flight == 0:
                break
            start, stop, ok, value = answers.get()
            in_flight -= 1
            if not ok:
                raise value
            value, cpu, task_began, task_ended = value
            self.head.append((start, stop, value))
            self.cpu += cpu
            first = task_began if first is None else min(first, task_began)
            last = task_ended if last is None else max(last, task_ended)
            if task_ended - task_began < PROBE_TASK_SECONDS:
                size *= 2
        self.head.sort(key=lambda chunk: chunk[0])
        self.elapsed = (last - first) if self.head else 0.0
        self.seconds = perf_counter() - began


@contextlib.contextmanager
def _pool(backend: str, workers: int | None):
    from ._pool import Pool
    from ._threadpool import ThreadPool

    with (ThreadPool if backend == "threads" else Pool)(workers) as pool:
        yield pool


def run(
    n: int,
    backend,
    workers: int | None,
    probe_task: Callable[[int, int], object],
    run_rest: Callable[[object, int], object],
):
    """Runs ``n`` items on the backend asked for: ``run_rest(pool, start)``
    runs items ``start..n`` on a pool. With ``"auto"``, ``probe_task(start,
    stop)`` first runs a few items on threads (see the module's doc).
    Returns ``(choice, head, rest)``: ``head`` the probe's ``(start, stop,
    value)`` chunks (empty unless auto), ``rest`` what ``run_rest``
    returned."""
    from ._pool import Pool
    from ._threadpool import ThreadPool

    if isinstance(backend, Pool):
        kind = "threads" if isinstance(backend, ThreadPool) else "processes"
        choice = _record(BackendChoice(kind, f"ran on the pool passed as backend, {backend!r}"))
        return choice, [], run_rest(backend, 0)
    if n == 0:  # no pool started for nothing
        kind = "threads" if backend == "auto" else backend
        return _record(BackendChoice(kind, "there was nothing to run")), [], []
    if backend != "auto":
        choice = _record(BackendChoice(backend, f"backend={backend!r} was asked for"))
        with _pool(backend, workers) as pool:
            return choice, [], run_rest(pool, 0)
    threads = workers or cpu_count()
    with ThreadPool(threads) as pool:
        probe = _Probe(pool, threads, n, probe_task)
        if probe.stop >= n:
            kind, reason, used = "threads", f"all {n} items ran while measuring", None
        else:
            busy = min(threads, n)
            kind, reason, used = decide(probe.cpu, probe.elapsed, busy, cpu_count())
        choice = _record(BackendChoice(kind, reason, used, probe.stop, probe.seconds))
        if kind == "threads":
            return choice, probe.head, run_rest(pool, probe.stop)
    with _pool("processes", workers) as processes:
        return choice, probe.head, run_rest(processes, probe.stop)


# In this module `map` names this function: the builtin is not used here.
def map(  # noqa: A001 - shoal.map, as the builtin, on a pool
    func: Callable, iterable: Iterable, *, backend="auto", workers: int | None = None
) -> list:
    """``[func(x) for x in iterable]`` in parallel, in order, on threads or
    processes: ``backend`` is ``"auto"`` (measure, then choose; see
    :func:`shoal.last_choice`), ``"threads"``, ``"processes"``, or a
    ``shoal.Pool``/``shoal.ThreadPool`` to run on. ``workers`` defaults to
    :func:`shoal.cpu_count`. A pool is started for the call and stopped
    after it (pass a pool to reuse one)."""
    if not callable(func):
        raise TypeError(f"{func!r} is not callable; pass a function")
    check_backend(backend)
    check_workers(workers)
    items = list(iterable)

    def rest(pool, start: int) -> list:
        return pool.map(func, items[start:]) if start < len(items) else []

    def probe(start: int, stop: int) -> list:
        return [func(x) for x in items[start:stop]]

    _, head, tail = run(len(items), backend, workers, probe, rest)
    return [x for _, _, values in head for x in values] + tail
