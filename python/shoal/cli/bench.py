"""``shoal bench``: how a function speeds up as workers are added, and what
Amdahl's law makes of it.

Speed-up is against running the same inputs in one process without a pool
(``list(map(f, inputs))``), so pool overhead counts against it, as it does
for a user deciding whether to parallelise. Pool start-up does not count:
each pool runs the function on a few inputs before it is timed.
"""

from __future__ import annotations

import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..trace.svg import esc, nice_ticks, num, tick_label


@dataclass(frozen=True)
class Point:
    workers: int
    seconds: float  # median over rounds
    serial: float  # median of the serial rounds run alongside
    speedup: float  # serial / seconds
    efficiency: float  # speedup / workers


def parse_target(target: str) -> tuple[str, str]:
    """'pkg.mod:func' -> ('pkg.mod', 'func'); ValueError if not of that form."""
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"expected MODULE:FUNCTION (e.g. mymodule:work), got {target!r}")
    return module, name


def load_function(module_name: str, name: str) -> Callable:
    """Imports ``module_name`` (the current directory first on the path) and
    returns its ``name``, which may be dotted (``Class.method``)."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    value: Any = importlib.import_module(module_name)
    for part in name.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{module_name}:{name} is not a function (it is {type(value).__name__})")
    return value


def parse_workers(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; ValueError naming what is wrong."""
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"expected positive integers separated by commas, got {text!r}")
        counts.append(int(part))
    return sorted(set(counts))


def default_workers(cpus: int) -> list[int]:
    """Powers of two up to ``cpus``, and ``cpus`` itself."""
    return sorted({2**k for k in range(cpus.bit_length()) if 2**k <= cpus} | {cpus})


def measure(fn: Callable, inputs: list, workers: int, rounds: int) -> Point:
    """Times ``Pool(workers).map(fn, inputs)`` against ``list(map(fn, inputs))``
    back to back each round, so drifting CPU speed (a shared machine, turbo)
    weighs on both alike; medians of the rounds. Start-up is not timed."""
    from ..pool.pool import Pool

    serial_times, pool_times = [], []
    with Pool(workers) as pool:
        pool.map(fn, inputs[:workers])  # workers up and the function imported
        for _ in range(rounds):
            serial_times.append(_timed(lambda: list(map(fn, inputs))))
            pool_times.append(_timed(lambda: pool.map(fn, inputs)))
    serial, seconds = statistics.median(serial_times), statistics.median(pool_times)
    speedup = serial / seconds if seconds > 0 else math.inf
    return Point(workers, seconds, serial, speedup, speedup / workers)


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def amdahl_fit(points: list[Point]) -> float | None:
    """The serial fraction f that best explains the speed-ups, by least
    squares over 1/S = f + (1 - f)/p, i.e. (1/S - 1/p) = f (1 - 1/p).
    None without a point at more than one worker."""
    xs = [1 / p.workers for p in points if math.isfinite(p.speedup) and p.speedup > 0]
    ys = [1 / p.speedup for p in points if math.isfinite(p.speedup) and p.speedup > 0]
    denominator = sum((1 - x) ** 2 for x in xs)
    if denominator == 0:
        return None
    f = sum((1 - x) * (y - x) for x, y in zip(xs, ys, strict=True)) / denominator
    return min(max(f, 0.0), 1.0)


def amdahl_speedup(serial_fraction: float, workers: float) -> float:
    return 1 / (serial_fraction + (1 - serial_fraction) / workers)


# The plot's geometry, in pixels.
WIDTH, HEIGHT = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 36, 48


def plot_svg(points: list[Point], serial_fraction: float | None, title: str) -> str:
    """Speed-up against workers: measured points, the ideal line and the
    fitted Amdahl curve."""
    most = max(p.workers for p in points)
    top = max([most] + [p.speedup for p in points if math.isfinite(p.speedup)]) * 1.08
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(workers: float) -> str:
        return num(LEFT + workers / (most * 1.05) * plot_w)

    def y(speedup: float) -> str:
        return num(TOP + plot_h - min(speedup, top) / top * plot_h)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="20" font-size="14">{esc(title)}</text>',
    ]
    for tick in nice_ticks(0, top / 1.08):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick)}" y2="{y(tick)}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y(tick)}" text-anchor="end" dominant-baseline="middle">'
            f"{tick_label(tick)}</text>"
        )
    for p in points:
        parts.append(
            f'<text x="{x(p.workers)}" y="{TOP + plot_h + 16}" text-anchor="middle">'
            f"{p.workers}</text>"
        )
    parts += [
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#555"/>',
        f'<text x="{num(LEFT + plot_w / 2)}" y="{HEIGHT - 10}" text-anchor="middle">workers</text>',
        f'<text transform="translate(16 {num(TOP + plot_h / 2)}) rotate(-90)" '
        'text-anchor="middle">speed-up over serial</text>',
        f'<polyline points="{x(0)},{y(0)} {x(most)},{y(most)}" fill="none" stroke="#999" '
        'stroke-dasharray="5 4"/>',
    ]
    legend = [("#999", "ideal (speed-up = workers)", "5 4")]
    if serial_fraction is not None:
        steps = [1 + (most - 1) * i / 60 for i in range(61)]
        curve = " ".join(f"{x(w)},{y(amdahl_speedup(serial_fraction, w))}" for w in steps)
        parts.append(f'<polyline points="{curve}" fill="none" stroke="#E69F00" stroke-width="2"/>')
        legend.append(("#E69F00", f"Amdahl, f = {serial_fraction:.3f}", ""))
    measured = [p for p in points if math.isfinite(p.speedup)]
    line = " ".join(f"{x(p.workers)},{y(p.speedup)}" for p in measured)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#0072B2" stroke-width="2"/>')
    for p in measured:
        parts.append(
            f'<circle cx="{x(p.workers)}" cy="{y(p.speedup)}" r="4" fill="#0072B2">'
            f"<title>{p.workers} workers: {p.seconds:.4g} s, speed-up {p.speedup:.2f}x, "
            f"efficiency {p.efficiency:.0%}</title></circle>"
        )
    legend.append(("#0072B2", "measured", ""))
    for row, (colour, label, dash) in enumerate(legend):
        ly = TOP + 12 + row * 20
        lx = LEFT + 12
        parts.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
            f'<text x="{lx + 28}" y="{ly}" dominant-baseline="middle">{esc(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
