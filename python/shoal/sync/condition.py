"""``shoal.Condition``: a condition variable shared between processes, as
``multiprocessing.Condition``: ``wait(timeout)``, ``wait_for(predicate,
timeout)``, ``notify(n=1)``, ``notify_all()``, used with its lock held.

Its lock is a ``shoal.RLock`` unless one is given (a ``shoal.Lock`` or
``shoal.RLock``). The waiting part lives in a memfd (see
``shoal_core::condvar``): ``notify(n)`` releases exactly ``min(n,
waiting)`` waiters. A holder of the lock that is killed is taken over as
with any shoal lock.
"""

from __future__ import annotations

import time

from .. import _shoal
from .primitives import Lock
from .rlock import RLock
from .sharing import SIZES, SharedObject, new_segment


class Condition(SharedObject):
    __slots__ = ("_lock", "_cv", "acquire", "release")
    _what = "Condition"

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError(
                f"a shoal.Condition needs a shoal.Lock or shoal.RLock (shared between "
                f"processes), not {type(lock).__qualname__}"
            )
        self._restore(lock)
        self._place(new_segment(SIZES["condvar"]))

    def _state(self) -> tuple:
        return (self._lock,)

    def _restore(self, lock) -> None:
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def _bind(self) -> None:
        self._cv = _shoal.SharedCondvar(self._segment, self._offset)

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info) -> None:
        self._lock.__exit__(*exc_info)

    def _check_owned(self, what: str) -> None:
        if not self._lock._is_owned():
            raise RuntimeError(f"cannot {what} on un-acquired lock")

    def wait(self, timeout: float | None = None) -> bool:
        """Releases the lock, sleeps until notified (at most ``timeout``
        seconds) and takes the lock again; False if the time ran out."""
        self._check_owned("wait")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        cv = self._cv
        seq = cv.enter()
        saved = self._lock._release_save()
        claimed = False
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                cv.sleep(seq, left)
                self._lock._acquire_restore(saved)
                saved = None
                if cv.claim():
                    claimed = True
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    cv.leave()
                    claimed = True  # accounted for
                    return False
                seq = cv.current()
                saved = self._lock._release_save()
        finally:
            if not claimed:
                # Interrupted (Ctrl-C): hold the lock again, as
                # threading.Condition does, and pass on a wake-up meant for
                # this waiter.
                if saved is not None:
                    self._lock._acquire_restore(saved)
                if cv.claim():
                    cv.notify(1)
                else:
                    cv.leave()

    def wait_for(self, predicate, timeout: float | None = None):
        """Waits until ``predicate()`` is true (at most ``timeout``
        seconds); returns the predicate's last value."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wait(left)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters (the lock must be held)."""
        self._check_owned("notify")
        if n > 0:
            self._cv.notify(min(n, 2**32 - 1))

    def notify_all(self) -> None:
        self.notify(2**32 - 1)

    def __repr__(self) -> str:
        waiting, _ = self._cv.counts()
        return f"<shoal.Condition({self._lock!r}, {waiting} waiting)>"
