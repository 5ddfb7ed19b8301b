"""What a call returns, and what its pipeline fills in: ``AsyncResult``
(``apply_async``), ``MapResult`` (``map_async``), the ``imap`` iterators
and the futures of ``submit``.

Each is a *collector* for its call (``pool.call.Call``): the pool's result
thread hands it runs of outcomes with ``put(position, n, ok, value)`` --
``n`` items from ``position`` on: their values (a list; for a single call,
the value itself), or the exception that failed them -- and ``end(error)``
once every item is answered (and stored, with a checkpoint).
"""

from __future__ import annotations

import collections
import concurrent.futures
import sys
import threading
import time
import traceback
from collections.abc import Callable

# Raised by ``get(timeout)`` and ``next(timeout)``: multiprocessing's own
# class, so ``except multiprocessing.TimeoutError`` keeps working.
from multiprocessing import TimeoutError  # noqa: A004
from typing import Any

__all__ = ["AsyncResult", "IMapIterator", "MapResult", "PoolFuture", "TimeoutError", "call_back"]


def call_back(fn: Callable | None, *args: Any) -> None:
    """Runs a user callback on the result thread; a raising callback is
    reported, never allowed to stop result delivery."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        print("shoal: exception in a result callback:", file=sys.stderr)
        traceback.print_exc()


class AsyncResult:
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``."""

    def __init__(self, what: str, callback=None, error_callback=None) -> None:
        self._call = None  # the call that fills it, for cancel and Ctrl-C
        self._event = threading.Event()
        self._what = what
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        try:
            ready = self._event.wait(timeout)
        except KeyboardInterrupt:
            # The caller gave up on the call: so do its workers.
            if self._call is not None:
                self._call.cancel()
            raise
        if not ready:
            raise TimeoutError(f"{self._what} did not finish within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def _set(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        # As multiprocessing: the callback runs before the result is ready,
        # so `r.wait(); use(what_the_callback_stored)` is safe.
        call_back(self._callback if success else self._error_callback, value)
        self._event.set()

    # --- collector
    def input_done(self, total: int) -> None:
        pass  # the result is complete when the call ends

    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        if not self._event.is_set():
            self._set(ok, value)

    def end(self, error: BaseException | None) -> None:
        if not self._event.is_set():
            self._set(False, error or RuntimeError(f"shoal internal error: {self._what} ended"))


class MapResult(AsyncResult):
    """The result of ``map_async``: a list, in input order. The first failed
    chunk makes it ready (as in multiprocessing); later ones are ignored."""

    def __init__(self, what: str, n_items: int, callback=None, error_callback=None) -> None:
        super().__init__(what, callback, error_callback)
        self._out: list | None = [None] * n_items

    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        out = self._out
        if out is None:
            return  # already failed
        if ok:
            out[position : position + n] = value
        else:
            self._out = None
            self._set(False, value)

    def end(self, error: BaseException | None) -> None:
        out, self._out = self._out, None
        if self._event.is_set():
            return
        if error is not None:
            self._set(False, error)
        else:
            self._set(True, out)


class IMapIterator:
    """Results of ``imap`` (in order) or ``imap_unordered`` (as they come).
    The call's feeder thread reads the input lazily, while fewer than
    ``READ_AHEAD_ITEMS`` items and ``READ_AHEAD_CHUNKS`` chunks wait to be
    consumed (one chunk may be larger), so memory stays flat even for an
    infinite input. 256 chunks keep every worker's queue full even with
    ``chunksize=1``."""

    #: Most input items, and chunks, read but not yet consumed.
    READ_AHEAD_ITEMS = 8192
    READ_AHEAD_CHUNKS = 256

    def __init__(self, what: str, ordered: bool) -> None:
        self._call = None
        self._what = what
        self._ordered = ordered
        self._read_ahead = self.READ_AHEAD_ITEMS
        self._read_ahead_chunks = self.READ_AHEAD_CHUNKS
        self._ahead = 0  # items read and not yet consumed
        self._chunks_ahead = 0  # chunks read, less runs of outcomes consumed
        self._cond = threading.Condition()
        # Runs (n, ok, value): by position when ordered, else as they came.
        self._by_position: dict[int, tuple[int, bool, Any]] = {}
        self._arrived: collections.deque = collections.deque()
        self._next_position = 0
        self._buffer: collections.deque = collections.deque()  # values to yield
        self._total: int | None = None  # items, once the input is exhausted
        self._consumed = 0
        self._ended = False
        self._error: BaseException | None = None  # raised once at the end
        self._stopped = False
        self._input_closed = False  # read no more input; deliver what was read

    # --- the feeder's side
    def wait_for_room(self, chunk: int, most: int) -> int:
        """Blocks while enough is ahead of the consumer; then reserves room
        and returns how many chunks of ``chunk`` items (at most ``most``) may
        be read now (0: read no more)."""
        with self._cond:
            while True:
                if self._stopped or self._ended or self._input_closed:
                    return 0
                room = min(
                    (self._read_ahead - self._ahead) // chunk,
                    self._read_ahead_chunks - self._chunks_ahead,
                    most,
                )
                if room > 0 or self._ahead == 0:
                    room = max(room, 1)  # one chunk larger than the bound
                    self._ahead += room * chunk
                    self._chunks_ahead += room
                    return room
                self._cond.wait()

    def unreserve(self, items: int, chunks: int) -> None:
        """Gives back room reserved for items (and chunks) the input did not
        have."""
        with self._cond:
            self._ahead -= items
            self._chunks_ahead -= chunks
            self._cond.notify_all()

    def input_done(self, total: int) -> None:
        with self._cond:
            self._total = total
            self._cond.notify_all()

    def unbound(self) -> None:
        """No read-ahead bound any more (``close()``: all input is read)."""
        with self._cond:
            self._read_ahead = self._read_ahead_chunks = sys.maxsize
            self._cond.notify_all()

    def close_input(self) -> None:
        """Read no more of the input; the results of what was read still
        come (an executor's ``map`` with ``buffersize``, at shutdown)."""
        with self._cond:
            self._input_closed = True
            self._cond.notify_all()

    def stop(self) -> None:
        """The pool was terminated: read no more, and end the iteration."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # --- collector
    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._by_position[position] = (n, ok, value)
            else:
                self._arrived.append((n, ok, value))
            self._cond.notify_all()

    def end(self, error: BaseException | None) -> None:
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    # --- the consumer's side
    def __iter__(self):
        return self

    def next(self, timeout: float | None = None):  # noqa: A003 - multiprocessing's name
        if self._buffer:
            return self._buffer.popleft()
        try:
            return self._next(timeout)
        except KeyboardInterrupt:
            if self._call is not None:
                self._call.cancel()
            raise

    __next__ = next  # type: ignore[assignment]  # noqa: A003

    def _next(self, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._buffer:
                    return self._buffer.popleft()
                run = self._take()
                if run is not None:
                    n, ok, value = run
                    self._consumed += n
                    self._ahead -= n
                    self._chunks_ahead = max(0, self._chunks_ahead - 1)
                    self._cond.notify_all()
                    if not ok:
                        raise value
                    self._buffer.extend(value)
                    continue
                if self._stopped or (
                    self._ended and (self._total is None or self._consumed >= self._total)
                ):
                    error, self._error = self._error, None
                    if error is not None:
                        raise error
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result from {self._what} within {timeout} s")
                self._cond.wait(remaining)

    def _take(self):
        if self._ordered:
            run = self._by_position.pop(self._next_position, None)
            if run is not None:
                self._next_position += run[0]
            return run
        return self._arrived.popleft() if self._arrived else None


_PENDING, _RUNNING = "PENDING", "RUNNING"
_CANCELLED, _FINISHED = "CANCELLED", "FINISHED"
_FINAL_STATES = ("FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED")


class PoolFuture(concurrent.futures.Future):
    """A real ``concurrent.futures.Future`` (``as_completed``, ``wait`` and
    ``asyncio.wrap_future`` work), tuned for many small tasks:

    - the stdlib builds a ``threading.Condition`` per future, which costs
      more than shoal's whole dispatch of a task; here the futures of one
      pool share one condition. A notification may then be meant for another
      future, so ``result`` and ``exception`` wait in a loop until their own
      future is done (the stdlib's wait once), and a finished future's
      result is read without the lock. A future makes its list of
      callbacks only when it is given one: most have none, and an object
      fewer per task is less for the garbage collector to track;
    - the engine does not report each task's start (that would cost a
      message per task), so the state is asked for when it matters:
      ``cancel()`` withdraws the task from the engine's queue and succeeds
      only if no worker held it yet, and ``running()`` asks whether a worker
      holds it. As in the standard ``ProcessPoolExecutor``, whose call queue
      holds tasks ahead of the workers, a task a worker holds counts as
      running, even while it waits behind the worker's current task.
    """

    def __init__(self, condition: threading.Condition) -> None:  # noqa: D107
        # Future.__init__ is not called: it would build a condition of its own.
        self._condition = condition
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._call = None

    #: No callbacks: the class's empty tuple, until ``add_done_callback``
    #: gives the future a list of its own.
    _done_callbacks: list | tuple = ()

    def add_done_callback(self, fn) -> None:
        with self._condition:
            if type(self._done_callbacks) is tuple:
                self._done_callbacks = []
        super().add_done_callback(fn)

    def _wait_final(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in _FINAL_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise concurrent.futures.TimeoutError()
                self._condition.wait(remaining)

    def result(self, timeout: float | None = None):
        # A finished future's value is read without the lock: its state
        # becomes FINISHED, under the lock, after the value is stored, and
        # never changes again.
        if self._state == _FINISHED and self._exception is None:
            return self._result
        self._wait_final(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None):
        if self._state == _FINISHED:  # as in ``result``
            return self._exception
        self._wait_final(timeout)
        return super().exception(0)

    def cancel(self) -> bool:
        if self._state == _PENDING:
            call = self._call
            if call is not None and not call.withdraw():
                # A worker holds it: it runs, as a running future does.
                self._mark_running()
                return False
        return super().cancel()

    def running(self) -> bool:
        if self._state == _PENDING:
            call = self._call
            if call is not None and call.held():
                self._mark_running()
        return super().running()

    def _mark_running(self) -> None:
        with self._condition:
            if self._state == _PENDING:
                self._state = _RUNNING

    # --- collector
    def input_done(self, total: int) -> None:
        pass

    def put(self, position: int, n: int, ok: bool, value: Any) -> None:
        if (
            type(value) is concurrent.futures.CancelledError
        ):  # withdrawn, pool.cancel(), terminate()
            self._cancelled_by_pool()
            return
        with self._condition:
            state = self._state
            if state == _PENDING:
                self._state = _RUNNING
            elif state == _CANCELLED:  # cancel() won: the result is dropped
                self.set_running_or_notify_cancel()
                return
            elif state != _RUNNING:
                return
        if ok:
            self.set_result(value)
        else:
            self.set_exception(value)

    def _cancelled_by_pool(self) -> None:
        """The task ended cancelled: by ``cancel()`` (then this notifies
        waiters, as an executor does when it drops a cancelled task), or by
        ``pool.cancel()``/``terminate()``, even while it ran."""
        with self._condition:
            state = self._state
            if state == _PENDING or state == _RUNNING:
                self._state = _CANCELLED
                self._condition.notify_all()
            elif state != _CANCELLED:
                return  # finished, or cancelled and notified already
        if state != _CANCELLED:
            self._invoke_callbacks()
        self.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED

    def end(self, error: BaseException | None) -> None:
        if error is not None and not self.done():
            self.put(0, 1, False, error)
