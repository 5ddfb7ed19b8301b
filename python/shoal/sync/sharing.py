"""What the primitives in shared memory have in common: a segment (a memfd,
so nothing is left behind when a process is killed) and an offset in it,
and the way they travel to another process: as a handle to the same
segment, through shoal's own pickler (Pool tasks, ``shoal.Process``,
``shoal.Queue``, ``shoal.Pipe``, a ``shoal.Manager``'s containers), never
through plain ``pickle``.
"""

from __future__ import annotations

from .. import _shoal

SHARED = _shoal.ACCESS_SHARED
#: Bytes each native primitive takes in a segment.
SIZES = _shoal.SYNC_SIZES


def not_picklable(what: str) -> TypeError:
    return TypeError(
        f"a shoal.{what} can be passed to shoal Pool tasks and Processes (as an argument, "
        "an initializer argument or in a closure), through a shoal Queue or Pipe, and in "
        "a shoal Manager's dict or list, but not pickled otherwise"
    )


def new_segment(nbytes: int):
    """A fresh zeroed segment, shared and writable."""
    return _shoal.Segment.create(nbytes)


class SharedObject:
    """Base of the primitives that live in a segment. A subclass sets
    ``_what`` (its name in messages), makes its segment in ``__init__``
    and calls ``_place``; ``_bind`` attaches the native objects, and
    ``_state``/``_restore`` carry whatever else must travel with it."""

    __slots__ = ("_segment", "_offset")
    _what = "object"

    def _place(self, segment, offset: int = 0) -> None:
        self._segment = segment
        self._offset = offset
        self._bind()

    def _bind(self) -> None:
        """Attaches the native objects to ``self._segment``."""

    def _state(self) -> tuple:
        """What travels besides the segment (other shared objects, sizes)."""
        return ()

    def _restore(self, *state) -> None:
        """Sets up what ``_state`` sent, before ``_bind``."""

    def _shoal_share_(self, attach):
        return (_rebuild, type(self), attach(self._segment, SHARED), self._offset, self._state())

    def __reduce__(self):
        raise not_picklable(self._what)


class LockLike(SharedObject):
    """Base of ``Lock`` and ``RLock``: a native lock (``_native``, taking
    ``SIZES[_size]`` bytes) whose ``acquire``, ``release`` and ``locked``
    the instance holds itself (a Python wrapper would double the cost of an
    uncontended acquire and release), and ``with lock:``."""

    __slots__ = ("_lock", "acquire", "release", "locked")
    _native: type
    _size: str

    def __init__(self) -> None:
        self._place(new_segment(SIZES[self._size]))

    def _bind(self) -> None:
        lock = self._lock = self._native(self._segment, self._offset)
        #: ``acquire(block=True, timeout=None)``: takes the lock (a level of
        #: it, for an RLock); False if ``block`` is false and it is held
        #: elsewhere, or if ``timeout`` seconds pass first.
        self.acquire = lock.acquire
        #: ``release()``: frees it (a Lock: ValueError if it is not held;
        #: an RLock: RuntimeError if this thread does not hold it).
        self.release = lock.release
        self.locked = lock.locked

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _rebuild(attachments, cls, index: int, offset: int, state: tuple):
    obj = cls.__new__(cls)
    obj._restore(*state)
    obj._place(attachments[index], offset)
    return obj
