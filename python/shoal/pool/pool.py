"""``shoal.Pool``: multiprocessing.Pool's API on shoal's Rust engine."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .. import _shoal
from ..cpus import cpu_count
from ..sync.context import check_context
from ..trace.recorder import TraceRecorder
from ..wire.serialize import MODE_CALL, MODE_MAP, MODE_STARMAP
from ..wire.transfer import dumps_function, pack, pack_batches, pack_many, payload_nbytes
from ..worker.output import ParentLogLevel, deliver
from .memory import parse_memory
from .outcome import decode
from .progress import Progress, check_progress
from .results import AsyncResult, IMapIterator, MapResult

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"


def _timed_batches(chunks: list[list]):
    """``pack_batches(chunks)`` as ``(start, payloads, ns spent packing them)``."""
    batches = pack_batches(chunks)
    while True:
        started = time.perf_counter_ns()
        try:
            start, payloads = next(batches)
        except StopIteration:
            return
        yield start, payloads, time.perf_counter_ns() - started


#: Thread-count variables of numeric libraries, capped per worker so N
#: workers do not each start a thread per core.
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

#: Functions kept registered for ``apply_async``/``submit`` reuse.
_FUNCTION_CACHE_SIZE = 32
#: Target run time of one ``imap`` chunk when the chunk size is automatic.
_IMAP_CHUNK_TARGET_NS = 5_000_000
_IMAP_MAX_CHUNK = 1024
#: Most chunks an imap feeder reads and submits in one engine call.
_IMAP_CHUNKS_PER_SUBMIT = 64


class _Options(NamedTuple):
    """Per-task options the engine enforces."""

    timeout: float | None  # seconds; the worker is killed and replaced after it
    retries: int  # re-runs of a task whose worker died (or that raised retry_on)
    retry_on: tuple  # exception classes that are retried, not failed


def _check_options(timeout: Any, retries: Any, retry_on: Any) -> _Options:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not isinstance(retry_on, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
    ):
        raise TypeError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    if retry_on and retries == 0:
        raise ValueError(
            f"retry_on={retry_on!r} needs retries=N: how many times to re-run a task "
            "that raises one of them"
        )
    return _Options(None if timeout is None else float(timeout), retries, retry_on)


def _worker_command() -> tuple[list[str], list[tuple[str, str]]]:
    """Workers start with ``-S`` (no site: .pth files and sitecustomize can
    cost tens of milliseconds per start) and find this interpreter's
    packages through PYTHONPATH instead; the Init frame then installs the
    parent's exact ``sys.path``. ``SHOAL_WORKER_SITE=1`` keeps site."""
    if os.environ.get("SHOAL_WORKER_SITE") == "1":
        return ["-m", "shoal.worker"], []
    path = os.pathsep.join(p for p in sys.path if p)
    return ["-S", "-m", "shoal.worker"], [("PYTHONPATH", path)]


def _worker_env(processes: int) -> list[tuple[str, str]]:
    per_worker = str(max(1, cpu_count() // processes))
    return [(var, per_worker) for var in _THREAD_VARS if var not in os.environ]


def _pump(
    engine, pending: dict, recorder: TraceRecorder | None, translate: Callable | None
) -> None:
    """The result thread: takes completions from the engine and hands each
    to the object waiting for it (after ``translate(task_id, code,
    payload)``, if given). Holds no reference to the Pool, so an abandoned
    pool can be collected."""
    pop = pending.pop
    while True:
        batch = engine.wait_completions(None)
        if batch is None:
            return
        done, output = batch
        if output:
            deliver(output)  # a task's prints before its result
        if recorder is not None:
            recorder.completed(done)
        for task_id, code, payload, duration_ns, _run in done:
            if translate is not None:
                code, payload = translate(task_id, code, payload)
            sink = pop(task_id, None)
            if sink is not None:
                sink(task_id, code, payload, duration_ns)
        # Drop references while blocked, so finished results (and the task
        # arguments they hold) can be freed.
        batch = done = sink = payload = None


_FINAL_STATES = ("FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED")


class _PoolFuture(concurrent.futures.Future):
    """A real ``concurrent.futures.Future`` (``as_completed``, ``wait`` and
    ``asyncio.wrap_future`` work), tuned for many small tasks:

    - ``cancel`` also withdraws the task from the engine's queue;
    - the stdlib builds a ``threading.Condition`` per future, which costs
      more than shoal's whole dispatch of a task; here the futures of one
      pool share one condition. A notification may then be meant for another
      future, so ``result`` and ``exception`` wait in a loop until their own
      future is done (the stdlib's wait once).
    """

    def __init__(self, engine, task_id: int, condition: threading.Condition) -> None:  # noqa: D107
        # Future.__init__ is not called: it would build a condition of its own.
        self._condition = condition
        self._state = "PENDING"
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []
        self._engine = engine
        self._task_id = task_id

    def _wait_final(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in _FINAL_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise concurrent.futures.TimeoutError()
                self._condition.wait(remaining)

    def result(self, timeout: float | None = None):
        self._wait_final(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None):
        self._wait_final(timeout)
        return super().exception(0)

    def cancel(self) -> bool:
        if super().cancel():
            self._engine.cancel([self._task_id])
            return True
        return False

    @property
    def _tasks(self) -> range:
        return range(self._task_id, self._task_id + 1)

    def _complete(self, task_id: int, code: int, payload, duration_ns: int) -> None:
        if code == _shoal.OUTCOME_CANCELLED:  # pool.cancel() or terminate()
            concurrent.futures.Future.cancel(self)
            self.set_running_or_notify_cancel()
            return
        ok, value = decode(code, payload, f"task {task_id}")
        if not self.set_running_or_notify_cancel():
            return  # cancelled by the user; the result is dropped
        if ok:
            self.set_result(value)
        else:
            self.set_exception(value)


class _Feed:
    """One imap call's bookkeeping between its feeder thread and the result
    thread: which chunk each task is, and when the function can be released
    (input exhausted and every chunk answered)."""

    def __init__(
        self,
        it: IMapIterator,
        fn_id: int,
        send: Callable,
        release: Callable,
        stop: Callable,
        progress: Progress | None,
    ) -> None:
        self.it = it
        self._fn_id = fn_id
        self._send = send  # Pool._send with this call's options and trace bound
        self._release = release
        self._stop = stop  # engine.cancel(ids, stop_running=True)
        self._progress = progress
        self._chunk_of: dict[int, tuple[int, int]] = {}  # task id -> (number, items)
        self._lock = threading.Lock()
        self._outstanding = 0
        self._input_done = False
        self._released = False
        self.cancelled = False

    def submit(self, chunks: list[list], first_id: int) -> bool:
        """Submits chunks as tasks ``first_id, first_id + 1, ...``. False if
        they could not be sent (the error goes to the consumer)."""
        for k, chunk in enumerate(chunks):
            self._chunk_of[first_id + k] = (self.it._note_submitted(len(chunk)), len(chunk))
        with self._lock:
            self._outstanding += len(chunks)
        try:
            self._send(self._fn_id, first_id, chunks, self.complete)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable item
            for k in range(len(chunks)):
                self.it._fail_chunk(*self._chunk_of.pop(first_id + k), exc)
            with self._lock:
                self._outstanding -= len(chunks)
            return False
        if self.cancelled:  # pool.cancel() ran while these were being sent
            self._stop(list(range(first_id, first_id + len(chunks))), True)
            return False
        return True

    def cancel(self) -> None:
        """Stops reading the input and every chunk sent so far."""
        self.cancelled = True
        self._stop(list(self._chunk_of), True)

    def complete(self, task_id: int, code: int, payload, duration_ns: int) -> None:
        number, n_items = self._chunk_of.pop(task_id)
        if self._progress is not None:
            self._progress.advance(n_items)
        self.it._complete_chunk(number, n_items, code, payload, duration_ns)
        with self._lock:
            self._outstanding -= 1
        self._release_if_finished()

    def input_done(self) -> None:
        with self._lock:
            self._input_done = True
        self._release_if_finished()

    def _release_if_finished(self) -> None:
        with self._lock:
            release = self._input_done and self._outstanding == 0 and not self._released
            self._released = self._released or release
        if release:
            self._release(self._fn_id)
            if self._progress is not None:
                self._progress.close()


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

    #: How arguments and functions travel to the workers: pickled. (A
    #: ThreadPool hands them over by reference instead.)
    _dumps = staticmethod(pack)
    _dumps_many = staticmethod(pack_many)
    _dumps_batches = staticmethod(_timed_batches)
    _dumps_function = staticmethod(dumps_function)
    #: The map family's default ``checkpoint`` and ``checkpoint_key``.
    _checkpoint: tuple = (None, None)
    #: The parent's logging level as workers see it (processes only).
    _log_level: ParentLogLevel | None = None

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
        self._options = _check_options(timeout, retries, retry_on)
        max_memory = parse_memory(max_memory, "max_memory")
        check_progress(progress, on_progress)
        self._progress = (progress, on_progress)
        self._checkpoint = (checkpoint, checkpoint_key)
        check_context(context)  # accepted as multiprocessing's; shoal starts its own way
        if processes is None:
            processes = cpu_count()
        if not isinstance(processes, int) or isinstance(processes, bool):
            raise TypeError(
                f"processes must be an int (or None for cpu_count()), "
                f"got {type(processes).__name__} {processes!r}"
            )
        if processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}"
            )
        # Workers follow the parent's logging level as it is when each call starts.
        self._log_level = ParentLogLevel()
        setup = (list(sys.path), initializer, tuple(initargs), max_memory, self._log_level)
        init = pack(setup + (processes,))
        # The trace's clock starts before the workers do.
        recorder = TraceRecorder("process", processes) if trace else None
        args, env = _worker_command()
        engine = _shoal.Engine(
            processes,
            sys.executable,
            args,
            env + _worker_env(processes),
            init,
            maxtasksperchild,
            max_memory,
            bool(trace),
        )
        self._start(processes, engine, recorder=recorder)

    def _start(
        self,
        workers: int,
        engine,
        translate: Callable | None = None,
        recorder: TraceRecorder | None = None,
    ) -> None:
        """Every pool's state around its started engine, and its result thread."""
        self._processes = workers  # multiprocessing's name; threads in a ThreadPool
        self._recorder = recorder
        self._state = _RUN
        self._state_lock = threading.Lock()
        self._engine = engine
        self._release_function = engine.release_function
        self._next_id = 1
        self._id_lock = threading.Lock()
        self._fn_ids = itertools.count(1)
        self._pending: dict[int, Callable] = {}
        self._functions: collections.OrderedDict = collections.OrderedDict()
        self._future_condition = threading.Condition()
        self._feeders: list[threading.Thread] = []
        self._iterators: weakref.WeakSet = weakref.WeakSet()
        self._pump = threading.Thread(
            target=_pump,
            args=(self._engine, self._pending, recorder, translate),
            name="shoal-results",
            daemon=True,
        )
        self._pump.start()
        self._finalizer = weakref.finalize(self, Pool._shut, self._engine, self._pump)

    # ------------------------------------------------------------------ helpers
    def _check_running(self) -> None:
        if self._state != _RUN:
            raise ValueError("Pool not running")
        if self._log_level is not None:  # every call starts here
            self._log_level.follow()

    def _call_options(self, timeout: Any, retries: Any, retry_on: Any) -> _Options:
        """This call's options: the pool's, overridden where given."""
        if timeout is None and retries is None and retry_on is None:
            return self._options
        pool = self._options
        return _check_options(
            pool.timeout if timeout is None else timeout,
            pool.retries if retries is None else retries,
            pool.retry_on if retry_on is None else retry_on,
        )

    def _call_progress(
        self, what: str, total: int | None, progress: Any, on_progress: Any
    ) -> Progress | None:
        """This call's progress report, or None if nobody asked for one."""
        pool_progress, pool_callback = self._progress
        progress = pool_progress if progress is None else progress
        on_progress = pool_callback if on_progress is None else on_progress
        check_progress(progress, on_progress)
        if not progress and on_progress is None:
            return None
        return Progress(what, total, progress, on_progress)

    def _trace_call(self, method: str, func: Callable, chunksize: int | None) -> int | None:
        """Starts a call's trace record; None when not tracing."""
        if self._recorder is None:
            return None
        return self._recorder.call(method, _qualified_name(func), chunksize)

    def _call_checkpoint(self, checkpoint: Any, key: Any) -> tuple[Any, Callable | None]:
        """This call's checkpoint file and key: the pool's, overridden where
        given (``checkpoint=False`` turns the pool's off)."""
        if checkpoint is None:
            checkpoint = self._checkpoint[0]
        if key is None:
            key = self._checkpoint[1]
        if key is not None and not callable(key):
            raise TypeError(f"checkpoint_key must be a callable, got {key!r}")
        return checkpoint, key

    @staticmethod
    def _check_callable(func: Any) -> None:
        if not callable(func):
            raise TypeError(f"{func!r} is not callable; pass a function")

    def _new_ids(self, n: int) -> int:
        """Reserves ``n`` consecutive task ids; returns the first."""
        with self._id_lock:
            first = self._next_id
            self._next_id += n
        return first

    def _register(self, func: Callable, mode: int, options: _Options) -> int:
        fn_id = next(self._fn_ids)
        self._engine.register_function(fn_id, self._dumps_function(func, mode, options.retry_on))
        return fn_id

    def _cached_function(self, func: Callable, mode: int, options: _Options) -> int:
        """A function id for ``apply_async``/``submit``, reused across calls
        so a function is pickled and sent once, not per task."""
        try:
            key = (func, mode, options.retry_on)
            fn_id = self._functions.get(key)
        except TypeError:  # unhashable callable
            return self._register(func, mode, options)
        if fn_id is not None:
            self._functions.move_to_end(key)
            return fn_id
        fn_id = self._register(func, mode, options)
        self._functions[key] = fn_id
        if len(self._functions) > _FUNCTION_CACHE_SIZE:
            _, old = self._functions.popitem(last=False)
            self._release_function(old)
        return fn_id

    @staticmethod
    def _check_chunksize(chunksize: Any) -> None:
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be a positive int or None, got {chunksize!r}")

    def _auto_chunksize(self, n: int) -> int:
        # As multiprocessing: about four chunks per worker; the engine keeps
        # each worker's queue full, so fewer, larger chunks cost nothing.
        chunksize, extra = divmod(n, self._processes * 4)
        return max(1, chunksize + bool(extra))

    # ------------------------------------------------------------- apply/submit
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
        *,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: Any = None,
    ) -> AsyncResult:
        self._check_running()
        self._check_callable(func)
        options = self._call_options(timeout, retries, retry_on)
        fn_id = self._cached_function(func, MODE_CALL, options)
        task_id = self._new_ids(1)
        result = AsyncResult(
            f"apply({_name(func)})", callback, error_callback, tasks=range(task_id, task_id + 1)
        )
        call = self._trace_call("apply", func, None)
        self._send_one(
            fn_id, task_id, (tuple(args), dict(kwds or {})), result._complete, options, call
        )
        return result

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Runs ``fn(*args, **kwargs)`` in a worker; returns a
        ``concurrent.futures.Future``."""
        self._check_running()
        self._check_callable(fn)
        fn_id = self._cached_function(fn, MODE_CALL, self._options)
        task_id = self._new_ids(1)
        future = _PoolFuture(self._engine, task_id, self._future_condition)
        call = self._trace_call("submit", fn, None)
        self._send_one(fn_id, task_id, (args, kwargs), future._complete, self._options, call)
        return future

    def _send_one(
        self,
        fn_id: int,
        task_id: int,
        args: tuple,
        sink: Callable,
        options: _Options,
        call: int | None = None,
    ) -> None:
        """Sends one task (no list: the ``apply_async``/``submit`` path);
        ``args`` is ``(args, kwargs)``; ``call`` is its trace record."""
        started = time.perf_counter_ns()
        payload = self._dumps(args)
        if call is not None:
            ser_ns = time.perf_counter_ns() - started
            self._recorder.sent(call, task_id, [1], [payload_nbytes(payload)], ser_ns)
        self._pending[task_id] = sink
        try:
            self._engine.submit_one(fn_id, task_id, payload, options.timeout, options.retries)
        except BaseException:
            self._pending.pop(task_id, None)
            raise

    def _send(
        self,
        fn_id: int,
        first_id: int,
        chunks: list[list],
        sink: Callable,
        options: _Options,
        call: int | None = None,
        payloads: list | None = None,
        ser_ns: int = 0,
    ) -> None:
        """Sends ``chunks`` as tasks ``first_id, first_id + 1, ...``, each
        answered to ``sink``; ``call`` is their trace record; ``payloads``
        are the chunks already packed, if they are (``ser_ns`` it took)."""
        if payloads is None:
            started = time.perf_counter_ns()
            payloads = self._dumps_many(chunks)
            ser_ns = time.perf_counter_ns() - started
        if call is not None:
            sizes = [payload_nbytes(p) for p in payloads]
            self._recorder.sent(call, first_id, [len(c) for c in chunks], sizes, ser_ns)
        ids = range(first_id, first_id + len(payloads))
        self._pending.update(dict.fromkeys(ids, sink))
        try:
            self._engine.submit(fn_id, first_id, payloads, options.timeout, options.retries)
        except BaseException:
            for task_id in ids:
                self._pending.pop(task_id, None)
            raise

    # ---------------------------------------------------------------- map family
    def map(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> list:
        """``[func(x) for x in iterable]`` in the workers, in order.
        Keyword options: ``timeout``, ``retries``, ``retry_on`` (per task;
        see ``Pool``); ``progress``, ``on_progress``;
        ``checkpoint="run.sqlite"`` stores each finished result there and a
        re-run computes only the missing ones (``False`` turns the pool's
        default off); ``checkpoint_key=fn`` keys a task by ``fn(item)``
        instead of its pickled arguments."""
        return self._map_async(func, iterable, chunksize, MODE_MAP, None, None, **options).get()

    def map_async(
        self, func, iterable, chunksize=None, callback=None, error_callback=None, **options
    ):
        return self._map_async(
            func, iterable, chunksize, MODE_MAP, callback, error_callback, **options
        )

    def starmap(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ) -> list:
        """``[func(*args) for args in iterable]`` in the workers, in order."""
        return self._map_async(func, iterable, chunksize, MODE_STARMAP, None, None, **options).get()

    def starmap_async(
        self, func, iterable, chunksize=None, callback=None, error_callback=None, **options
    ):
        return self._map_async(
            func, iterable, chunksize, MODE_STARMAP, callback, error_callback, **options
        )

    def _map_async(
        self,
        func,
        iterable,
        chunksize,
        mode,
        callback,
        error_callback,
        *,
        timeout=None,
        retries=None,
        retry_on=None,
        progress=None,
        on_progress=None,
        checkpoint=None,
        checkpoint_key=None,
    ) -> MapResult:
        self._check_running()
        self._check_callable(func)
        self._check_chunksize(chunksize)
        options = self._call_options(timeout, retries, retry_on)
        checkpoint, checkpoint_key = self._call_checkpoint(checkpoint, checkpoint_key)
        if checkpoint:
            from ..checkpoint import call as _checkpoint

            star = mode == MODE_STARMAP
            return _checkpoint.map_async(
                self, func, iterable, chunksize, star, callback, error_callback,
                checkpoint, checkpoint_key, options, (progress, on_progress),
            )  # fmt: skip
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        n = len(items)
        if chunksize is None:
            chunksize = self._auto_chunksize(n)
        if not isinstance(items, list):
            items = list(items)
        chunks = [items[i : i + chunksize] for i in range(0, n, chunksize)]
        method = "starmap" if mode == MODE_STARMAP else "map"
        what = f"{method}({_name(func)})"
        progress = self._call_progress(what, n, progress, on_progress)
        if not chunks:
            if progress is not None:
                progress.close()
            return MapResult(what, 0, 0, callback, error_callback)
        batches = self._dumps_batches(chunks)
        try:
            packed = next(batches)  # pickling errors surface before anything is sent
        except BaseException:
            if progress is not None:
                progress.close()
            raise
        fn_id = self._register(func, mode, options)
        first = self._new_ids(len(chunks))
        release = self._release_function
        sizes = [len(chunk) for chunk in chunks]

        def done() -> None:
            release(fn_id)
            if progress is not None:
                progress.close()

        result = MapResult(what, first, len(chunks), callback, error_callback, on_done=done)
        sink = result._complete
        if progress is not None:

            def sink(task_id, code, payload, duration_ns, _complete=result._complete):
                progress.advance(sizes[task_id - first])
                _complete(task_id, code, payload, duration_ns)

        call = self._trace_call(method, func, chunksize)
        sent = 0
        try:
            # Chunks with arrays in shared memory leave as soon as they are
            # copied, so workers start while the rest are being copied.
            for start, payloads, ser_ns in itertools.chain([packed], batches):
                stop = start + len(payloads)
                chunks_sent = chunks[start:stop]
                self._send(fn_id, first + start, chunks_sent, sink, options, call, payloads, ser_ns)
                sent = stop
        except BaseException:
            # e.g. out of memory copying a later chunk: stop those already sent.
            self._engine.cancel(list(range(first, first + sent)), True)
            done()
            raise
        return result

    def imap(self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options):
        """Lazy ``map``: reads the input as results are consumed."""
        return self._imap(func, iterable, chunksize, True, **options)

    def imap_unordered(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None, **options
    ):
        """Lazy ``map`` yielding results as they complete."""
        return self._imap(func, iterable, chunksize, False, **options)

    def _imap(
        self,
        func,
        iterable,
        chunksize,
        ordered,
        *,
        timeout=None,
        retries=None,
        retry_on=None,
        progress=None,
        on_progress=None,
        checkpoint=None,
        checkpoint_key=None,
    ):
        self._check_running()
        self._check_callable(func)
        self._check_chunksize(chunksize)
        options = self._call_options(timeout, retries, retry_on)
        checkpoint, checkpoint_key = self._call_checkpoint(checkpoint, checkpoint_key)
        if checkpoint:
            from ..checkpoint import call as _checkpoint

            return _checkpoint.imap(
                self, func, iterable, chunksize, ordered, checkpoint, checkpoint_key, options,
                (progress, on_progress),
            )  # fmt: skip
        total = len(iterable) if hasattr(iterable, "__len__") else None
        source = iter(iterable)
        fn_id = self._register(func, MODE_MAP, options)
        name = "imap" if ordered else "imap_unordered"
        what = f"{name}({_name(func)})"
        progress = self._call_progress(what, total, progress, on_progress)
        # Up to 256 chunks ahead keeps every worker's queue full even with
        # chunksize=1; the item bound keeps large automatic chunks in check.
        it = IMapIterator(what, ordered, read_ahead=256)
        self._iterators.add(it)
        call = self._trace_call(name, func, chunksize)
        send = functools.partial(self._send, options=options, call=call)
        feed = _Feed(it, fn_id, send, self._release_function, self._engine.cancel, progress)
        it._feed = feed
        feeder = threading.Thread(
            target=self._feed,
            args=(feed, source, chunksize),
            name="shoal-feeder",
            daemon=True,
        )
        self._feeders = [t for t in self._feeders if t.is_alive()]
        self._feeders.append(feeder)
        feeder.start()
        return it

    def _feed(self, feed: _Feed, source, chunksize: int | None) -> None:
        """The feeder thread: reads the input lazily and submits chunks,
        several per engine call, as room appears. With an automatic chunk
        size, chunks grow until each runs about 5 ms."""
        try:
            while True:
                size = chunksize or _auto_imap_chunk(feed.it.item_ns())
                room = min(feed.it._wait_for_room(size), _IMAP_CHUNKS_PER_SUBMIT)
                if room == 0:
                    return
                chunks, error = [], None
                try:
                    for _ in range(room):
                        chunk = list(itertools.islice(source, size))
                        if not chunk:
                            break
                        chunks.append(chunk)
                except Exception as exc:  # noqa: BLE001 - the input's own error
                    error = exc
                if chunks and not feed.submit(chunks, self._new_ids(len(chunks))):
                    feed.it._end_input()
                    return
                if error is not None or len(chunks) < room:
                    feed.it._end_input(error)
                    return
        finally:
            feed.input_done()

    # ----------------------------------------------------------------- tracing
    def trace(self):
        """What this pool has run so far, as a :class:`shoal.Trace`: every
        call and task, where and when each task ran, its sizes, and where
        its time went. Needs ``Pool(trace=True)``; works after the pool is
        closed or terminated too."""
        if self._recorder is None:
            raise ValueError("this pool does not record a trace; create it with trace=True")
        from ..trace.trace import Trace

        return Trace.from_dict(self._recorder.build(self._engine.workers()))

    # ------------------------------------------------------------ cancellation
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
        ids: list[int] = []
        for result in results:
            if isinstance(result, IMapIterator) and hasattr(result, "_feed"):
                result._feed.cancel()
            elif _is_checkpointed_imap(result):
                result._feed.cancel()
            elif isinstance(result, (_PoolFuture, AsyncResult)):
                ids.extend(result._tasks)
            else:
                raise TypeError(
                    f"pool.cancel() takes results of this pool (a Future, an "
                    f"AsyncResult/MapResult or an imap iterator), got {result!r}"
                )
        if ids:
            self._engine.cancel(ids, True)

    # ----------------------------------------------------------------- lifecycle
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return list(self._engine.worker_pids())

    def close(self) -> None:
        """No new tasks; workers exit once submitted work is done (``join``)."""
        with self._state_lock:
            if self._state == _RUN:
                self._state = _CLOSE
        # join() waits for all input to be read: lift imap's read-ahead bound.
        for it in list(self._iterators):
            it._unbound()

    def terminate(self) -> None:
        """Stops the workers now; unfinished tasks fail with CancelledError."""
        with self._state_lock:
            self._state = _TERMINATE
        for it in list(self._iterators):
            it._stop()
        self._engine.terminate()
        self._engine.join(None)
        self._pump.join()

    def join(self) -> None:
        """Waits for the workers to exit; call ``close`` or ``terminate`` first."""
        if self._state == _RUN:
            raise ValueError("Pool is still running; call close() or terminate() first")
        if self._state == _CLOSE:
            for feeder in self._feeders:
                feeder.join()
            self._engine.close()
        self._engine.join(None)
        self._pump.join()

    @staticmethod
    def _shut(engine, pump) -> None:
        engine.terminate()
        engine.join(5.0)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    def __repr__(self) -> str:
        return f"<shoal.Pool state={self._state} processes={self._processes}>"

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")


def _is_checkpointed_imap(obj: Any) -> bool:
    # The checkpoint module is loaded if such an iterator exists.
    checkpoint = sys.modules.get("shoal.checkpoint.call")
    return checkpoint is not None and isinstance(obj, checkpoint._ResumeIterator)


def _auto_imap_chunk(item_ns: float) -> int:
    if item_ns <= 0:
        return 1
    return int(min(_IMAP_MAX_CHUNK, max(1, _IMAP_CHUNK_TARGET_NS / item_ns)))


def _name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


def _qualified_name(func: Callable) -> str:
    """``module.qualname`` of a function, as traces name it."""
    target = func.func if isinstance(func, functools.partial) else func
    module = getattr(target, "__module__", None)
    name = _name(target)
    return f"{module}.{name}" if module else name
