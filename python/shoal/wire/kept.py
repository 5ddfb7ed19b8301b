"""Copies of large arguments that a pool keeps after the call that made
them (``wire.transfer`` makes the copies): an array passed again,
unchanged, is sent as the same copy. Only the parent keeps copies, so a
worker never imports this module (nor ``threading`` and ``weakref``)."""

from __future__ import annotations

import functools
import threading
import weakref

from .. import _shoal

_Segment = _shoal.Segment
_READ_ONLY = _shoal.ACCESS_READ_ONLY


class KeptCopies:
    """Copies of large buffers kept after the call that made them, so an
    array passed again is not copied again (a pool keeps one for its calls).

    A copy is reused only while the object that owns the buffer (a numpy
    array) is alive -- its memory can't then be another object's -- and
    only if the array still holds the same bytes: compared in place, at
    memory speed, which costs less than a copy (it writes nothing and
    faults in no new pages). ``end_call`` drops the copies the calls since
    the last one did not use; a copy also goes when its array dies. So the
    memory kept is that of arrays still alive and used by the latest call.

    ``trusted_within_call``: until ``end_call``, a copy is reused without
    comparing (as joblib reuses its memmaps: what is written into the array
    after its first copy is not seen by later tasks of the call).
    ``read_only``: every receiver maps the copies read-only, even a single
    one. Safe to share between threads."""

    __slots__ = ("read_only", "_trusted", "_fds", "_owners", "_used", "_views", "_lock",
                 "__weakref__")  # fmt: skip

    def __init__(self, *, trusted_within_call: bool = False, read_only: bool = False) -> None:
        self.read_only = read_only
        self._trusted = trusted_within_call
        self._fds: dict = {}  # key -> the copy's Fd
        self._owners: dict = {}  # key -> weakref to the owner of the copied buffer
        self._used: set = set()  # keys used since the last end_call
        self._views: dict = {}  # key -> the copy, mapped here to compare with
        self._lock = threading.RLock()  # a dying owner's callback may come mid-call

    def find(self, buffer, key):
        """The kept copy of ``buffer`` (at ``key``: address and size), or
        None if there is none that may be reused."""
        with self._lock:
            fd, ref = self._fds.get(key), self._owners.get(key)
            if fd is None or ref is None or ref() is not _owner(buffer):
                return None
            if not (self._trusted and key in self._used) and not self._unchanged(key, fd, buffer):
                return None
            self._used.add(key)
            return fd

    def keep(self, key, buffer, fd) -> None:
        """Keeps ``fd``, the sealed copy just made of ``buffer``."""
        owner = _owner(buffer)
        with self._lock:
            try:
                ref = weakref.ref(owner, functools.partial(_forget, weakref.ref(self), key))
            except TypeError:  # an owner that can't be followed (bytes): not kept
                return
            self._drop(key)
            self._fds[key], self._owners[key] = fd, ref
            self._used.add(key)

    def _unchanged(self, key, fd, buffer) -> bool:
        """Whether ``buffer`` still holds what the copy ``fd`` holds."""
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = _Segment.map(fd, _READ_ONLY)
        return _shoal.same_bytes(buffer.raw(), view)

    def end_call(self) -> None:
        """A call is over: the copies no call used since the last
        ``end_call`` go; the others stay for the next call."""
        with self._lock:
            for key in [k for k in self._fds if k not in self._used]:
                self._drop(key)
            self._used.clear()

    def clear(self) -> None:
        """Drops every copy (those still on their way stay alive until sent)."""
        with self._lock:
            self._fds.clear()
            self._owners.clear()
            self._views.clear()
            self._used.clear()

    def count(self) -> int:
        """How many copies are kept."""
        return len(self._fds)

    def forget(self, key, dead_ref) -> None:
        """``key``'s owner died (``dead_ref`` followed it): its memory may go
        to another object."""
        with self._lock:
            if self._owners.get(key) is dead_ref:
                self._drop(key)

    def _drop(self, key) -> None:
        self._fds.pop(key, None)
        self._owners.pop(key, None)
        self._views.pop(key, None)
        self._used.discard(key)


class CopyCache(KeptCopies):
    """The copies of the batches of joblib ``Parallel`` calls: read-only
    for every receiver (as joblib's memmaps are), and trusted within a
    call (see ``KeptCopies``)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(trusted_within_call=True, read_only=True)


def _owner(buffer):
    """The object whose memory ``buffer`` (a ``PickleBuffer``) shows."""
    try:
        return buffer.raw().obj
    except (AttributeError, BufferError, ValueError):
        return None


def _forget(kept_ref, key, dead_ref) -> None:
    """A kept copy's owner died (see ``KeptCopies.forget``)."""
    kept = kept_ref()
    if kept is not None:
        kept.forget(key, dead_ref)
