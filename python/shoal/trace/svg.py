"""Small helpers for the hand-written SVG of reports and plots."""

from __future__ import annotations

import html
import math


def esc(text: object) -> str:
    """Text safe inside an element or an attribute (function names can hold '<')."""
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round numbers (1, 2 or 5 x 10^k apart) covering lo..hi, about ``count`` of them."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float) -> str:
    return f"{value:g}"


def num(x: float) -> str:
    """A coordinate, short: '12', '12.5'."""
    return f"{x:.1f}".removesuffix(".0")
