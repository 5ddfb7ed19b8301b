"""Waiting on MPI without spinning a core: MPI's blocking calls busy-wait,
and the cores belong to the workers. A rank polls instead, sleeping between
polls. Each wake-up costs CPU (some 20 us on a virtual machine), so the
sleep follows the news: about a quarter of the usual time between two
pieces of news (tasks and answers come in bursts when tasks are short, a
few a second when they are long), growing while nothing comes, and never
more than two milliseconds."""

from __future__ import annotations

import _thread
import time

#: Shortest and longest sleep between two polls (seconds).
MIN_PAUSE = 2e-5
MAX_PAUSE = 0.002


class Pause:
    """How long to sleep before the next poll."""

    __slots__ = ("_last", "_gap")

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._gap = MAX_PAUSE  # the smoothed time between two pieces of news

    def news(self) -> None:
        """Something happened (a message came or went)."""
        now = time.monotonic()
        gap = min(now - self._last, 4 * MAX_PAUSE)
        self._gap = 0.7 * self._gap + 0.3 * gap
        self._last = now

    def next(self) -> float:
        quiet = time.monotonic() - self._last
        return min(MAX_PAUSE, max(MIN_PAUSE, self._gap / 4, quiet / 2))


class Wakeup:
    """A sleep another thread can cut short, as ``threading.Event`` with
    ``wait`` and ``clear`` in one, at half its cost (a bare lock: the
    sleeper holds it, a wake releases it)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def sleep(self, seconds: float) -> None:
        """Sleeps ``seconds``, or less if woken since the last sleep."""
        self._lock.acquire(True, seconds)

    def wake(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # woken already, and not asleep since
            pass


def wait_for(request, limit: float) -> bool:
    """Polls an MPI request until it completes (True) or the monotonic
    clock passes ``limit`` (False)."""
    pause = MIN_PAUSE
    while not request.Test():
        if time.monotonic() > limit:
            return False
        time.sleep(pause)
        pause = min(MAX_PAUSE, pause * 2)
    return True
