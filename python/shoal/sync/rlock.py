"""``shoal.RLock``: a re-entrant lock shared between processes, as
``multiprocessing.RLock``. The thread that holds it may take it again; it
is free once released as many times; only that thread may release it. A
holder process that is killed is taken over by the next waiter (see
``shoal_core::rlock``)."""

from __future__ import annotations

import os
import threading

from .. import _shoal
from .sharing import LockLike


class RLock(LockLike):
    """``acquire(block=True, timeout=None)``, ``release()``, ``with lock:``,
    ``locked()``."""

    __slots__ = ()
    _what = "RLock"
    _native = _shoal.SharedRLock
    _size = "rlock"

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
