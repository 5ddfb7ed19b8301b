"""``shoal.ThreadPool``: ``shoal.Pool``'s API on threads of this process,
driven by the same Rust scheduler."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable

from .. import _shoal
from ..cpus import cpu_count
from ..trace.recorder import TraceRecorder
from ..worker import thread as _thread_worker
from .outcome import RAISED, VALUE
from .pool import Pool, _check_options
from .progress import check_progress

_DONE = _shoal.OUTCOME_DONE
_FAILED = _shoal.OUTCOME_FAILED
# Outcomes whose payload starts with a pid, which means nothing for a thread.
_PID_OUTCOMES = (_shoal.OUTCOME_LOST, _shoal.OUTCOME_TIMED_OUT, _shoal.OUTCOME_CANNOT_START)
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

    def put(self, fn_id: int, first_id: int, args: list) -> None:
        entry = self.functions[fn_id]
        tasks = self.tasks
        for k, a in enumerate(args, first_id):
            tasks[k] = (entry, a)

    def drop(self, first_id: int, n: int) -> None:
        for task_id in range(first_id, first_id + n):
            self.tasks.pop(task_id, None)

    def translate(self, task_id: int, code: int, payload):
        """The result thread's view of a completion: the worker's value or
        exception itself, and no pid (the workers are this process)."""
        self.tasks.pop(task_id, None)
        result = self.results.pop(task_id, _MISSING)
        if code == _DONE or code == _FAILED:
            if result is _MISSING:
                return RAISED, RuntimeError(f"shoal internal error: no result for task {task_id}")
            return (VALUE if code == _DONE else RAISED), result
        if code in _PID_OUTCOMES:
            return code, (None, *payload[1:])
        return code, payload


def _release(engine, functions: dict, fn_id: int) -> None:
    functions.pop(fn_id, None)
    engine.release_function(fn_id)


def _no_bytes(*_) -> bytes:
    return b""


def _no_bytes_each(objs: list) -> list[bytes]:
    return [b""] * len(objs)


def _no_bytes_batch(objs: list):
    yield 0, [b""] * len(objs), 0


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

    _dumps = staticmethod(_no_bytes)
    _dumps_many = staticmethod(_no_bytes_each)
    _dumps_batches = staticmethod(_no_bytes_batch)
    _dumps_function = staticmethod(_no_bytes)

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
        self._options = _check_options(timeout, retries, retry_on)
        check_progress(progress, on_progress)
        self._progress = (progress, on_progress)
        if workers is None:
            workers = cpu_count()
        if not isinstance(workers, int) or isinstance(workers, bool):
            raise TypeError(
                f"workers must be an int (or None for cpu_count()), "
                f"got {type(workers).__name__} {workers!r}"
            )
        if workers < 1:
            raise ValueError(f"Number of workers must be at least 1, got {workers!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        self._handoff = handoff = Handoff()
        start = functools.partial(
            _thread_worker.start, handoff, workers, initializer, tuple(initargs)
        )
        recorder = TraceRecorder("thread", workers) if trace else None
        engine = _shoal.Engine.with_threads(workers, start, trace=bool(trace))
        self._start(workers, engine, handoff.translate, recorder)
        self._release_function = functools.partial(_release, engine, handoff.functions)

    def _register(self, func, mode, options) -> int:
        fn_id = super()._register(func, mode, options)
        self._handoff.functions[fn_id] = (mode, func, options.retry_on)
        return fn_id

    def _send_one(self, fn_id, task_id, args, sink, options, call=None) -> None:
        self._handoff.put(fn_id, task_id, [args])
        try:
            super()._send_one(fn_id, task_id, args, sink, options, call)
        except BaseException:
            self._handoff.drop(task_id, 1)
            raise

    def _send(
        self, fn_id, first_id, chunks, sink, options, call=None, payloads=None, ser_ns=0
    ) -> None:
        # Threads take the chunks themselves; pickled ``payloads`` are not needed.
        self._handoff.put(fn_id, first_id, chunks)
        try:
            super()._send(fn_id, first_id, chunks, sink, options, call)
        except BaseException:
            self._handoff.drop(first_id, len(chunks))
            raise

    def __enter__(self) -> ThreadPool:
        self._check_running()
        return self

    def __repr__(self) -> str:
        return f"<shoal.ThreadPool state={self._state} workers={self._processes}>"
