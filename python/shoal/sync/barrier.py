"""``shoal.Barrier``: ``threading.Barrier``'s API between processes, as
``multiprocessing.Barrier``: ``Barrier(parties, action=None,
timeout=None)``, ``wait(timeout)`` (returns the arrival index,
``0 .. parties-1``), ``reset()``, ``abort()``, ``parties``,
``n_waiting``, ``broken``. A timeout, an abort or an action that raises
breaks it (``threading.BrokenBarrierError``) until ``reset()``. The
action runs in the last process to arrive, before the others go on.

The state lives in a memfd (see ``shoal_core::barrier``). A process killed
while it waits still counts as arrived; one that dies before arriving
holds the others up until their timeout, so give one.
"""

from __future__ import annotations

import threading

from .. import _shoal
from .sharing import SIZES, SharedObject, new_segment

BrokenBarrierError = threading.BrokenBarrierError

_PASSED, _BROKEN, _PENDING = 0, 1, 2


class Barrier(SharedObject):
    __slots__ = ("_barrier", "_action", "_timeout")
    _what = "Barrier"

    def __init__(self, parties: int, action=None, timeout: float | None = None) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
            raise ValueError(f"parties must be a positive int, got {parties!r}")
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, got {action!r}")
        self._restore(action, timeout)
        segment = new_segment(SIZES["barrier"])
        _shoal.SharedBarrier(segment, 0, parties)
        self._place(segment)

    def _state(self) -> tuple:
        return (self._action, self._timeout)

    def _restore(self, action, timeout) -> None:
        self._action = action
        self._timeout = timeout

    def _bind(self) -> None:
        self._barrier = _shoal.SharedBarrier(self._segment, self._offset)

    def wait(self, timeout: float | None = None) -> int:
        """Waits for every party; returns this one's arrival index. Raises
        ``BrokenBarrierError`` if the barrier is or becomes broken (a
        timeout breaks it)."""
        if timeout is None:
            timeout = self._timeout
        if timeout is not None and timeout < 0:
            timeout = 0
        barrier = self._barrier
        arrival = barrier.arrive()
        if arrival is None:
            raise BrokenBarrierError
        last, index, generation = arrival
        if last:
            if self._action is not None:
                try:
                    self._action()
                except BaseException:
                    barrier.abort()
                    raise
            barrier.pass_generation(generation)
            return index
        try:
            outcome = barrier.wait_pass(generation, timeout)
        except BaseException:
            barrier.give_up(generation)  # interrupted: the others must not wait forever
            raise
        if outcome == _PENDING:
            outcome = barrier.give_up(generation)
        if outcome != _PASSED:
            raise BrokenBarrierError
        return index

    def reset(self) -> None:
        """Breaks the parties waiting now and makes it whole and empty."""
        self._barrier.reset()

    def abort(self) -> None:
        """Breaks it: waiters and later arrivals get BrokenBarrierError."""
        self._barrier.abort()

    @property
    def parties(self) -> int:
        return self._barrier.parties

    @property
    def n_waiting(self) -> int:
        return self._barrier.n_waiting

    @property
    def broken(self) -> bool:
        return self._barrier.broken

    def __repr__(self) -> str:
        if self.broken:
            return f"<shoal.Barrier broken, parties={self.parties}>"
        return f"<shoal.Barrier parties={self.parties}, waiting={self.n_waiting}>"
