"""``shoal.Pool``: multiprocessing.Pool's API on shoal's Rust engine. The
methods check their arguments and hand the call to the pool's pipeline
(``pool.pipeline``), which every kind of pool shares."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ..cluster.world import current_world
from ..cpus import cpu_count
from ..sync.context import check_context
from ..trace.recorder import TraceRecorder
from ..trace.trace import Trace
from .memory import parse_memory
from .options import (
    TASK_KEYS,
    CallOptions,
    check_callable,
    check_checkpoint_key,
    check_chunksize,
    check_options,
    check_progress,
    check_workers,
)
from .output import parent_log_level
from .pipeline import Pipeline
from .results import AsyncResult, IMapIterator, MapResult
from .workers import ProcessWorkers

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"


class WorkerProcess:
    """One of ``pool._pool``: a worker's pid, as multiprocessing's pools list
    their ``Process`` objects (code reads ``[w.pid for w in pool._pool]``)."""

    __slots__ = ("pid", "name")

    def __init__(self, pid: int, slot: int) -> None:
        self.pid = pid
        self.name = f"shoal-worker-{slot}"

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def terminate(self) -> None:
        """SIGTERM, as ``Process.terminate``: the pool replaces the worker
        (the task it ran fails with ``WorkerLostError``)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        """Waits until the process has ended (the pool reaps it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.pid}>"


class Pool:
    """A pool of worker processes with ``multiprocessing.Pool``'s API.

    ``processes`` defaults to :func:`shoal.cpu_count`. Options:

    - ``timeout`` (seconds) stops a task that runs longer by killing its
      worker (the task fails with :class:`shoal.TaskTimeoutError`);
    - ``retries`` re-runs a task whose worker died that many times, and
      ``retry_on`` (exception classes) also re-runs a task that raised one
      of them; these three can also be given per call;
    - ``max_memory`` (bytes, or a string such as ``"2GB"``) caps each
      worker's own resident memory (shared memory it maps does not count):
      a worker over it after a task is replaced, one over it during a task
      is killed and the task fails with :class:`shoal.WorkerLostError`
      (``reason == "memory"``);
    - ``progress`` (``True`` or ``"always"``) and ``on_progress(done,
      total)`` report how far each map-family call has got; also per call;
    - ``trace=True`` records every task (where and when it ran, its sizes
      and where its time went) for :meth:`trace` and :func:`shoal.report`.

    Workers are fresh interpreters started by the engine; functions, lambdas
    and closures are pickled (cloudpickle where plain pickle can't). What
    they print, and their ``logging`` records, appear in the parent tagged
    ``[worker N]``. Leaving a ``with`` block terminates the pool, as in
    multiprocessing.

    ``checkpoint`` (a file name) is the default of the map family's
    ``checkpoint=``, with ``checkpoint_key`` (see ``map``).

    ``context`` (multiprocessing's fifth argument) takes a context from
    ``shoal.get_context()`` or ``multiprocessing.get_context()``: workers
    are fresh interpreters whatever its start method.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        max_memory: int | str | None = None,
        progress: bool | str = False,
        on_progress: Callable[[int, int | None], Any] | None = None,
        trace: bool = False,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_key: Callable | None = None,
    ) -> None:
        options = check_options(timeout, retries, retry_on)
        max_memory = parse_memory(max_memory, "max_memory")
        check_progress(progress, on_progress)
        check_checkpoint_key(checkpoint_key)
        check_context(context)  # accepted as multiprocessing's; shoal starts its own way
        # Under `shoal run --pool`, the other ranks of the MPI launch serve it.
        world = current_world()
        if processes is None:
            processes = cpu_count() if world is None else world.worker_count
        processes = check_workers(processes, "processes")
        if initializer is not None:
            check_callable(initializer, "initializer")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool)
            or not isinstance(maxtasksperchild, int)
            or maxtasksperchild < 1
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}"
            )
        # The trace's clock starts before the workers do.
        recorder = TraceRecorder("process", processes) if trace else None
        if world is None:
            workers = ProcessWorkers.start(
                processes, initializer, initargs, maxtasksperchild, max_memory, trace
            )
        else:  # the serving ranks' workers follow the level the program starts with
            setup = (list(sys.path), initializer, tuple(initargs), max_memory, parent_log_level())
            workers = world.start_workers(processes, setup, maxtasksperchild, max_memory, trace)
        self._start(
            workers,
            processes,
            Pipeline(
                workers,
                processes,
                CallOptions(options, progress, on_progress, checkpoint, checkpoint_key),
                recorder=recorder,
            ),
        )

    def _start(self, workers, n: int, pipeline: Pipeline) -> None:
        """Every pool's state around its started workers and pipeline."""
        self._processes = n  # multiprocessing's name; threads in a ThreadPool
        self._workers = workers
        self._pipeline = pipeline
        self._state = _RUN
        self._state_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shut, workers, os.getpid())

    # ------------------------------------------------------------- checks
    def _running(self) -> Pipeline:
        """The pipeline, for a call that starts now."""
        if self._state != _RUN:
            raise ValueError("Pool not running")
        return self._pipeline

    # ------------------------------------------------------- apply/submit
    def apply(
        self, func: Callable, args: Iterable = (), kwds: dict | None = None, **options
    ) -> Any:
        """``func(*args, **kwds)`` in a worker. Keyword options: ``timeout``,
        ``retries``, ``retry_on`` (see ``Pool``)."""
        return self.apply_async(func, args, kwds, **options).get()

    def apply_async(
        self,
        func: Callable,
        args: Iterable = (),
        kwds: dict | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
        **options,
    ) -> AsyncResult:
        pipeline = self._running()
        check_callable(func)
        options = pipeline.call_options("apply_async", options, TASK_KEYS)
        return pipeline.apply_async(func, args, kwds or {}, options, callback, error_callback)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Runs ``fn(*args, **kwargs)`` in a worker; returns a
        ``concurrent.futures.Future``."""
        pipeline = self._running()
        check_callable(fn)
        return pipeline.submit(fn, args, kwargs, pipeline.defaults)

    # --------------------------------------------------------- map family
    # Keyword options of every call: ``timeout``, ``retries``, ``retry_on``
    # (per task; see ``Pool``); ``progress``, ``on_progress``;
    # ``checkpoint="run.sqlite"`` stores each finished result there and a
    # re-run computes only the missing ones (``False`` turns the pool's
    # default off); ``checkpoint_key=fn`` keys a task by ``fn(item)``
    # instead of its pickled arguments.
    def map(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> list:
        """``[func(x) for x in iterable]`` in the workers, in order."""
        return self._map("map", func, iterable, chunksize, None, None, options).get()

    def map_async(
        self, func, iterable, chunksize=None, callback=None, error_callback=None, **options
    ) -> MapResult:
        return self._map("map", func, iterable, chunksize, callback, error_callback, options)

    def starmap(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> list:
        """``[func(*args) for args in iterable]`` in the workers, in order."""
        return self._map("starmap", func, iterable, chunksize, None, None, options).get()

    def starmap_async(
        self, func, iterable, chunksize=None, callback=None, error_callback=None, **options
    ) -> MapResult:
        return self._map("starmap", func, iterable, chunksize, callback, error_callback, options)

    def imap(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> IMapIterator:
        """Lazy ``map``: reads the input as results are consumed."""
        return self._imap("imap", func, iterable, chunksize, options)

    def imap_unordered(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> IMapIterator:
        """Lazy ``map`` yielding results as they complete."""
        return self._imap("imap_unordered", func, iterable, chunksize, options)

    def _map(self, method, func, iterable, chunksize, callback, error_callback, options):
        pipeline = self._running()
        check_callable(func)
        check_chunksize(chunksize)
        options = pipeline.call_options(method, options)
        return pipeline.map_async(
            method, func, iterable, chunksize, options, callback, error_callback
        )

    def _imap(self, method, func, iterable, chunksize, options) -> IMapIterator:
        pipeline = self._running()
        check_callable(func)
        check_chunksize(chunksize)
        return pipeline.imap(
            method, func, iterable, chunksize, pipeline.call_options(method, options)
        )

    # ------------------------------------------------------------ tracing
    def trace(self) -> Trace:
        """What this pool has run so far, as a :class:`shoal.Trace`: every
        call and task, where and when each task ran, its sizes, and where
        its time went. Needs ``Pool(trace=True)``; works after the pool is
        closed or terminated too."""
        recorder = self._pipeline.recorder
        if recorder is None:
            raise ValueError("this pool does not record a trace; create it with trace=True")
        return Trace.from_dict(recorder.build(self._workers.records()))

    # ------------------------------------------------------- cancellation
    def cancel(self, *results: Any) -> None:
        """Stops the tasks behind ``results`` (futures from ``submit``, the
        results of ``apply_async``/``map_async``/``starmap_async``, ``imap``
        iterators): tasks not started never run, and running ones are
        stopped by killing their worker (a new one takes its place; the
        worker's other queued tasks are run elsewhere). Their results then
        raise ``concurrent.futures.CancelledError``; an ``imap`` iterator
        also stops reading its input. Finished tasks are not affected.
        ``Future.cancel()``, by contrast, only withdraws a task that has not
        been sent to a worker."""
        self._pipeline.cancel(results)

    # ---------------------------------------------------------- lifecycle
    @property
    def worker_count(self) -> int:
        """How many workers this pool runs."""
        return self._processes

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return list(self._workers.worker_pids())

    @property
    def _pool(self) -> list[WorkerProcess]:
        """The current workers, as multiprocessing's ``Pool._pool`` lists them."""
        return [WorkerProcess(r.pid, r.slot) for r in self._workers.records() if r.ended_ns is None]

    def close(self) -> None:
        """No new tasks; workers exit once submitted work is done (``join``)."""
        with self._state_lock:
            if self._state == _RUN:
                self._state = _CLOSE
        self._pipeline.close()

    def terminate(self) -> None:
        """Stops the workers now; unfinished tasks fail with CancelledError."""
        with self._state_lock:
            self._state = _TERMINATE
        self._pipeline.stop_iterators()
        self._workers.terminate()
        self._workers.join(None)
        self._pipeline.thread.join()

    def join(self) -> None:
        """Waits for the workers to exit; call ``close`` or ``terminate`` first."""
        if self._state == _RUN:
            raise ValueError("Pool is still running; call close() or terminate() first")
        if self._state == _CLOSE:
            self._pipeline.join_feeders()
            self._workers.close()
        self._workers.join(None)
        self._pipeline.thread.join()

    def __enter__(self) -> Pool:
        self._running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    def __del__(self) -> None:
        # As multiprocessing: a pool dropped while running is a leak worth
        # saying (its workers are stopped anyway, by the finalizer).
        if getattr(self, "_state", None) == _RUN:
            warnings.warn(
                f"unclosed running pool {self!r}", ResourceWarning, stacklevel=2, source=self
            )

    def __repr__(self) -> str:
        return f"<shoal.Pool state={self._state} processes={self._processes}>"

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")


def _shut(workers, pid: int) -> None:
    """A pool that was collected without ``terminate()``: stop its workers
    (not in a forked child, which does not own them)."""
    if os.getpid() == pid:
        workers.terminate()
        workers.join(5.0)
