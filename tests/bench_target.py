"""Functions for ``shoal bench`` tests (imported from the current directory)."""

from __future__ import annotations

WORK = list(range(8))


def spin(n: int) -> int:
    """About a few milliseconds of pure-Python arithmetic."""
    total = 0
    for i in range(30_000):
        total += (i * n) % 7
    return total


def broken(n: int) -> int:
    raise ValueError(f"no good: {n}")


NOT_A_FUNCTION = 42
