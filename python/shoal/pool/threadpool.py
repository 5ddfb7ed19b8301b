"""``shoal.ThreadPool``: ``shoal.Pool``'s API on threads of this process,
driven by the same Rust scheduler and the same call pipeline."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable

from .. import _shoal
from .._shoal import Completion, Outcome
from ..cpus import cpu_count
from ..trace.recorder import TraceRecorder
from ..worker import thread
from .options import CallOptions, check_callable, check_options, check_progress, check_workers
from .pipeline import Pipeline
from .pool import Pool
from .workers import EngineWorkers

_MISSING = object()


class Handoff:
    """What a ThreadPool and its worker threads pass each other, by id:
    functions and arguments go in when a task is sent, results and
    exceptions come back, and each task's entries are dropped when its
    completion reaches the result thread. Nothing is pickled, so workers
    see the caller's objects themselves (shared state, locks, open files)."""

    def __init__(self) -> None:
        self.functions: dict[int, tuple] = {}  # fn id -> (mode, fn, retry_on)
        self.tasks: dict[int, tuple] = {}  # task id -> ((mode, fn, retry_on), args)
        self.results: dict[int, object] = {}  # task id -> value or exception
        #: The thread serving each slot (a replacement takes over its slot).
        self.threads: dict[int, threading.Thread] = {}


def _no_bytes(_obj, *_) -> bytes:
    return b""


class ThreadWorkers(EngineWorkers):
    """A thread pool's set of workers for the pipeline (``pool.pipeline``
    lists the calls): threads of this process that take functions,
    arguments and results by reference from a ``Handoff``."""

    kind = "thread"
    pickled = False

    def __init__(
        self, workers: int, initializer, initargs: tuple, trace: bool, name: str = "shoal-thread-"
    ) -> None:
        """``name``: the worker threads' names, before their slot number."""
        self.handoff = handoff = Handoff()
        start = functools.partial(thread.start, handoff, workers, initializer, initargs, name)
        super().__init__(_shoal.Engine.with_threads(workers, start, trace=trace))

    def register(self, fn_id: int, func, mode: int, retry_on: tuple) -> None:
        self.handoff.functions[fn_id] = (mode, func, retry_on)
        self.engine.register_function(fn_id, b"")

    def release(self, fn_id: int) -> None:
        self.handoff.functions.pop(fn_id, None)
        self.engine.release_function(fn_id)

    pack = staticmethod(_no_bytes)

    @staticmethod
    def pack_many(chunks: list) -> list[bytes]:
        return [b""] * len(chunks)

    @staticmethod
    def pack_batches(chunks: list):
        yield 0, [b""] * len(chunks), 0

    @staticmethod
    def sizes(payloads: list) -> list[int]:
        return [0] * len(payloads)

    def submit(self, fn_id: int, first_id: int, chunks: list, payloads: list, options) -> None:
        entry = self.handoff.functions[fn_id]
        tasks = self.handoff.tasks
        for task_id, args in enumerate(chunks, first_id):
            tasks[task_id] = (entry, args)
        try:
            self.engine.submit(fn_id, first_id, payloads, options.timeout, options.retries)
        except BaseException:
            for task_id in range(first_id, first_id + len(chunks)):
                tasks.pop(task_id, None)
            raise

    def submit_one(self, fn_id: int, task_id: int, args, payload, options) -> None:
        self.submit(fn_id, task_id, [args], [payload], options)

    def settle(self, c):
        """A completion as the pipeline reads it: the worker's value or
        exception itself, and no pid (the workers are this process)."""
        task_id = c.task_id
        self.handoff.tasks.pop(task_id, None)
        result = self.handoff.results.pop(task_id, _MISSING)
        outcome = c.outcome
        if outcome == Outcome.Done or outcome == Outcome.Failed:
            if result is _MISSING:
                result = RuntimeError(f"shoal internal error: no result for task {task_id}")
                outcome = Outcome.Failed
            return Completion(task_id, outcome, result, c.duration_ns)
        if c.pid is not None:
            return Completion(
                task_id, outcome, c.payload, c.duration_ns, timeout=c.timeout, rss=c.rss
            )
        return c


class ThreadPool(Pool):
    """A pool of worker threads with ``shoal.Pool``'s API (and so
    ``multiprocessing.pool.ThreadPool``'s): ``map``, ``starmap``, ``imap``,
    ``imap_unordered``, ``apply_async``, ``submit``, ``cancel``,
    ``timeout``/``retries``/``retry_on``, ``progress``/``on_progress`` and
    ``trace``.

    Threads run at once what waits (I/O, ``time.sleep``) and what releases
    the GIL (numpy, compiled kernels); pure-Python CPU work runs one thread
    at a time, and belongs in a process :class:`shoal.Pool`.

    ``workers`` defaults to :func:`shoal.cpu_count`. Nothing is pickled:
    functions, arguments and results are the caller's own objects, so
    closures, locks and shared lists work as in any thread. Prints and
    ``logging`` are the parent's own (not tagged ``[worker N]``).

    A thread cannot be killed: a task that passes its ``timeout`` (or is
    cancelled while running, or is running at ``terminate()``) fails with
    :class:`shoal.TaskTimeoutError` (or ``CancelledError``) at once, and its
    thread is abandoned -- it runs on in the background until the function
    returns, its result is dropped -- while a new thread takes its place.
    Abandoned threads are daemon threads: they hold up neither the pool's
    shutdown nor the interpreter's exit. ``worker_pids()`` lists this
    process's pid once per worker.
    """

    def __init__(
        self,
        workers: int | None = None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        progress: bool | str = False,
        on_progress: Callable[[int, int | None], object] | None = None,
        trace: bool = False,
    ) -> None:
        options = check_options(timeout, retries, retry_on)
        check_progress(progress, on_progress)
        workers = check_workers(cpu_count() if workers is None else workers, "workers")
        if initializer is not None:
            check_callable(initializer, "initializer")
        recorder = TraceRecorder("thread", workers) if trace else None
        thread_workers = ThreadWorkers(workers, initializer, tuple(initargs), bool(trace))
        defaults = CallOptions(options, progress, on_progress, None, None)
        pipeline = Pipeline(thread_workers, workers, defaults, recorder=recorder)
        self._start(thread_workers, workers, pipeline)

    def worker_threads(self) -> dict[int, threading.Thread]:
        """The thread serving each worker slot, a live view (a replacement
        takes its slot over)."""
        return self._workers.handoff.threads

    @property
    def _pool(self) -> list[threading.Thread]:
        """The current worker threads, as multiprocessing's ThreadPool lists them."""
        return list(self._workers.handoff.threads.values())

    def __enter__(self) -> ThreadPool:
        self._running()
        return self

    def __repr__(self) -> str:
        return f"<shoal.ThreadPool state={self._state} workers={self._processes}>"
