"""``shoal.Queue``, ``shoal.JoinableQueue`` and ``shoal.SimpleQueue``:
multi-producer, multi-consumer queues between processes, on one
``SOCK_SEQPACKET`` socketpair (see ``shoal_core::queue``), with their
counts in a memfd (see ``shoal_core::counter``).

Items are pickled as Pool tasks are: large arrays travel in shared memory,
shared arrays, Locks, Values and Queues as handles. ``put`` writes straight
to the socket (there is no feeder thread, so nothing is lost when a
process exits right after a put); it waits only when ``maxsize`` items are
in the queue, or when the socket buffer is full (thousands of small items;
large data does not count, it is in shared memory). ``close()`` closes the
queue for every process: puts fail, and gets take what is left, then raise.

``qsize()`` counts items put and not yet taken; like multiprocessing's, it
is a snapshot that other processes may change at once.
"""

from __future__ import annotations

import queue as _stdlib_queue

from .. import _shoal
from ..errors import QueueClosed
from ..wire.serialize import loads
from ..wire.transfer import pack, unpack
from .sharing import SHARED, SIZES, SharedObject, new_segment

_RAW = -1

Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full

#: Offsets of the counters in a queue's segment.
_COUNT = 0
_UNFINISHED = 8


class Queue(SharedObject):
    """``Queue(maxsize=0)`` (0 or less: no limit): ``put(item, block=True,
    timeout=None)`` (``queue.Full``), ``get(block=True, timeout=None)``
    (``queue.Empty``), ``put_nowait``/``get_nowait``, ``qsize()``,
    ``empty()``, ``full()``, ``close()``, ``join_thread()``."""

    __slots__ = ("_mq", "_maxsize", "_count")
    _what = "Queue"

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {maxsize!r}")
        self._restore(_shoal.MessageQueue(), max(0, maxsize))
        self._place(new_segment(_UNFINISHED + SIZES["counter"]))

    def _shoal_share_(self, attach):
        tx, rx = self._mq.fds()
        return (
            _rebuild_queue, type(self), attach(self._segment, SHARED), self._offset,
            attach(tx, _RAW), attach(rx, _RAW), self._maxsize,
        )  # fmt: skip

    def _restore(self, mq, maxsize: int) -> None:
        self._mq = mq
        self._maxsize = maxsize

    def _bind(self) -> None:
        self._count = _shoal.SharedCounter(self._segment, self._offset + _COUNT)

    # -- putting and getting

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        """Puts ``obj``; waits (as ``block`` and ``timeout`` say) while
        ``maxsize`` items are in the queue, then raises ``queue.Full``."""
        packed = pack(obj)
        body, fds = (packed, ()) if type(packed) is bytes else packed
        wait = _wait(block, timeout)
        if not self._count.increment_below(self._maxsize, wait != 0.0, wait):
            raise Full
        self._on_put()
        try:
            sent = self._mq.put(body, fds, wait)
        except QueueClosed:
            self._taken_back()
            raise ValueError("put() on a closed shoal.Queue: it is closed") from None
        except BaseException:
            self._taken_back()
            raise
        if not sent:
            self._taken_back()
            raise Full

    def _on_put(self) -> None:
        """A JoinableQueue counts the item as unfinished."""

    def _taken_back(self) -> None:
        """A put that failed after it was counted."""
        self._count.decrement()

    def get(self, block: bool = True, timeout: float | None = None):
        """Takes an item; raises ``queue.Empty`` if none came in time, and
        ``ValueError`` once the queue is closed and drained."""
        try:
            got = self._mq.get(_wait(block, timeout))
        except QueueClosed:
            raise ValueError(
                "get() on a closed shoal.Queue: it is closed (by this or another "
                "process) and every item in it has been taken"
            ) from None
        if got is None:
            raise Empty
        try:
            self._count.decrement()
        except ValueError:
            pass  # a putter died between counting and sending: keep going
        body, fds = got
        return unpack(body, fds) if fds else loads(body)

    def put_nowait(self, obj) -> None:
        self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    # -- counts

    def qsize(self) -> int:
        """Items put and not yet taken (a snapshot)."""
        return self._count.get()

    def empty(self) -> bool:
        """Whether no item is waiting (also true once closed and drained)."""
        return self._mq.empty()

    def full(self) -> bool:
        return self._maxsize > 0 and self._count.get() >= self._maxsize

    # -- closing

    def close(self) -> None:
        """No more puts, in any process; gets drain what is left."""
        self._mq.close()

    def join_thread(self) -> None:
        """Returns at once: shoal's queues have no feeder thread (a put has
        reached the socket when it returns), so there is nothing to wait for."""

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (see ``join_thread``)."""

    def __repr__(self) -> str:
        size = "" if not self._maxsize else f", maxsize={self._maxsize}"
        return f"<shoal.{type(self).__name__} qsize={self.qsize()}{size}>"


class JoinableQueue(Queue):
    """A Queue that also counts unfinished items: every ``put`` adds one,
    ``task_done()`` takes one off, and ``join()`` waits until none is left
    (in any process)."""

    __slots__ = ("_unfinished",)
    _what = "JoinableQueue"

    def _bind(self) -> None:
        super()._bind()
        self._unfinished = _shoal.SharedCounter(self._segment, self._offset + _UNFINISHED)

    def _on_put(self) -> None:
        self._unfinished.increment_below(0, False, 0.0)

    def _taken_back(self) -> None:
        super()._taken_back()
        self._unfinished.decrement()

    def task_done(self) -> None:
        """Marks an item taken with ``get`` as finished; ValueError if
        called more times than items were put."""
        try:
            self._unfinished.decrement()
        except ValueError:
            raise ValueError("task_done() called too many times") from None

    def join(self, timeout: float | None = None) -> bool:
        """Waits until every item put has been marked done (at most
        ``timeout`` seconds; returns whether they were)."""
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._unfinished.wait_zero(timeout)


class SimpleQueue(Queue):
    """multiprocessing's SimpleQueue: ``put(item)``, ``get()``,
    ``empty()``, ``close()``; no size limit."""

    __slots__ = ()
    _what = "SimpleQueue"

    def __init__(self) -> None:
        super().__init__()

    def put(self, obj) -> None:  # type: ignore[override]
        super().put(obj)

    def get(self):  # type: ignore[override]
        return super().get()


def _rebuild_queue(attachments, cls, segment: int, offset: int, tx: int, rx: int, maxsize: int):
    q = cls.__new__(cls)
    q._restore(_shoal.MessageQueue(attachments[tx], attachments[rx]), maxsize)
    q._place(attachments[segment], offset)
    return q


def _wait(block: bool, timeout: float | None) -> float | None:
    if not block:
        return 0.0
    if timeout is None:
        return None
    return max(0.0, float(timeout))
