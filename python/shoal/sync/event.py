"""``shoal.Event``: a flag shared between processes, as
``multiprocessing.Event``: ``set()``, ``clear()``, ``is_set()``,
``wait(timeout)``. A futex word in a memfd; ``set()`` wakes every waiter
at once."""

from __future__ import annotations

from .. import _shoal
from .sharing import SIZES, SharedObject, new_segment


class Event(SharedObject):
    __slots__ = ("_event",)
    _what = "Event"

    def __init__(self) -> None:
        self._place(new_segment(SIZES["event"]))

    def _bind(self) -> None:
        self._event = _shoal.SharedEvent(self._segment, self._offset)

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the flag is set, at most ``timeout`` seconds; returns
        the flag."""
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._event.wait(timeout)

    def __repr__(self) -> str:
        return f"<shoal.Event {'set' if self.is_set() else 'unset'}>"
