"""Threads or processes: ``backend=`` of ``shoal.map``, ``parallel_for``
and ``parallel_reduce``, and the measured choice behind ``backend="auto"``.

Threads win when the function waits (I/O, sleeps) or releases the GIL
(numpy, compiled kernels); processes win for pure-Python CPU work. ``auto``
runs the first items on threads -- each thread taking its own chunks,
growing until one runs about a millisecond, so nothing but the function
runs between them -- and measures, over 30 ms from when every thread has
run a chunk that long (or 2 ms after all started, if items take longer),
on how many cores the threads ran (their CPU time, summed), and on how many they
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


class _Probe:
    """Runs ``task(start, stop)`` over the first items on a ThreadPool's
    threads and measures them. Each thread runs one loop that takes the
    next chunk of items for itself, its chunks doubling until one runs
    :data:`PROBE_TASK_SECONDS`, so that nothing but the function and a lock
    stands between two chunks: no call goes through the engine while the
    probe measures. The measure runs for :data:`PROBE_SECONDS` from the
    moment every thread has run a chunk that long (while chunks are still
    tiny, the lock and the loop weigh in), or from two such lengths after
    every thread started (by then chunks have doubled up to that length,
    or an item takes longer than that). Whichever thread
    first sees that a moment has come marks it: a loop about to take its
    next chunk, or the caller (which a function holding the GIL may keep
    waiting). Then ``stop`` is the first item not taken, and ``used`` and
    ``wanted`` the cores the threads ran on, and ran or were ready to run
    on, in that time. The chunks still running finish on the threads;
    :meth:`finish` collects every chunk's ``(start, stop, value)``, in
    order."""

    def __init__(self, pool, threads: int, n: int, task: Callable[[int, int], object]) -> None:
        self._n, self._threads, self._task = n, threads, task
        self.stop = 0  # the next item to take; final once `_stopping` is set
        self._stopping = False
        self._changed = threading.Condition()
        self._started: dict[int, threading.Thread] = {}
        self._all_started = 0.0  # when the last thread started
        self._grown = 0  # threads that have run a chunk of full length
        self._window: list[tuple[float, dict]] = []  # (time, sample) at its start and end
        began = perf_counter()
        self._loops = [pool.apply_async(self._loop) for _ in range(threads)]
        with self._changed:
            while not (self._stopping or self.stop >= n or self._moment()):
                self._changed.wait(PROBE_TASK_SECONDS if self._all_started else None)
            self._stopping = True
            window = list(self._window)
        for loop in self._loops:  # the function raised: no point going on
            if loop.ready() and not loop.successful():
                loop.get()
        self.seconds = perf_counter() - began
        self.used = self.wanted = 0.0
        if len(window) == 2:
            (t0, sample0), (t1, sample1) = window
            ran = queued = 0.0
            for thread, (ran0, queued0) in sample0.items():
                ran1, queued1 = sample1.get(thread, (ran0, queued0))
                ran, queued = ran + ran1 - ran0, queued + queued1 - queued0
            self.used, self.wanted = ran / (t1 - t0), (ran + queued) / (t1 - t0)

    def _moment(self) -> bool:
        """Opens or closes the window if its moment has come (with
        ``_changed`` held); True once it is closed."""
        if not self._all_started:
            return False
        now = perf_counter()
        if not self._window:
            ramped = now - self._all_started >= 2 * PROBE_TASK_SECONDS
            if self._grown == self._threads or ramped:
                self._window.append((now, _sample(self._started)))
            return False
        if now - self._window[0][0] < PROBE_SECONDS:
            return False
        self._window.append((now, _sample(self._started)))
        self._stopping = True
        self._changed.notify_all()
        return True

    def _loop(self) -> list[tuple[int, int, object]]:
        """One thread's part: chunks of items taken in turn, until the items
        run out or the measure has ended."""
        chunks = []
        size, grown, took = 1, False, 0.0
        try:
            while True:
                with self._changed:
                    if not chunks:
                        self._started[len(self._started)] = threading.current_thread()
                        if len(self._started) == self._threads:
                            self._all_started = perf_counter()
                            self._changed.notify_all()
                    elif not grown and took >= PROBE_TASK_SECONDS:
                        grown = True
                        self._grown += 1
                    if self._stopping or self.stop >= self._n or self._moment():
                        return chunks
                    start = self.stop
                    self.stop = stop = min(start + size, self._n)
                began = perf_counter()
                chunks.append((start, stop, self._task(start, stop)))
                took = perf_counter() - began
                if took < PROBE_TASK_SECONDS and stop - start == size:
                    size *= 2
        finally:
            with self._changed:
                self._stopping = True  # items ran out, or one loop's error ends the probe
                self._changed.notify_all()

    def finish(self) -> list[tuple[int, int, object]]:
        """Every chunk's ``(start, stop, value)``, in order, once every
        loop has ended; raises what the function raised, if it did."""
        return sorted(
            (chunk for loop in self._loops for chunk in loop.get()), key=lambda chunk: chunk[0]
        )


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
