"""``shoal.Lock`` and ``shoal.Value``: a lock and a number in shared
memory, usable from every process they are passed to (Pool tasks,
``shoal.Process``, through a ``shoal.Queue``).

The lock is a futex word in a shared page (see ``shoal_core::lock``): an
uncontended ``with lock:`` makes no system call, a waiter sleeps in the
kernel (Ctrl-C still interrupts it), and a waiter whose holder died holding
the lock takes it over instead of waiting forever.
"""

from __future__ import annotations

import struct

from .. import _shoal

_LOCK_SIZE = 8
_SHARED = _shoal.ACCESS_SHARED
#: struct/array typecodes a Value may hold.
_TYPECODES = frozenset("bBhHiIlLqQfd?c")


def _not_picklable(what: str) -> TypeError:
    return TypeError(
        f"a shoal.{what} can be passed to shoal Pool tasks and Processes (as an argument, "
        "an initializer argument or in a closure) and through a shoal.Queue, but not "
        "pickled otherwise"
    )


class Lock:
    """A lock shared between processes, as ``multiprocessing.Lock``:
    ``acquire(block=True, timeout=None)``, ``release()``, ``with lock:``.
    Any process or thread may release it."""

    __slots__ = ("_segment", "_offset", "_lock")

    def __init__(self) -> None:
        self._attach(_shoal.Segment.create(_LOCK_SIZE), 0)

    def _attach(self, segment, offset: int) -> None:
        self._segment = segment
        self._offset = offset
        self._lock = _shoal.SharedLock(segment, offset)

    @classmethod
    def _at(cls, segment, offset: int) -> Lock:
        lock = cls.__new__(cls)
        lock._attach(segment, offset)
        return lock

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Takes the lock; False if ``block`` is false and it is held, or if
        ``timeout`` seconds pass first."""
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Frees the lock; ValueError if it is not held."""
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _shoal_share_(self, attach):
        return (_rebuild_lock, attach(self._segment, _SHARED), self._offset)

    def __reduce__(self):
        raise _not_picklable("Lock")

    def __repr__(self) -> str:
        return f"<shoal.Lock {'locked' if self.locked() else 'unlocked'}>"


def _rebuild_lock(attachments, index: int, offset: int) -> Lock:
    return Lock._at(attachments[index], offset)


def _typecode(typecode_or_type) -> str:
    code = getattr(typecode_or_type, "_type_", typecode_or_type)  # ctypes types
    if not isinstance(code, str) or code not in _TYPECODES:
        raise TypeError(
            f"a shoal.Value holds one of the typecodes {''.join(sorted(_TYPECODES))} "
            f"(or the matching ctypes type, e.g. ctypes.c_double), not {typecode_or_type!r}"
        )
    return code


class Value:
    """A number in shared memory, as ``multiprocessing.Value``:
    ``Value('i', 0)`` or ``Value(ctypes.c_double, 1.5)``; read and write
    ``.value``; ``get_lock()`` is the lock that goes with it.

    ``v.value += 1`` is a read and then a write: two processes doing it at
    once can lose an update. ``with v.get_lock(): v.value += 1`` cannot.
    """

    __slots__ = ("_segment", "_code", "_view", "_lock")

    def __init__(self, typecode_or_type, *args, lock: bool | Lock = True) -> None:
        code = _typecode(typecode_or_type)
        segment = _shoal.Segment.create(_LOCK_SIZE + struct.calcsize(code))
        if isinstance(lock, Lock):
            own_lock = lock
        elif lock is True:
            own_lock = Lock._at(segment, 0)
        elif lock is False:
            own_lock = None
        else:
            raise TypeError(f"lock must be True, False or a shoal.Lock, got {lock!r}")
        self._attach(segment, code, own_lock)
        if args:
            (self.value,) = args

    def _attach(self, segment, code: str, lock: Lock | None) -> None:
        self._segment = segment
        self._code = code
        size = struct.calcsize(code)
        self._view = memoryview(segment)[_LOCK_SIZE : _LOCK_SIZE + size].cast(code)
        self._lock = lock

    @property
    def value(self):
        return self._view[0]

    @value.setter
    def value(self, new) -> None:
        self._view[0] = new

    def get_lock(self) -> Lock:
        if self._lock is None:
            raise AttributeError("this Value was made with lock=False; it has no lock")
        return self._lock

    def _shoal_share_(self, attach):
        return (_rebuild_value, attach(self._segment, _SHARED), self._code, self._lock)

    def __reduce__(self):
        raise _not_picklable("Value")

    def __repr__(self) -> str:
        return f"<shoal.Value({self._code!r}, {self.value!r})>"


def _rebuild_value(attachments, index: int, code: str, lock: Lock | None) -> Value:
    value = Value.__new__(Value)
    value._attach(attachments[index], code, lock)
    return value
