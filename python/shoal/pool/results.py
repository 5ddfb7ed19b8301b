"""Result objects: ``AsyncResult`` / ``MapResult`` (as multiprocessing's)
and the ``imap`` iterators. The pool's result thread completes them."""

from __future__ import annotations

import collections
import sys
import threading
import traceback
from collections.abc import Callable

# Raised by ``get(timeout)`` and ``next(timeout)``: multiprocessing's own
# class, so ``except multiprocessing.TimeoutError`` keeps working.
from multiprocessing import TimeoutError  # noqa: A004
from typing import Any

from .outcome import decode


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

    def __init__(
        self, what: str, callback=None, error_callback=None, tasks: range = range(0)
    ) -> None:
        self._tasks = tasks  # the engine's task ids behind this result
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
        if not self._event.wait(timeout):
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

    # Engine completion for the single task.
    def _complete(self, task_id: int, code: int, payload, duration_ns: int) -> None:
        self._set(*decode(code, payload, self._what))


class MapResult(AsyncResult):
    """The result of ``map_async``: a list, in input order. The first failed
    chunk makes it ready (as in multiprocessing); later chunks are ignored."""

    def __init__(
        self, what, first_task, n_chunks, callback=None, error_callback=None, on_done=None
    ):
        super().__init__(what, callback, error_callback, range(first_task, first_task + n_chunks))
        self._first = first_task
        self._chunks: list[Any] = [None] * n_chunks
        self._left = n_chunks
        self._on_done = on_done
        if n_chunks == 0:
            self._finish(True, [])

    def _finish(self, success: bool, value: Any) -> None:
        if self._on_done is not None:
            self._on_done()
        self._set(success, value)

    def _complete(self, task_id: int, code: int, payload, duration_ns: int) -> None:
        if self._event.is_set():
            return
        ok, value = decode(code, payload, self._what)
        if not ok:
            self._chunks = []
            self._finish(False, value)
            return
        self._chunks[task_id - self._first] = value
        self._left -= 1
        if self._left == 0:
            out = [x for chunk in self._chunks for x in chunk]
            self._chunks = []
            self._finish(True, out)


class IMapIterator:
    """Results of ``imap`` (ordered) or ``imap_unordered``. A feeder thread
    reads the input lazily and submits chunks while fewer than
    ``read_ahead`` chunks and ``READ_AHEAD_ITEMS`` items are waiting to be
    consumed, so memory stays flat even for an infinite input."""

    #: Most input items read but not yet consumed (one chunk may exceed it).
    READ_AHEAD_ITEMS = 8192

    def __init__(self, what: str, ordered: bool, read_ahead: int) -> None:
        self._what = what
        self._ordered = ordered
        self._read_ahead = read_ahead
        self._read_ahead_items = self.READ_AHEAD_ITEMS
        self._items_ahead = 0  # items submitted and not yet consumed
        self._cond = threading.Condition()
        # ordered: chunk number -> (ok, values | exc); unordered: arrival order.
        self._by_number: dict[int, tuple[bool, Any]] = {}
        self._arrived: collections.deque = collections.deque()
        self._buffer: collections.deque = collections.deque()
        self._next_number = 0  # next chunk to yield (ordered)
        self._submitted = 0  # chunks handed to the engine
        self._consumed = 0  # chunks taken by the consumer
        self._total: int | None = None  # chunk count, once the input is exhausted
        self._item_ns = 0.0  # measured run time per item, smoothed
        self._stopped = False

    # --- feeder side -------------------------------------------------------
    def _wait_for_room(self, chunk_size: int) -> int:
        """Blocks while enough is ahead of the consumer; returns how many
        chunks of ``chunk_size`` may be read now (0: the iterator was
        abandoned because the pool was terminated)."""
        with self._cond:
            while True:
                if self._stopped:
                    return 0
                chunks = self._read_ahead - (self._submitted - self._consumed)
                items = self._read_ahead_items - self._items_ahead
                room = min(chunks, items // chunk_size)
                if room > 0:
                    return room
                if chunks > 0 and self._items_ahead == 0:
                    return 1  # one chunk larger than the item bound
                self._cond.wait()

    def _note_submitted(self, n_items: int) -> int:
        """Counts a chunk of ``n_items`` as submitted; returns its number."""
        with self._cond:
            number = self._submitted
            self._submitted += 1
            self._items_ahead += n_items
            return number

    def _end_input(self, error: BaseException | None = None) -> None:
        with self._cond:
            if error is not None:
                number = self._submitted
                self._submitted += 1
                self._deliver(number, False, error, 0)
            self._total = self._submitted
            self._cond.notify_all()

    def _fail_chunk(self, number: int, n_items: int, exc: BaseException) -> None:
        with self._cond:
            self._deliver(number, False, exc, n_items)

    def _unbound(self) -> None:
        with self._cond:
            self._read_ahead = self._read_ahead_items = sys.maxsize
            self._cond.notify_all()

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def item_ns(self) -> float:
        return self._item_ns

    # --- result thread side ------------------------------------------------
    def _deliver(self, number: int, ok: bool, value: Any, n_items: int) -> None:
        if self._ordered:
            self._by_number[number] = (ok, value, n_items)
        else:
            self._arrived.append((ok, value, n_items))
        self._cond.notify_all()

    def _complete_chunk(self, number: int, n_items: int, code, payload, duration_ns) -> None:
        ok, value = decode(code, payload, self._what)
        with self._cond:
            if ok and n_items:
                per_item = duration_ns / n_items
                self._item_ns = (
                    per_item if not self._item_ns else 0.7 * self._item_ns + 0.3 * per_item
                )
            self._deliver(number, ok, value, n_items)

    # --- consumer side -----------------------------------------------------
    def __iter__(self):
        return self

    def next(self, timeout: float | None = None):  # noqa: A003 - multiprocessing's name
        if self._buffer:
            return self._buffer.popleft()
        with self._cond:
            while True:
                if self._buffer:
                    return self._buffer.popleft()
                got = self._take_chunk()
                if got is not None:
                    ok, value, n_items = got
                    self._consumed += 1
                    self._items_ahead -= n_items
                    self._cond.notify_all()
                    if not ok:
                        raise value
                    self._buffer.extend(value)
                    continue
                if self._total is not None and self._consumed >= self._total:
                    raise StopIteration
                if self._stopped:
                    raise StopIteration
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no result from {self._what} within {timeout} s")

    __next__ = next  # type: ignore[assignment]  # noqa: A003

    def _take_chunk(self):
        if self._ordered:
            got = self._by_number.pop(self._next_number, None)
            if got is not None:
                self._next_number += 1
            return got
        return self._arrived.popleft() if self._arrived else None
