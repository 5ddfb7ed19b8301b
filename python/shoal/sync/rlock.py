"""``shoal.RLock``: a re-entrant lock shared between processes, as
``multiprocessing.RLock``. The thread that holds it may take it again; it
is free once released as many times; only that thread may release it. A
holder process that is killed is taken over by the next waiter (see
``shoal_core::rlock``)."""

from __future__ import annotations

import os
import threading

from .. import _shoal
from .sharing import SIZES, SharedObject, new_segment


class RLock(SharedObject):
    """``acquire(block=True, timeout=None)``, ``release()``, ``with lock:``,
    ``locked()``."""

    __slots__ = ("_lock", "acquire", "release", "locked")
    _what = "RLock"

    def __init__(self) -> None:
        self._place(new_segment(SIZES["rlock"]))

    def _bind(self) -> None:
        lock = self._lock = _shoal.SharedRLock(self._segment, self._offset)
        # The native methods themselves, as Lock's:
        #: ``acquire(block=True, timeout=None)``: takes a level; False if
        #: another thread holds it and ``block`` is false or time runs out.
        self.acquire = lock.acquire
        #: ``release()``: releases a level; RuntimeError if this thread
        #: does not hold it.
        self.release = lock.release
        self.locked = lock.locked

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    # What a Condition needs of its lock.
    def _is_owned(self) -> bool:
        return self._lock.held_by_me()

    def _release_save(self) -> int:
        return self._lock.release_all()

    def _acquire_restore(self, saved: int) -> None:
        self._lock.acquire(True, None)
        self._lock.restore(saved)

    def __repr__(self) -> str:
        holder = self._lock.holder()
        if holder is None:
            return "<shoal.RLock unlocked>"
        pid, tid, count = holder
        if pid == os.getpid():
            who = "this thread" if tid == threading.get_native_id() else "another thread"
        else:
            who = f"process {pid}"
        return f"<shoal.RLock held by {who}, {count} level{'s' if count != 1 else ''}>"
