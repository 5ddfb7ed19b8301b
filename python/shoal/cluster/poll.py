"""Waiting on MPI without spinning a core: MPI's blocking calls busy-wait,
and the cores belong to the workers. A rank polls instead, sleeping between
polls: briefly while there was news a moment ago (a call's tasks and
answers come in bursts), then longer and longer, up to a millisecond."""

from __future__ import annotations

import time

#: Shortest and longest sleep between two polls (seconds).
MIN_PAUSE = 2e-5
MAX_PAUSE = 0.001
#: For this long after news, polls stay brisk (seconds).
BRISK = 0.005


class Pause:
    """How long to sleep before the next poll."""

    __slots__ = ("_quiet_since", "_seconds")

    def __init__(self) -> None:
        self._quiet_since: float | None = None
        self._seconds = MIN_PAUSE

    def news(self) -> None:
        """Something happened: poll briskly again."""
        self._quiet_since = None
        self._seconds = MIN_PAUSE

    def next(self) -> float:
        now = time.monotonic()
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < BRISK:
            return MIN_PAUSE
        self._seconds = min(MAX_PAUSE, self._seconds * 2)
        return self._seconds


def wait_for(request, limit: float) -> bool:
    """Polls an MPI request until it completes (True) or the monotonic
    clock passes ``limit`` (False)."""
    pause = Pause()
    while not request.Test():
        if time.monotonic() > limit:
            return False
        time.sleep(pause.next())
    return True
