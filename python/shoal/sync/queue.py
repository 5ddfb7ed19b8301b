"""``shoal.Queue``: a multi-producer, multi-consumer queue between
processes, on one ``SOCK_SEQPACKET`` socketpair (see ``shoal_core::queue``).

Items are pickled as Pool tasks are: large arrays travel in shared memory,
shared arrays, Locks, Values and Queues as handles. ``put`` blocks only
when the socket buffer is full (thousands of small items; large data does
not count, it is in shared memory). ``close()`` closes the queue for every
process: puts fail, and gets take what is left, then raise.
"""

from __future__ import annotations

import queue as _stdlib_queue

from .. import _shoal
from ..errors import QueueClosed
from ..wire.serialize import loads
from ..wire.transfer import pack, unpack

_RAW = -1

Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full


class Queue:
    """``put(item, block=True, timeout=None)``, ``get(block=True,
    timeout=None)`` (``queue.Empty`` when nothing came), ``empty()``,
    ``close()``, ``put_nowait``/``get_nowait``."""

    __slots__ = ("_mq",)

    def __init__(self) -> None:
        self._mq = _shoal.MessageQueue()

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        packed = pack(obj)
        body, fds = (packed, ()) if type(packed) is bytes else packed
        try:
            sent = self._mq.put(body, fds, _wait(block, timeout))
        except QueueClosed:
            raise ValueError("put() on a closed shoal.Queue") from None
        if not sent:
            raise Full

    def get(self, block: bool = True, timeout: float | None = None):
        try:
            got = self._mq.get(_wait(block, timeout))
        except QueueClosed:
            raise ValueError(
                "get() on a closed shoal.Queue: it was closed (by this or another "
                "process) and every item in it has been taken"
            ) from None
        if got is None:
            raise Empty
        body, fds = got
        return unpack(body, fds) if fds else loads(body)

    def put_nowait(self, obj) -> None:
        self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def empty(self) -> bool:
        return self._mq.empty()

    def close(self) -> None:
        """No more puts, in any process; gets drain what is left."""
        self._mq.close()

    def _shoal_share_(self, attach):
        tx, rx = self._mq.fds()
        return (_rebuild_queue, attach(tx, _RAW), attach(rx, _RAW))

    def __reduce__(self):
        raise TypeError(
            "a shoal.Queue can be passed to shoal Pool tasks and Processes and through "
            "another shoal.Queue, but not pickled otherwise"
        )

    def __repr__(self) -> str:
        return f"<shoal.Queue {'empty' if self.empty() else 'not empty'}>"


def _wait(block: bool, timeout: float | None) -> float | None:
    if not block:
        return 0.0
    if timeout is None:
        return None
    return max(0.0, float(timeout))


def _rebuild_queue(attachments, tx: int, rx: int) -> Queue:
    q = Queue.__new__(Queue)
    q._mq = _shoal.MessageQueue(attachments[tx], attachments[rx])
    return q
