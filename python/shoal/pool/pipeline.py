"""The one call pipeline: every call of a pool -- ``map``, ``starmap``,
``imap``, ``imap_unordered``, ``apply_async``, ``submit``, with or without a
checkpoint -- is planned, sent, answered and delivered here.

A ``Pipeline`` drives one *set of workers*: any object with the engine's
calls (``pool.workers.ProcessWorkers``, ``pool.threadpool.ThreadWorkers``;
the ranks of an MPI job or an executor front end can be others):

- ``register(fn_id, func, mode, retry_on)``, ``release(fn_id)``;
- ``pack_batches(chunks)`` -> ``(start, payloads, ns)`` ..., ``pack_many``,
  ``pack``; ``submit(fn_id, first_id, chunks, payloads, options)``;
- ``cancel(task_ids, stop_running)``; ``withdraw(task_ids)`` -> the ids it
  cancelled (those no worker held yet); ``held(task_ids)`` -> those a
  worker holds;
- ``wait_completions(timeout)`` -> a batch with ``.output`` and ``.done``
  (``Completion``s), or None once stopped; ``settle(completion)`` (or None)
  turns a completion into what ``decode`` reads; ``pickled``: whether
  payloads are pickles;
- ``close()``, ``terminate()``, ``join(timeout)``.

Its result thread takes completions from the workers and hands each to the
call that sent the task (``pool.call``).
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from types import MethodType

from .._shoal import chunk_size
from ..checkpoint.stage import ChunkStage, ItemStage
from ..errors import ShoalError
from ..wire.serialize import MODE_CALL, MODE_MAP, MODE_STARMAP
from .call import Call, Feeder, OneTask, Sent, name_of
from .options import CALL_KEYS, CallOptions, Options
from .output import deliver
from .progress import Progress
from .results import AsyncResult, IMapIterator, MapResult, PoolFuture

#: Functions kept registered for ``apply_async``/``submit`` reuse.
FUNCTION_CACHE_SIZE = 32


class Pipeline:
    """See the module's docstring. ``defaults``: the pool's options, which
    each call's override."""

    def __init__(self, workers, n_workers: int, defaults: CallOptions, *, recorder=None) -> None:
        self.workers = workers
        self.n_workers = n_workers
        self.defaults = defaults
        self.recorder = recorder
        self._pending: dict[int, Sent] = {}
        self._next_id = 1
        self._id_lock = threading.Lock()
        self._fn_ids = itertools.count(1)
        self._functions: collections.OrderedDict = collections.OrderedDict()
        self._functions_lock = threading.Lock()
        #: The function looked up last, as ``(weak reference, mode,
        #: retry_on, fn_id)``: most calls of ``submit`` repeat it.
        self._last_function: tuple = _NO_FUNCTION
        self.future_condition = threading.Condition()
        self._feeders: list[threading.Thread] = []
        self._iterators: weakref.WeakSet = weakref.WeakSet()
        self._broken: list[BaseException] = []
        self._follow_logging = getattr(workers, "follow_logging", None)
        #: Checkpoint stages with rows kept in the result thread's current
        #: batch, which it hands to their store when the batch is done.
        self.dirty: list = []
        self.thread = threading.Thread(
            target=_take_results,
            args=(workers, self._pending, recorder, self._broken, self.dirty),
            name="shoal-results",
            daemon=True,
        )
        self.thread.start()

    # ------------------------------------------------------------ plumbing
    def new_ids(self, n: int) -> int:
        """Reserves ``n`` consecutive task ids; returns the first."""
        with self._id_lock:
            first = self._next_id
            self._next_id += n
        return first

    def register(self, func: Callable, mode: int, options: Options) -> int:
        fn_id = next(self._fn_ids)
        self.workers.register(fn_id, func, mode, options.retry_on)
        return fn_id

    def cached_function(self, func: Callable, mode: int, options: Options) -> tuple[int, bool]:
        """A function id for ``apply_async``/``submit``, reused across calls
        so a function is pickled and sent once, not per task; and whether
        the call owns it (it is registered for this call alone).

        The cache holds no user object alive: a callable is known by its
        identity and a weak reference, a bound method by its function and
        a weak reference to its object (``obj.method`` is a new object each
        time), so dropping ``obj`` after its task frees it. Thread workers
        take the function itself, not a pickle: nothing to save, so nothing
        is cached for them."""
        retry_on = options.retry_on
        last = self._last_function  # the common case: the same function again
        if last[0]() is func and last[1] == mode and last[2] is retry_on:
            return last[3], False
        if not self.workers.pickled:
            return self.register(func, mode, options), True
        if type(func) is MethodType:
            holder = func.__self__
            key = (id(holder), func.__func__, mode, retry_on)
        else:
            holder = func
            key = (id(func), None, mode, retry_on)
        with self._functions_lock:
            entry = self._functions.get(key)
            if entry is not None and entry[1]() is holder:
                self._functions.move_to_end(key)
                fn_id, ref, old = entry[0], entry[1], None
            else:
                try:
                    ref = weakref.ref(holder)
                except TypeError:  # builtins: held, but they hold nothing of the user's
                    ref = functools.partial(_same, holder)
                fn_id = self.register(func, mode, options)
                old = self._functions.pop(key, None)  # a dead object's: its id was reused
                self._functions[key] = (fn_id, ref)
                if old is None and len(self._functions) > FUNCTION_CACHE_SIZE:
                    _, old = self._functions.popitem(last=False)
            # A bound method is a new object at each call: never the same again.
            if holder is func:
                self._last_function = (ref, mode, retry_on, fn_id)
            elif old is not None and self._last_function[3] == old[0]:
                self._last_function = _NO_FUNCTION
        if old is not None:
            self.workers.release(old[0])
        return fn_id, False

    def send(self, sent: Sent, chunks: list, payloads=None, ser_ns: int = 0) -> None:
        """Hands ``sent``'s tasks to the workers; each answer goes to its call."""
        call = sent.call
        if self._broken:
            raise _broken_error(self._broken[0])
        if payloads is None:
            started = time.perf_counter_ns()
            payloads = self.workers.pack_many(chunks)
            ser_ns = time.perf_counter_ns() - started
        if call.trace is not None:
            self.recorder.sent(
                call.trace, sent.first, sent.sizes, self.workers.sizes(payloads), ser_ns
            )
        ids = range(sent.first, sent.first + len(chunks))
        self._pending.update(dict.fromkeys(ids, sent))
        try:
            self.workers.submit(call.fn_id, sent.first, chunks, payloads, call.options)
        except BaseException:
            for task_id in ids:
                self._pending.pop(task_id, None)
            raise
        if self._broken:  # the result thread stopped; nothing will answer these
            call.fail(_broken_error(self._broken[0]))

    def _starting(self) -> None:
        """Every call starts here: refused if results can no longer arrive;
        the workers' logging level follows the parent's, as it is now."""
        if self._broken:
            raise _broken_error(self._broken[0])
        if self._follow_logging is not None:
            self._follow_logging()  # cheap: reads the root level, writes only a change

    def _call(self, collector, func: Callable, mode: int, options: Options, what: str, **kw):
        self._starting()
        fn_id = self.register(func, mode, options)
        return Call(self, collector, fn_id=fn_id, owns_function=True, options=options, what=what,
                    **kw)  # fmt: skip

    def _traced(self, method: str, func: Callable, chunksize: int | None) -> tuple | None:
        """What a call's trace record says, when the pool traces."""
        if self.recorder is None:
            return None
        return (method, qualified_name(func), chunksize)

    def call_options(self, method: str, given: dict, keys=CALL_KEYS) -> CallOptions:
        """A call's options: the pool's, overridden by the keyword arguments
        the call was given (checked; ``checkpoint=False`` turns the pool's
        checkpoint off)."""
        return CallOptions.of(self.defaults, method, given, keys)

    @staticmethod
    def _progress(what: str, total: int | None, options: CallOptions) -> Progress | None:
        if not options.progress and options.on_progress is None:
            return None
        return Progress(what, total, options.progress, options.on_progress)

    # --------------------------------------------------------------- calls
    def map_async(
        self,
        method: str,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None,
        options: CallOptions,
        callback=None,
        error_callback=None,
        *,
        collector: IMapIterator | None = None,
    ) -> MapResult:
        """``map``/``starmap``: the whole input is cut into chunks and sent
        now; the result is a list in input order, or the results go to
        ``collector`` (an iterator of the caller's making) as they come."""
        path, key, star = options.checkpoint, options.checkpoint_key, method == "starmap"
        items = iterable if isinstance(iterable, list) else list(iterable)
        n = len(items)
        what = f"{method}({name_of(func)})"
        traced = chunksize
        if chunksize is None:
            chunksize = chunk_size(n, self.n_workers, bool(path) and key is None)
        chunks = [items[i : i + chunksize] for i in range(0, n, chunksize)]
        mode = MODE_STARMAP if star else MODE_MAP
        stage = runner = None
        if path:
            stage, runner = _checkpoint_stage(func, star, path, key, chunks=key is None)
        result = MapResult(what, n, callback, error_callback) if collector is None else collector
        if stage is None:
            batches = self.workers.pack_batches(chunks)
            # Pickling errors surface before anything is sent.
            first_batch = next(batches, None)
        reporter = self._progress(what, n, options)
        call = self._call(
            result,
            runner or func,
            MODE_MAP if runner else mode,
            options.task,
            what,
            progress=reporter,
            stage=stage,
            traced=self._traced(method, func, traced),
        )
        try:
            if stage is not None:
                call.feed(chunks, 0)
            elif first_batch is not None:
                # Chunks with arrays in shared memory leave as soon as they
                # are copied, so workers start while the rest are copied.
                for start, payloads, ser_ns in itertools.chain([first_batch], batches):
                    stop = start + len(payloads)
                    call.feed(chunks[start:stop], start * chunksize, payloads, ser_ns)
        except BaseException:
            call.cancel()  # e.g. out of memory copying a later chunk
            call.input_done(n)
            raise
        call.input_done(n)
        return result

    def imap(
        self,
        method: str,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None,
        options: CallOptions,
        *,
        star: bool = False,
        collector: IMapIterator | None = None,
    ) -> IMapIterator:
        """``imap``/``imap_unordered``: a feeder thread reads the input as
        results are consumed. ``star``: the items are argument tuples
        (``func(*item)``). ``collector``: the iterator to fill (one of the
        caller's making), instead of a new ``IMapIterator``."""
        path, key = options.checkpoint, options.checkpoint_key
        total = len(iterable) if hasattr(iterable, "__len__") else None
        what = f"{method}({name_of(func)})"
        stage = runner = None
        if path:
            stage, runner = _checkpoint_stage(func, star, path, key, chunks=False)
        it = IMapIterator(what, method == "imap") if collector is None else collector
        call = self._call(
            it,
            runner or func,
            MODE_STARMAP if star and runner is None else MODE_MAP,
            options.task,
            what,
            progress=self._progress(what, total, options),
            stage=stage,
            traced=self._traced(method, func, chunksize),
            measure=chunksize is None,
        )
        self._iterators.add(it)
        feeder = Feeder(call, iter(iterable), chunksize)
        self._feeders = [t for t in self._feeders if t.is_alive()]
        self._feeders.append(feeder.thread)
        feeder.thread.start()
        return it

    def apply_async(
        self, func: Callable, args, kwargs: dict, options: CallOptions, callback, error_callback
    ) -> AsyncResult:
        what = f"apply({name_of(func)})"
        result = AsyncResult(what, callback, error_callback)
        self._send_one(result, func, (tuple(args), dict(kwargs)), options.task, "apply")
        return result

    def submit(
        self,
        func: Callable,
        args: tuple,
        kwargs: dict,
        options: CallOptions,
        *,
        collector: PoolFuture | None = None,
        name: str | None = None,
        copies=None,
    ) -> PoolFuture:
        """``func(*args, **kwargs)`` as one task. ``collector``: the future to
        fill (one of the caller's making, made with ``future_condition``);
        ``name``: what traces and messages call the task, instead of the
        function's name; ``copies``: a ``wire.kept.CopyCache`` that large
        arguments are copied into once for several calls."""
        future = PoolFuture(self.future_condition) if collector is None else collector
        self._send_one(future, func, (args, kwargs), options.task, "submit", name, copies)
        return future

    def _send_one(self, collector, func, args, options, method, name=None, copies=None) -> None:
        self._starting()
        workers, recorder = self.workers, self.recorder
        started = time.perf_counter_ns() if recorder is not None else 0
        # Pickling errors surface first.
        payload = workers.pack(args) if copies is None else workers.pack(args, False, copies)
        fn_id, owns = self.cached_function(func, MODE_CALL, options)
        task_id = self.new_ids(1)
        if recorder is not None:
            call = recorder.call(method, name or qualified_name(func), None)
            ser_ns = time.perf_counter_ns() - started
            recorder.sent(call, task_id, (1,), workers.sizes([payload]), ser_ns)
        self._pending[task_id] = OneTask(self, collector, task_id, fn_id, owns, method, func, name)
        try:
            workers.submit_one(fn_id, task_id, args, payload, options)
        except BaseException:
            self._pending.pop(task_id, None)
            if owns:
                workers.release(fn_id)
            raise

    # ------------------------------------------------------------ stopping
    def cancel(self, results: tuple) -> None:
        calls = []
        for result in results:
            if not isinstance(result, (AsyncResult, IMapIterator, PoolFuture)):
                raise TypeError(
                    f"pool.cancel() takes results of this pool (a Future, an "
                    f"AsyncResult/MapResult or an imap iterator), got {result!r}"
                )
            call = result._call
            if call is None:
                continue  # finished: nothing to stop
            if call.pipeline is not self:
                raise ValueError(f"{result!r} belongs to another pool")
            calls.append(call)
        for call in calls:
            call.cancel()

    def withdraw_all(self) -> None:
        """Cancels every task no worker holds yet, and stops reading every
        lazy input (``shutdown(cancel_futures=True)``); what workers hold
        runs on."""
        calls, single = set(), []
        for entry in list(self._pending.values()):
            if type(entry) is OneTask:
                single.append(entry.task_id)
            else:
                calls.add(entry.call)
        for call in list(self._iterators):
            if call._call is not None:
                calls.add(call._call)
        for call in calls:
            call.cancel(stop_running=False)
        # Withdrawn at once, so their results say so when this returns.
        for task_id in self.workers.withdraw(single) if single else ():
            entry = self._pending.get(task_id)
            if entry is not None:
                entry.collector.put(0, 1, False, CancelledError(f"{entry.what} was cancelled"))

    def close(self) -> None:
        # join() waits for all input to be read: lift imap's read-ahead bound.
        for it in list(self._iterators):
            it.unbound()

    def reading(self) -> bool:
        """Whether a call is still reading its lazy input."""
        return any(feeder.is_alive() for feeder in self._feeders)

    def join_feeders(self) -> None:
        for feeder in self._feeders:
            feeder.join()

    def stop_iterators(self) -> None:
        for it in list(self._iterators):
            it.stop()


def _take_results(workers, pending: dict, recorder, broken: list, dirty: list) -> None:
    """The result thread: takes completions from the workers and hands each
    to the call that sent its task. Holds no reference to the pool, so an
    abandoned pool can be collected. Nothing a call does ends it (a call's
    own errors fail that call); if it ends anyway, every waiting call fails."""
    settle = workers.settle
    pop = pending.pop
    try:
        while True:
            batch = workers.wait_completions(None)
            if batch is None:
                return
            if batch.output:
                deliver(batch.output)  # a task's prints before its result
            done = batch.done
            if recorder is not None:
                recorder.completed(done)
            for c in done:
                if settle is not None:
                    c = settle(c)
                sent = pop(c.task_id, None)
                if sent is not None:
                    sent.complete(c)
            for stage in dirty:
                stage.write_rows()
            dirty.clear()
            # Drop references while blocked, so finished results (and the
            # task arguments they hold) can be freed.
            batch = done = c = sent = None
    except BaseException as exc:  # noqa: BLE001 - reported to every waiting call
        broken.append(exc)
        error = _broken_error(exc)
        waiting = {getattr(entry, "call", entry) for entry in list(pending.values())}
        pending.clear()
        for call in waiting:
            call.fail(error)


def _broken_error(cause: BaseException) -> ShoalError:
    error = ShoalError(
        f"this pool's result thread stopped ({type(cause).__name__}: {cause}); "
        "no more results can arrive: terminate the pool and start a new one"
    )
    error.__cause__ = cause
    return error


def _checkpoint_stage(func, star: bool, path, key, chunks: bool):
    """The checkpoint stage of a call and the function its workers run."""
    if chunks:
        return ChunkStage(func, star, path), None
    stage = ItemStage(func, star, path, key)
    return stage, stage.runner


def _no_object() -> None:
    return None


#: No function looked up yet: its reference answers None.
_NO_FUNCTION = (_no_object, None, None, 0)


def _same(obj):
    """A strong reference that answers as a weak one does."""
    return obj


def qualified_name(func: Callable) -> str:
    """``module.qualname`` of a function, as traces name it."""
    target = func.func if isinstance(func, functools.partial) else func
    module = getattr(target, "__module__", None)
    name = name_of(target)
    return f"{module}.{name}" if module else name
