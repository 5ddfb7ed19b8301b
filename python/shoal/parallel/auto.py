"""Threads or processes: ``backend=`` of ``shoal.map``, ``parallel_for``
and ``parallel_reduce``, and the measured choice behind ``backend="auto"``.

Threads win when the function waits (I/O, sleeps) or releases the GIL
(numpy, compiled kernels); processes win for pure-Python CPU work. ``auto``
runs the first items on threads -- every thread kept busy, chunks growing
until each runs about a millisecond -- and measures, over 30 ms, on how
many cores the threads ran (their CPU time, summed), and on how many they
ran or were ready to run (adding the time they waited for a core that
other programs held; a thread waiting for the GIL or for I/O is not ready
to run). Ready on far below one core, the function mostly waits, and
threads overlap the waits; running on about as many cores as there are
threads (up to the cores there are), it runs in parallel on threads; else
the GIL serialises it, and the rest of the items go to processes. The
probe's items are real work: their results are kept, and nothing runs
twice. What is measured is what the machine gives now: while other
programs keep its cores busy, threads that release the GIL get less than
a core each, and auto picks processes (which get no more).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter

from ..cpus import cpu_count
from ..pool.pool import Pool
from ..pool.threadpool import ThreadPool

BACKENDS = ("auto", "processes", "threads")

#: How long auto measures, at least (it also waits for a first result).
PROBE_SECONDS = 0.03
#: Probe chunks grow until each runs this long, so that the engine's own
#: per-task work does not blur the measure.
PROBE_TASK_SECONDS = 0.001
#: Threads ready to run on fewer cores than this mostly wait (the GIL
#: keeps one of them running, so it never looks like waiting).
WAITING_BELOW = 0.5
#: Threads that keep this share of the cores they could use run in parallel.
PARALLEL_SHARE = 0.75


@dataclass(frozen=True)
class BackendChoice:
    """Which backend a call ran on, and why (see :func:`shoal.last_choice`)."""

    backend: str  # "threads" or "processes"
    reason: str
    #: Cores the probe's threads ran on between them (auto only).
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
    if isinstance(backend, Pool):
        backend._running()
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


def decide(used: float, wanted: float, threads: int, cores: int) -> tuple[str, str]:
    """``(backend, reason)`` from the probe's measures: its ``threads``
    threads ran on ``used`` cores between them, and ran or were ready to run
    on ``wanted`` (ready: waiting for a core that other programs held, not
    for the GIL or for I/O); this process may use ``cores``."""
    could = min(threads, cores)
    measured = f"on {threads} thread{'s' * (threads > 1)} it used {used:.2f} cores"
    if cores < 2:
        return "threads", f"one core: processes cannot run Python in parallel ({measured})"
    if wanted < WAITING_BELOW:
        return "threads", f"{measured}: it mostly waits, and threads overlap the waits"
    if used >= PARALLEL_SHARE * could:
        return "threads", f"{measured} of {could}: it runs in parallel on threads"
    return "processes", f"{measured} of {could}: the GIL serialises it"


def _ran_and_queued(thread: threading.Thread) -> tuple[float, float] | None:
    """Seconds ``thread`` has run, and has waited ready to run while other
    programs held the cores (Linux's scheduler statistics; 0 where they are
    missing). A thread waiting for the GIL or for I/O is not ready to run.
    None once the thread has ended: its clock is gone with it."""
    if not thread.is_alive():  # its id may already name another thread
        return None
    try:
        ran = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # it ended just now
        return None
    try:
        fd = os.open(f"/proc/self/task/{thread.native_id}/schedstat", os.O_RDONLY)
    except OSError:
        return ran, 0.0
    try:
        queued = int(os.read(fd, 128).split()[1]) / 1e9
    finally:
        os.close(fd)
    return ran, queued


def _sample(workers: dict) -> dict:
    samples = {t: _ran_and_queued(t) for t in list(workers.values())}
    return {t: s for t, s in samples.items() if s is not None}


def _timed(task: Callable, start: int, stop: int):
    began = perf_counter()
    return task(start, stop), perf_counter() - began


class _Probe:
    """Runs ``task(start, stop)`` over the first items on a ThreadPool's
    threads and measures them. Two calls per thread are kept sent (so that
    a thread never waits for its next one), with chunks doubling until each
    runs :data:`PROBE_TASK_SECONDS`, for :data:`PROBE_SECONDS` from the
    moment every thread has started. Then ``stop`` is the first item not
    sent, and ``used`` and ``wanted`` the cores the threads ran on, and ran
    or were ready to run on, in that time. The calls still running finish
    on the threads; :meth:`finish` collects every call's ``(start, stop,
    value)``, in order."""

    def __init__(self, pool, threads: int, n: int, task: Callable[[int, int], object]) -> None:
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._head: list[tuple[int, int, object]] = []
        self._in_flight = 0
        self.stop = 0
        workers = pool.worker_threads()
        size = 1
        began = perf_counter()
        t0, sample0 = began, {}
        while self._in_flight or self.stop < n:
            while self._in_flight < 2 * threads and self.stop < n:
                self._send(pool, task, size, n)
            if not sample0 and len(workers) == threads:
                t0, sample0 = perf_counter(), _sample(workers)
            if sample0 and perf_counter() - t0 >= PROBE_SECONDS:
                break
            try:
                items, wall = self._take(timeout=PROBE_SECONDS / 10)
            except queue.Empty:
                continue
            if items == size and wall < PROBE_TASK_SECONDS:
                size *= 2
        self.seconds = perf_counter() - began
        spanned = perf_counter() - t0
        sample1 = _sample(workers)
        ran = queued = 0.0
        for thread, (ran0, queued0) in sample0.items():
            ran1, queued1 = sample1.get(thread, (ran0, queued0))
            ran, queued = ran + ran1 - ran0, queued + queued1 - queued0
        self.used = ran / spanned if sample0 else 0.0
        self.wanted = (ran + queued) / spanned if sample0 else 0.0

    def _send(self, pool, task: Callable, size: int, n: int) -> None:
        start, self.stop = self.stop, min(self.stop + size, n)
        put, stop = self._answers.put, self.stop
        pool.apply_async(
            _timed,
            (task, start, stop),
            callback=lambda value: put((start, stop, True, value)),
            error_callback=lambda exc: put((start, stop, False, exc)),
        )
        self._in_flight += 1

    def _take(self, timeout: float | None = None) -> tuple[int, float]:
        """Takes one answer; returns how many items the call ran, and for
        how long."""
        start, stop, ok, value = self._answers.get(timeout=timeout)
        self._in_flight -= 1
        if not ok:
            raise value
        value, wall = value
        self._head.append((start, stop, value))
        return stop - start, wall

    def finish(self) -> list[tuple[int, int, object]]:
        """Every probe call's ``(start, stop, value)``, in order, once all
        have answered."""
        while self._in_flight:
            self._take()
        return sorted(self._head, key=lambda chunk: chunk[0])


@contextlib.contextmanager
def _pool(backend: str, workers: int | None):
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
            kind, reason = "threads", f"all {n} items were sent while measuring"
        else:
            kind, reason = decide(probe.used, probe.wanted, min(threads, n), cpu_count())
        choice = _record(BackendChoice(kind, reason, probe.used, probe.stop, probe.seconds))
        if kind == "threads":
            rest = run_rest(pool, probe.stop)
        else:
            # The probe's last calls finish on the threads meanwhile.
            with _pool("processes", workers) as processes:
                rest = run_rest(processes, probe.stop)
        return choice, probe.finish(), rest


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
