"""Numbers as people read them: durations, sizes, shares."""

from __future__ import annotations

#: Durations below this are clock rounding, shown as 0.
ROUNDING = 1e-9


def seconds(s: float) -> str:
    """'0 s', '80 µs', '45 ms', '1.23 s', '612 s'."""
    if abs(s) < ROUNDING:
        return "0 s"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 100:
        return f"{s:.3g} s"
    return f"{s:.0f} s"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 call', '3 calls', '1,204 tasks', '2 processes' (given ``nouns``)."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def size(n: float) -> str:
    """'512 B', '48.2 kB', '480 MB' (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def percent(fraction: float) -> str:
    """'35%', '0.4%', '0.012%', '0%' (below a millionth: rounding)."""
    value = fraction * 100
    if abs(value) < 1e-4:
        return "0%"
    return f"{value:.2g}%" if value < 10 else f"{value:.0f}%"
