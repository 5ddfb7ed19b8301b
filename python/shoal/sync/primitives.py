"""``shoal.Lock``: a lock in shared memory, usable from every process it
is passed to (Pool tasks, ``shoal.Process``, queues, pipes, a Manager's
containers).

The lock is a futex word in a memfd (see ``shoal_core::lock``): an
uncontended ``with lock:`` makes no system call, a waiter sleeps in the
kernel (Ctrl-C still interrupts it), and a waiter whose holder died holding
the lock takes it over instead of waiting forever.
"""

from __future__ import annotations

import os

from .. import _shoal
from .sharing import LockLike


class Lock(LockLike):
    """A lock shared between processes, as ``multiprocessing.Lock``:
    ``acquire(block=True, timeout=None)``, ``release()``, ``with lock:``,
    ``locked()``. Any process or thread may release it."""

    __slots__ = ()
    _what = "Lock"
    _native = _shoal.SharedLock
    _size = "lock"

    # What a Condition needs of its lock (a Lock records the holder's
    # process, not its thread).
    def _is_owned(self) -> bool:
        return self._lock.held_here()

    def _release_save(self) -> None:
        self._lock.release()

    def _acquire_restore(self, saved: None) -> None:
        self._lock.acquire(True, None)

    def __repr__(self) -> str:
        owner = self._lock.owner()
        if owner is None:
            return "<shoal.Lock unlocked>"
        who = "this process" if owner == os.getpid() else f"process {owner}"
        return f"<shoal.Lock locked by {who}>"
