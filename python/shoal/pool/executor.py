"""``shoal.ProcessPoolExecutor`` and ``shoal.ThreadPoolExecutor``: the
standard library's executors on shoal's engine, for the code and libraries
that take any ``concurrent.futures.Executor`` (asyncio's
``run_in_executor``, dask, joblib through ``shoal.integrations.joblib``).

They are another front end on the call pipeline ``shoal.Pool`` uses
(``pool.pipeline``): ``submit`` is a single-task call, ``map`` a lazy
``imap`` whose deadline counts from the call. What they keep from the
standard library: its signatures, its errors (a worker's death is a
``BrokenProcessPool``, a failed initializer breaks the executor), its
futures (``cancel`` succeeds only for a task no worker has yet; ``running``
says whether one has), ``shutdown(wait, cancel_futures)``, finishing
submitted work at interpreter exit or when the executor is dropped. What
they add: a worker's death fails only its task and the executor goes on;
shoal's options (``timeout``, ``retries``, ``retry_on``, ``max_memory``,
``progress``, ``on_progress``, ``trace``); large arrays through shared
memory.

Workers start on first use, all at once, as fresh interpreters (the
``spawn`` way; there is no ``fork``).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import itertools
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .. import errors
from ..cpus import cpu_count
from ..errors import WorkerInitError, WorkerLostError, WorkerStartError
from ..integrations.dask import task_name
from ..trace.recorder import TraceRecorder
from ..trace.trace import Trace
from .call import name_of
from .memory import parse_memory
from .options import CallOptions, check_callable, check_chunksize, check_options, check_progress
from .pipeline import Pipeline
from .pool import WorkerProcess
from .progress import Progress
from .results import IMapIterator, PoolFuture
from .results import TimeoutError as PoolTimeoutError
from .threadpool import ThreadWorkers
from .workers import ProcessWorkers

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor"]

#: The standard executors log a failed initializer here; so do these.
LOGGER = logging.getLogger("concurrent.futures")

# --------------------------------------------------------------- at exit
# As the standard executors: work submitted and not cancelled is finished
# before the interpreter exits, and nothing new may be submitted then.
_global_shutdown = False
_live_pipelines: weakref.WeakSet = weakref.WeakSet()
#: Worker sets alive: an executor's, or one still finishing its work after
#: the executor was dropped (its result thread holds it until then).
_live_workers: weakref.WeakSet = weakref.WeakSet()


def _python_exit() -> None:
    global _global_shutdown
    _global_shutdown = True
    for pipeline in list(_live_pipelines):
        pipeline.close()  # lazy inputs are read to the end
    for pipeline in list(_live_pipelines):
        pipeline.join_feeders()
    workers = list(_live_workers)
    for w in workers:
        w.close()
    for w in workers:
        w.join(None)


# The hook the standard executors use: it runs when the main thread ends,
# before non-daemon threads are joined, so work they submit is refused.
threading._register_atexit(_python_exit)


def _forget_in_child() -> None:
    """A forked child does not own its parent's workers (nor their threads):
    it must not wait for them at its exit."""
    _live_pipelines.clear()
    _live_workers.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _finish(pipeline: Pipeline, workers, wait: bool) -> None:
    """Lets ``pipeline``'s calls read the rest of their input, then lets the
    workers finish every task and stop; ``wait``: until they have, and the
    last result has been handed over."""
    pipeline.close()
    pipeline.join_feeders()
    workers.close()
    if wait:
        workers.join(None)
        if threading.current_thread() is not pipeline.thread:  # a callback may shut down
            pipeline.thread.join()


def _finish_in_background(pipeline: Pipeline, workers) -> None:
    """``_finish`` without waiting, from a thread of its own if inputs are
    still being read (a feeder may wait for room, and nobody must wait for it)."""
    if pipeline.reading():
        threading.Thread(
            target=_finish, args=(pipeline, workers, False), name="shoal-shutdown", daemon=True
        ).start()
    else:
        _finish(pipeline, workers, False)


# ---------------------------------------------------------------- errors
class _Faults:
    """How an executor's results report shoal's errors: as the standard
    library's classes too (``errors.ExecutorWorkerLostError`` and friends),
    and whether the executor is broken (its initializer failed, or its
    workers cannot start), after which ``submit`` raises."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.broken: BaseException | None = None
        self._lock = threading.Lock()

    def translate(self, exc: BaseException) -> BaseException:
        kind = type(exc)
        if kind is WorkerLostError and exc.pid is not None:
            lost = errors.ExecutorWorkerLostError
            attributes = {k: getattr(exc, k) for k in ("pid", "exitcode", "signal", "reason")}
            return _rebuilt(lost, exc, **attributes)
        if kind is WorkerInitError:
            return self._break(_rebuilt(errors.ExecutorInitError, exc))
        if kind is WorkerStartError:
            return self._break(_rebuilt(errors.ExecutorStartError, exc))
        return exc

    def _break(self, error: BaseException) -> BaseException:
        with self._lock:
            first, self.broken = self.broken is None, self.broken or error
        if first:
            # As the standard executors log it (with the initializer's own
            # traceback as the cause, when there is one).
            cause = error.__cause__ or error
            LOGGER.critical(
                "Exception in initializer:" if isinstance(error, WorkerInitError) else str(error),
                exc_info=(type(cause), cause, cause.__traceback__),
            )
        return error

    def broken_error(self) -> BaseException:
        """A fresh exception for a ``submit`` refused by a broken executor."""
        return _rebuilt(type(self.broken), self.broken)


def _rebuilt(cls: type, exc: BaseException, **attributes) -> BaseException:
    """``exc`` as an instance of ``cls`` (one of its subclasses): the same
    message, attributes and cause."""
    new = cls(str(exc), **attributes)
    new.__cause__ = exc.__cause__
    for name, value in vars(exc).items():
        setattr(new, name, value)
    return new


class ExecutorFuture(PoolFuture):
    """An executor's future: a ``PoolFuture`` whose errors are also the
    standard library's (see ``_Faults``)."""

    def __init__(self, condition: threading.Condition, faults: _Faults) -> None:  # noqa: D107
        super().__init__(condition)
        self._faults = faults

    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        if not ok:
            value = self._faults.translate(value)
        super().put(position, n, ok, value)


class _MapResults(IMapIterator):
    """The results of an executor's ``map``, in input order; ``read_ahead``
    bounds the items read but not yet consumed (``buffersize``)."""

    def __init__(self, what: str, faults: _Faults, read_ahead: int | None) -> None:
        super().__init__(what, True)
        self._faults = faults
        if read_ahead is not None:
            self._read_ahead = read_ahead

    def unbound(self) -> None:
        """Shutdown: a map with ``buffersize`` reads no more of its input
        (as Python 3.14's ``map``: what was not submitted never runs), so an
        endless input never holds up shutdown or the interpreter's exit."""
        self.close_input()

    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        if not ok:
            value = self._faults.translate(value)
        super().put(position, n, ok, value)

    def next_run(self, timeout: float | None) -> list:
        """The next results in order: at least one, and the rest of the
        chunk it came in."""
        run = [self.next(timeout)]
        buffer = self._buffer
        run.extend(buffer)
        buffer.clear()
        return run


def _results(it: _MapResults, deadline: float | None):
    """Yields ``it``'s results; past ``deadline`` raises ``TimeoutError``.
    Closed early (or timed out), it cancels the tasks no worker holds yet and
    reads no more input, as the standard ``map`` cancels its futures. It
    keeps no reference to a result it has yielded."""
    next_run = it.next_run
    try:
        while True:
            try:
                run = next_run(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except StopIteration:
                return
            except PoolTimeoutError:
                raise TimeoutError() from None
            run.reverse()
            while run:
                yield run.pop()
    finally:
        call = it._call
        if call is not None:
            call.cancel(stop_running=False)


# -------------------------------------------------------------- executors
class _Executor:
    """What both executors share: everything but how their workers start."""

    _kind = "process"
    _shutdown_message = "cannot schedule new futures after shutdown"

    def _setup(
        self,
        max_workers: int | None,
        default_workers: int,
        initializer: Callable | None,
        initargs: Iterable,
        *,
        timeout: float | None,
        retries: int,
        retry_on,
        progress: bool | str,
        on_progress: Callable | None,
        trace: bool,
    ) -> None:
        if max_workers is None:
            max_workers = default_workers
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int or None, got {max_workers!r}")
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        options = check_options(timeout, retries, retry_on)
        check_progress(progress, on_progress)
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._defaults = CallOptions(options, progress, on_progress, None, None)
        # The trace's clock starts with the executor, before any worker.
        self._recorder = TraceRecorder(self._kind, max_workers) if trace else None
        self._faults = _Faults(self._kind)
        self._shutdown_lock = threading.Lock()
        self._shutdown_thread = False  # the standard executors' name
        self._pipeline: Pipeline | None = None
        self._workers = None
        self._submitted: Progress | None = None  # progress of submit()ted tasks

    # ------------------------------------------------------------ start
    def _start_workers(self):
        raise NotImplementedError

    def _running(self) -> Pipeline:
        """The pipeline, started on first use; raises if the executor takes
        no more work. Called with ``_shutdown_lock`` held."""
        if self._shutdown_thread:
            raise RuntimeError(self._shutdown_message)
        if _global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._faults.broken is not None:
            raise self._faults.broken_error()
        pipeline = self._pipeline
        if pipeline is None:
            try:
                workers = self._start_workers()
            except WorkerStartError as exc:
                raise self._faults.translate(exc) from None
            pipeline = Pipeline(workers, self._max_workers, self._defaults, recorder=self._recorder)
            self._workers, self._pipeline = workers, pipeline
            _live_workers.add(workers)
            _live_pipelines.add(pipeline)
            # Dropped without shutdown(): its work is finished, then the
            # workers stop. At exit, _python_exit does that.
            finalizer = weakref.finalize(self, _finish_in_background, pipeline, workers)
            finalizer.atexit = False
        return pipeline

    # ---------------------------------------------------------- the API
    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Runs ``fn(*args, **kwargs)`` in a worker; returns its future. If
        ``fn`` or the arguments can't be pickled, the future holds that error."""
        return self._submit(fn, args, kwargs)

    def _submit(self, fn, args: tuple, kwargs: dict, *, copies=None, name=None) -> ExecutorFuture:
        check_callable(fn)
        with self._shutdown_lock:
            pipeline = self._running()
            future = ExecutorFuture(pipeline.future_condition, self._faults)
            if name is None and pipeline.recorder is not None:
                name = task_name(fn, args)
            try:
                pipeline.submit(
                    fn, args, kwargs, pipeline.defaults, collector=future, name=name, copies=copies
                )
            except Exception as exc:  # noqa: BLE001 - e.g. an argument that can't be pickled
                # The standard executors report it through the future.
                future.put(0, 1, False, exc)
                return future
        if self._submitted is not None or self._defaults.progress or self._defaults.on_progress:
            self._count_submitted(future)
        return future

    def _count_submitted(self, future: ExecutorFuture) -> None:
        """``progress=``/``on_progress=`` for ``submit``: one count for every
        task submitted so far (``map`` calls count their own)."""
        with self._shutdown_lock:
            if self._submitted is None:
                defaults = self._defaults
                self._submitted = Progress(
                    f"{type(self).__name__}.submit", 0, defaults.progress, defaults.on_progress
                )
            progress = self._submitted
        progress.grow(1)
        future.add_done_callback(lambda _: progress.advance(1))

    def map(
        self,
        fn: Callable,
        *iterables: Iterable,
        timeout: float | None = None,
        chunksize: int | None = 1,
        buffersize: int | None = None,
    ):
        """``fn`` over the items of ``iterables`` (their tuples, if several),
        lazily, results in input order. ``timeout`` (seconds) counts from
        this call: a result not ready by then raises ``TimeoutError``.
        ``chunksize`` items go to a worker at once (``None``: sized from
        measured run times). As the standard ``map``, the input is read now;
        with ``buffersize`` (Python 3.14's), it is read as results are
        consumed, at most that many items ahead, so an endless input works,
        and what was not read when the executor shuts down never runs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        check_callable(fn)
        check_chunksize(chunksize)
        if buffersize is not None and (
            isinstance(buffersize, bool) or not isinstance(buffersize, int) or buffersize < 1
        ):
            raise ValueError(f"buffersize must be None or a positive int, got {buffersize!r}")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        star = len(iterables) > 1
        eager = buffersize is None
        source = zip(*iterables, strict=False) if star else iterables[0]
        with self._shutdown_lock:
            pipeline = self._running()
            results = _MapResults(f"map({name_of(fn)})", self._faults, buffersize)
            if eager:
                method = "starmap" if star else "map"
                pipeline.map_async(
                    method, fn, source, chunksize, pipeline.defaults, collector=results
                )
            else:
                pipeline.imap(
                    "map", fn, source, chunksize, pipeline.defaults, star=star, collector=results
                )
        return _results(results, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks. ``cancel_futures``: cancels those no worker holds
        yet. The rest run to the end; ``wait``: returns once they have and
        the workers have stopped (else they stop by themselves)."""
        with self._shutdown_lock:
            self._shutdown_thread = True
            pipeline, workers = self._pipeline, self._workers
            if pipeline is not None and cancel_futures:
                pipeline.withdraw_all()
        if pipeline is None:
            return
        if wait:
            _finish(pipeline, workers, True)
        else:
            _finish_in_background(pipeline, workers)
        if wait and self._submitted is not None:
            self._submitted.close()

    # -------------------------------------------------------- shoal's own
    def cancel(self, *futures: concurrent.futures.Future) -> None:
        """Stops the tasks behind ``futures`` now, as ``shoal.Pool.cancel``:
        those not started never run, running ones are stopped by replacing
        their worker; their futures end cancelled. ``Future.cancel()`` keeps
        its standard meaning (only a task no worker holds yet)."""
        if self._pipeline is not None:
            self._pipeline.cancel(futures)

    def trace(self) -> Trace:
        """What this executor has run so far, as a :class:`shoal.Trace`
        (needs ``trace=True``)."""
        if self._recorder is None:
            raise ValueError("this executor does not record a trace; create it with trace=True")
        records = self._workers.records() if self._workers is not None else []
        return Trace.from_dict(self._recorder.build(records))

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (none before the first task)."""
        return [] if self._workers is None else list(self._workers.worker_pids())

    @property
    def _broken(self):
        """The standard executors' flag: a message once broken, else False."""
        broken = self._faults.broken
        return False if broken is None else str(broken)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown_thread else "running"
        return f"<shoal.{type(self).__name__} max_workers={self._max_workers} {state}>"

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled or sent to another process")


class ProcessPoolExecutor(_Executor, concurrent.futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor`` on shoal's engine (and a
    subclass of it): ``submit``, ``map``, ``shutdown``, ``with`` blocks.

    ``max_workers`` defaults to :func:`shoal.cpu_count`. Workers are fresh
    interpreters, as with the ``spawn`` start method: ``mp_context`` may be
    None or a ``spawn`` or ``forkserver`` context (both start workers that
    inherit nothing but what is sent); a ``fork`` context is refused.
    Functions and closures from ``__main__`` or a notebook travel by value.

    A worker that dies (killed, crashed, out of memory) fails the task it
    was running with :class:`shoal.errors.ExecutorWorkerLostError`, which is
    both a :class:`shoal.WorkerLostError` and a ``BrokenProcessPool``; the
    executor replaces the worker and goes on (the standard one would be
    broken for good). A failing ``initializer`` does break it, as there.

    shoal's options, keyword-only: ``timeout`` (seconds per task: its worker
    is killed and the task fails with :class:`shoal.TaskTimeoutError`; not
    ``map``'s ``timeout``, which is the standard deadline for the results),
    ``retries``, ``retry_on``, ``max_memory``, ``progress``,
    ``on_progress``, ``trace`` (see :class:`shoal.Pool`).
    """

    _kind = "process"

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context=None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        max_tasks_per_child: int | None = None,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        max_memory: int | str | None = None,
        progress: bool | str = False,
        on_progress: Callable[[int, int | None], Any] | None = None,
        trace: bool = False,
    ) -> None:
        self._mp_context = _spawn_like(mp_context)
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._max_tasks_per_child = max_tasks_per_child
        self._max_memory = parse_memory(max_memory, "max_memory")
        self._setup(
            max_workers,
            cpu_count(),
            initializer,
            initargs,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
            progress=progress,
            on_progress=on_progress,
            trace=trace,
        )

    def _start_workers(self) -> ProcessWorkers:
        return ProcessWorkers.start(
            self._max_workers,
            self._initializer,
            self._initargs,
            self._max_tasks_per_child,
            self._max_memory,
            self._recorder is not None,
        )

    @property
    def _processes(self) -> dict[int, WorkerProcess]:
        """The current workers by pid, as the standard executor keeps them."""
        if self._workers is None:
            return {}
        return {
            r.pid: WorkerProcess(r.pid, r.slot)
            for r in self._workers.records()
            if r.ended_ns is None
        }

    def terminate_workers(self) -> None:
        """Stops the workers now (SIGKILL; Python 3.14's API) and shuts the
        executor down: what was pending or running ends cancelled."""
        self._stop_now()

    def kill_workers(self) -> None:
        """As ``terminate_workers``."""
        self._stop_now()

    def _stop_now(self) -> None:
        with self._shutdown_lock:
            self._shutdown_thread = True
            pipeline, workers = self._pipeline, self._workers
        if pipeline is None:
            return
        pipeline.stop_iterators()
        workers.terminate()
        workers.join(None)
        if threading.current_thread() is not pipeline.thread:
            pipeline.thread.join()


class ThreadPoolExecutor(_Executor, concurrent.futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` on shoal's engine (and a
    subclass of it, so asyncio takes it as its default executor).

    ``max_workers`` defaults to ``min(32, shoal.cpu_count() + 4)``, as the
    standard one's; threads are named ``{thread_name_prefix}_{n}``. Nothing
    is pickled: tasks see the caller's objects. shoal's options as for
    :class:`ProcessPoolExecutor` (but ``max_memory``); a thread cannot be
    killed, so a task past its ``timeout`` is abandoned (see
    :class:`shoal.ThreadPool`).
    """

    _kind = "thread"
    _counter = itertools.count().__next__

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable | None = None,
        initargs: Iterable = (),
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        progress: bool | str = False,
        on_progress: Callable[[int, int | None], Any] | None = None,
        trace: bool = False,
    ) -> None:
        self._thread_name_prefix = thread_name_prefix or f"ThreadPoolExecutor-{self._counter()}"
        self._setup(
            max_workers,
            min(32, cpu_count() + 4),
            initializer,
            initargs,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
            progress=progress,
            on_progress=on_progress,
            trace=trace,
        )

    def _start_workers(self) -> ThreadWorkers:
        return ThreadWorkers(
            self._max_workers,
            self._initializer,
            self._initargs,
            self._recorder is not None,
            name=f"{self._thread_name_prefix}_",
        )

    @property
    def _threads(self) -> set[threading.Thread]:
        """The worker threads, as the standard executor keeps them."""
        return set() if self._workers is None else set(self._workers.handoff.threads.values())


def _spawn_like(mp_context):
    """The start method shoal's workers match: ``spawn`` (and ``forkserver``,
    whose workers also inherit nothing). ``fork`` can't be honoured."""
    if mp_context is None:
        return multiprocessing.get_context("spawn")
    get_method = getattr(mp_context, "get_start_method", None)
    if get_method is None:
        raise TypeError(
            f"mp_context must be a multiprocessing context (multiprocessing.get_context("
            f"'spawn')) or None, got {mp_context!r}"
        )
    method = get_method(allow_none=False)
    if method not in ("spawn", "forkserver"):
        raise ValueError(
            f"shoal starts each worker as a fresh interpreter, as the 'spawn' start method "
            f"does, and cannot use {method!r}: pass mp_context=None (or a 'spawn' context). "
            "Functions and classes defined in __main__ or a notebook still work: shoal sends "
            "them by value."
        )
    return mp_context
