"""``shoal.Semaphore`` and ``shoal.BoundedSemaphore``: counting semaphores
shared between processes, as multiprocessing's.

The count is a futex word in a memfd. A process that is killed while it
holds units (inside ``with sem:``, say) does not wedge the others: a
waiter that finds the count at zero gives the dead holder's units back,
never raising the count above the value the semaphore was made with (see
``shoal_core::semaphore``). So a semaphore made with 0 and used to signal
gets no spurious signals when a consumer dies.
"""

from __future__ import annotations

from .. import _shoal
from .sharing import SIZES, SharedObject, new_segment

#: multiprocessing's limit (SEM_VALUE_MAX on Linux).
VALUE_MAX = 2**31 - 1


def _check_value(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a semaphore's value must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"semaphore initial value must be >= 0, got {value}")
    if value > VALUE_MAX:
        raise ValueError(f"a semaphore's value must be at most {VALUE_MAX}, got {value}")
    return value


class Semaphore(SharedObject):
    """``Semaphore(value=1)``: ``acquire(block=True, timeout=None)``,
    ``release()``, ``get_value()``, ``with sem:``."""

    __slots__ = ("_sem", "acquire", "release", "get_value")
    _what = "Semaphore"
    _bounded = False

    def __init__(self, value: int = 1) -> None:
        segment = new_segment(SIZES["semaphore"])
        _shoal.SharedSemaphore(segment, 0, _check_value(value), self._bounded)
        self._place(segment)

    def _bind(self) -> None:
        sem = self._sem = _shoal.SharedSemaphore(self._segment, self._offset)
        # The native methods themselves, as Lock's:
        #: ``acquire(block=True, timeout=None)``: takes a unit; False if
        #: none is free and ``block`` is false or time runs out.
        self.acquire = sem.acquire
        #: ``release()``: gives a unit back (a BoundedSemaphore refuses to
        #: go above its initial value: ValueError).
        self.release = sem.release
        self.get_value = sem.get_value

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = type(self).__name__
        if self._bounded:
            return f"<shoal.{kind}(value={self.get_value()}, maxvalue={self._sem.initial})>"
        return f"<shoal.{kind}(value={self.get_value()})>"


class BoundedSemaphore(Semaphore):
    """A Semaphore that raises ValueError if released more times than it
    was acquired (above its initial value)."""

    __slots__ = ()
    _what = "BoundedSemaphore"
    _bounded = True
