"""``shoal demo``: the parallel-Python workshops' lessons, measured on this
machine in under a minute, as a table, one sentence per lesson, and an HTML
page with the timeline of every parallel run. The last lesson is the race
condition: shared counters that lose updates without a lock.

Each lesson times its variants in alternating rounds and takes medians:
CPU speed on shared machines drifts, and back-to-back runs see the same
drift. The kernels are module-level functions, so workers import them by
reference.
"""

from __future__ import annotations

import html
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..trace.trace import Trace


# ------------------------------------------------------------------ kernels
def count_primes(lo: int, hi: int) -> int:
    """Primes in [lo, hi) by trial division: pure Python, holds the GIL."""
    count = 0
    for n in range(max(lo, 2), hi):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


def wait(seconds: float) -> float:
    """An I/O wait (a download, a disk read), played by sleep."""
    time.sleep(seconds)
    return seconds


def sort_copy(array) -> float:
    """numpy's sort releases the GIL while it works."""
    import numpy as np

    return float(np.sort(array)[len(array) // 2])


def pi_chunk(start: int, stop: int, n: int) -> float:
    """Midpoint-rule partial sum of 4/(1+x^2) over steps [start, stop)."""
    h = 1.0 / n
    s = 0.0
    for i in range(start, stop):
        x = (i + 0.5) * h
        s += 4.0 / (1.0 + x * x)
    return s * h


#: Mandelbrot window and size: columns across x in [-2, 0.5]. Most of the
#: set's area lies right of the middle, so equal blocks of columns are
#: very unequal work: the lesson of static against dynamic schedules.
MANDEL_X = (-2.0, 0.5)
MANDEL_Y = (-1.25, 1.25)


def mandel_columns(start: int, stop: int, width: int, height: int, max_iter: int) -> list:
    """Escape counts of columns [start, stop) of a width x height image."""
    x0, x1 = MANDEL_X
    y0, y1 = MANDEL_Y
    columns = []
    for col in range(start, stop):
        cr = x0 + (x1 - x0) * col / width
        counts = []
        for row in range(height):
            ci = y0 + (y1 - y0) * row / height
            zr = zi = 0.0
            k = 0
            while k < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                k += 1
            counts.append(k)
        columns.append(counts)
    return columns


def nothing(x: int) -> int:
    return x


def count_up(counter, start, times: int, use_lock: bool) -> None:
    """``times`` increments of a shared Value, once every process is at
    ``start``; without the lock, ``value += 1`` is a read and a write with
    a gap between them."""
    start.wait(timeout=60)
    if use_lock:
        for _ in range(times):
            with counter.get_lock():
                counter.value += 1
    else:
        for _ in range(times):
            counter.value += 1


# ------------------------------------------------------------------ lessons
@dataclass
class Variant:
    label: str
    run: Callable[[], object]
    times: list[float] = field(default_factory=list)
    value: object = None  # what the last round returned
    values: list = field(default_factory=list)  # what every round returned

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


@dataclass
class Lesson:
    title: str
    variants: list[Variant]  # the first is the baseline
    explain: Callable[[Lesson], str]
    #: Traced pools whose timelines the page shows, by label.
    pools: dict = field(default_factory=dict)
    #: Set when the lesson cannot run here (say, a package is missing):
    #: then it has no variants and ``explain`` says how to get it.
    missing: bool = False

    def speedup(self, label: str) -> float:
        base = self.variants[0].seconds
        return base / self.variant(label).seconds

    def variant(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)

    def measure(self, rounds: int) -> None:
        for _ in range(rounds if self.variants else 0):
            for v in self.variants:
                began = time.perf_counter()
                v.value = v.run()
                v.times.append(time.perf_counter() - began)
                v.values.append(v.value)


def _gil(workers: int, scale: float, pools: dict) -> Lesson:
    top = int(300_000 * scale)
    bounds = [(top * k // 16, top * (k + 1) // 16) for k in range(16)]
    threads, processes = pools["threads"], pools["processes"]
    return Lesson(
        "The GIL: pure-Python CPU work",
        [
            Variant("serial", lambda: sum(count_primes(*b) for b in bounds)),
            Variant(f"{workers} threads", lambda: sum(threads.starmap(count_primes, bounds))),
            Variant(f"{workers} processes", lambda: sum(processes.starmap(count_primes, bounds))),
        ],
        lambda s: (
            f"Threads gave x{s.speedup(f'{workers} threads'):.2f}: only one thread runs Python "
            f"at a time (the GIL). Processes each have their own interpreter: "
            f"x{s.speedup(f'{workers} processes'):.2f}."
        ),
        {f"{workers} processes": processes},
    )


def _io(workers: int, scale: float, pools: dict) -> Lesson:
    waits = [0.25 * max(scale, 0.2)] * 8
    wide = pools["io"]
    return Lesson(
        "Waiting for I/O",
        [
            Variant("serial", lambda: [wait(s) for s in waits]),
            Variant("8 threads", lambda: wide.map(wait, waits, chunksize=1)),
        ],
        lambda s: (
            f"A thread that waits (network, disk) lets the others run: 8 waits at once on "
            f"8 threads, x{s.speedup('8 threads'):.2f}, whatever the number of cores."
        ),
    )


def _numpy(workers: int, scale: float, pools: dict) -> Lesson:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = [rng.random(int(1_500_000 * scale)) for _ in range(8)]
    threads = pools["threads"]
    return Lesson(
        "Compiled code that releases the GIL",
        [
            Variant("serial", lambda: [sort_copy(a) for a in arrays]),
            Variant(f"{workers} threads", lambda: threads.map(sort_copy, arrays, chunksize=1)),
        ],
        lambda s: (
            f"numpy's sort releases the GIL, so {workers} threads sort in parallel "
            f"(x{s.speedup(f'{workers} threads'):.2f}) and share the arrays without copying them."
        ),
    )


COMPILED = "Compiled code that releases the GIL runs in parallel on threads (numba)"


def _compiled(workers: int, scale: float, pools: dict) -> Lesson:
    """One numba loop compiled twice, holding the GIL and with
    ``nogil=True``, on the same threads."""
    try:
        import numba
    except ImportError:
        return Lesson(
            COMPILED,
            [],
            lambda s: (
                "numba is not installed, so this lesson was skipped: pip install numba, then "
                "run shoal demo again to see the same compiled loop on threads with the GIL "
                "held and released (nogil=True)."
            ),
            missing=True,
        )
    # Compiled here, before timing (not cached: numba's cache would hand
    # both the one compiled first, whatever the flags).
    held = numba.njit(nogil=False)(pi_chunk)
    free = numba.njit(nogil=True)(pi_chunk)
    held(0, 1, 1), free(0, 1, 1)
    n = int(200_000_000 * scale)
    bounds = [(n * k // 16, n * (k + 1) // 16, n) for k in range(16)]
    threads = pools["threads"]
    gil, nogil = f"{workers} threads, GIL held", f"{workers} threads, nogil=True"
    return Lesson(
        COMPILED,
        [
            Variant("serial", lambda: sum(free(*b) for b in bounds)),
            Variant(gil, lambda: sum(threads.starmap(held, bounds))),
            Variant(nogil, lambda: sum(threads.starmap(free, bounds))),
        ],
        lambda s: (
            f"The same compiled loop on {workers} threads: holding the GIL, one thread runs "
            f"at a time (x{s.speedup(gil):.2f}); compiled with nogil=True they run at once "
            f"(x{s.speedup(nogil):.2f}), with no processes to start and nothing to copy."
        ),
    )


def _pi(workers: int, scale: float, pools: dict) -> Lesson:
    n = int(3_000_000 * scale)
    bounds = [(n * k // 32, n * (k + 1) // 32, n) for k in range(32)]
    processes = pools["processes"]
    return Lesson(
        "pi by the midpoint rule",
        [
            Variant("serial", lambda: sum(pi_chunk(*b) for b in bounds)),
            Variant(f"{workers} processes", lambda: sum(processes.starmap(pi_chunk, bounds))),
        ],
        lambda s: (
            f"Split the sum into chunks, add the partial sums: pi = "
            f"{s.variant(f'{workers} processes').value:.12f}, "
            f"x{s.speedup(f'{workers} processes'):.2f} on {workers} processes."
        ),
        {f"{workers} processes": processes},
    )


def _mandelbrot(workers: int, scale: float, pools: dict) -> Lesson:
    import shoal

    width, height, max_iter = int(240 * scale**0.5), int(160 * scale**0.5), 200
    args = (width, height, max_iter)
    static, dynamic = pools["static"], pools["dynamic"]

    def loop(pool, schedule: str, chunk: int | None):
        def body(start: int, stop: int) -> list:
            return mandel_columns(start, stop, *args)

        return shoal.parallel_for(width, body, schedule=schedule, chunk=chunk, backend=pool)

    return Lesson(
        "Mandelbrot: static against dynamic schedules",
        [
            Variant("serial", lambda: mandel_columns(0, width, *args)),
            Variant("static blocks", lambda: loop(static, "static", None)),
            Variant("dynamic, 4 columns", lambda: loop(dynamic, "dynamic", 4)),
        ],
        lambda s: (
            f"Equal blocks of columns are unequal work: static x{s.speedup('static blocks'):.2f}, "
            f"while handing out small chunks to whichever worker is free balances it: "
            f"dynamic x{s.speedup('dynamic, 4 columns'):.2f}."
        ),
        {"static blocks": static, "dynamic, 4 columns": dynamic},
    )


def _tiny(workers: int, scale: float, pools: dict) -> Lesson:
    n = int(20_000 * scale)
    items = list(range(n))
    tiny = pools["tiny"]
    return Lesson(
        "Tiny tasks and chunking",
        [
            Variant("serial", lambda: [nothing(x) for x in items]),
            Variant("chunksize=1", lambda: tiny.map(nothing, items, chunksize=1)),
            Variant("automatic chunks", lambda: tiny.map(nothing, items)),
        ],
        lambda s: (
            f"Handing a task to a worker costs about "
            f"{s.variant('chunksize=1').seconds / n * 1e6:.0f} µs, far more than a trivial "
            f"function: one item per task took {1 / s.speedup('chunksize=1'):.0f} times as "
            f"long as the serial loop; chunks of many items cut that to "
            f"{1 / s.speedup('automatic chunks'):.1f} times."
        ),
        {"chunksize=1": tiny},
    )


#: The workshops' race: 4 processes, 20,000 increments each.
RACE_PROCESSES, RACE_INCREMENTS = 4, 20_000


def _race(workers: int, scale: float, pools: dict) -> Lesson:
    import shoal

    total = RACE_PROCESSES * RACE_INCREMENTS

    def count(use_lock: bool) -> int:
        counter = shoal.Value("i", 0)
        start = shoal.Barrier(RACE_PROCESSES)  # every process counts at once
        processes = [
            shoal.Process(target=count_up, args=(counter, start, RACE_INCREMENTS, use_lock))
            for _ in range(RACE_PROCESSES)
        ]
        for p in processes:
            p.start()
        for p in processes:
            p.join(120)
        return counter.value

    def explain(s: Lesson) -> str:
        lost = [total - v for v in s.variant("without a lock").values]
        locked = s.variant("with get_lock()").values
        return (
            f"{RACE_PROCESSES} processes each added 1 to a shared Value {RACE_INCREMENTS:,} "
            f"times. Without a lock, {_lost(lost, total)}: value += 1 reads, then writes, "
            f"and another process can write in between. With get_lock() held around both, "
            f"{'all ' + format(total, ',') + ' arrived' if set(locked) == {total} else locked}."
        )

    return Lesson(
        "Shared state: a race condition and its lock",
        [
            Variant("without a lock", lambda: count(False)),
            Variant("with get_lock()", lambda: count(True)),
        ],
        explain,
    )


def _lost(lost: list[int], total: int) -> str:
    """'34,012 of 80,000 increments were lost' (a range over the rounds)."""
    low, high = min(lost), max(lost)
    amount = f"{low:,}" if low == high else f"{low:,} to {high:,}"
    text = f"{amount} of {total:,} increments were lost"
    if low == 0:
        text += " (a run that lost none: the processes took turns on a busy machine)"
    return text


LESSONS = (_gil, _io, _numpy, _compiled, _pi, _mandelbrot, _tiny, _race)


def run(workers: int, scale: float, rounds: int, on_lesson: Callable) -> list[Lesson]:
    """Runs every lesson; ``on_lesson(lesson)`` as each finishes."""
    import shoal

    done = []
    with (
        shoal.Pool(workers, trace=True) as processes,
        shoal.ThreadPool(workers) as threads,
        shoal.ThreadPool(8) as io,
        shoal.Pool(workers, trace=True) as static,
        shoal.Pool(workers, trace=True) as dynamic,
        shoal.Pool(workers, trace=True) as tiny,
    ):
        pools = {
            "processes": processes,
            "threads": threads,
            "io": io,
            "static": static,
            "dynamic": dynamic,
            "tiny": tiny,
        }
        for pool in pools.values():
            pool.map(nothing, range(2 * workers), chunksize=1)  # workers up
        for make in LESSONS:
            lesson = make(workers, scale, pools)
            lesson.measure(rounds)
            lesson.pools = {label: pool.trace() for label, pool in lesson.pools.items()}
            on_lesson(lesson)
            done.append(lesson)
    return done


# ------------------------------------------------------------------ output
def ratio(r: float) -> str:
    """'x1.93', or 'x0.004' for a slow-down too big for two decimals."""
    return f"x{r:.2f}" if r >= 0.1 else f"x{r:.3f}"


def busy_warning(cores: int) -> str | None:
    """A note when other programs use the cores, so timings are noisy."""
    import os

    load = os.getloadavg()[0]
    if load < 0.5 * cores:
        return None
    return (
        f"note: this machine is busy (load average {load:.1f} on {cores} cores): "
        "other programs share the cores, so these timings are noisy."
    )


def table(lesson: Lesson) -> str:
    if lesson.missing:
        return f"{lesson.title}\n  {lesson.explain(lesson)}"
    lines = [lesson.title]
    for v in lesson.variants:
        lines.append(f"  {v.label:<24}{v.seconds:9.3f} s   {ratio(lesson.speedup(v.label)):>7}")
    lines.append("  " + lesson.explain(lesson))
    return "\n".join(lines)


def page(lessons: list[Lesson], workers: int) -> str:
    from ..trace.report import CSS
    from ..trace.timeline import call_colours, timeline_svg

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>shoal demo</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>shoal demo</h1>",
        f"<p class='meta'>The workshops' lessons, measured here on {workers} workers.</p>",
    ]
    for lesson in lessons:
        parts.append(f"<h2>{html.escape(lesson.title)}</h2>")
        parts.append(f"<p>{html.escape(lesson.explain(lesson))}</p>")
        if lesson.missing:
            continue
        rows = "".join(
            f"<tr><td>{html.escape(v.label)}</td><td>{v.seconds:.3f} s</td>"
            f"<td>{ratio(lesson.speedup(v.label))}</td></tr>"
            for v in lesson.variants
        )
        parts.append(f"<table><tr><th>run</th><th>time</th><th>speed-up</th></tr>{rows}</table>")
        for label, trace in lesson.pools.items():
            trace = _last_call(trace)
            parts.append(f"<h3>{html.escape(label)}: timeline</h3>")
            parts.append(timeline_svg(trace, trace.summary(), call_colours(trace)))
    parts.append("</body></html>")
    return "\n".join(parts)


def _last_call(trace: Trace) -> Trace:
    """The trace of a lesson's pool, trimmed to its last measured call
    (pools are warmed up and measured several times)."""
    import dataclasses

    last = max(c.id for c in trace.calls)
    calls = tuple(c for c in trace.calls if c.id == last)
    tasks = tuple(t for t in trace.tasks if t.call == last)
    origin = calls[0].start
    ends = [t.end for t in tasks if t.end is not None] + [calls[0].end or origin]

    def shift(x):
        return None if x is None else max(0.0, x - origin)

    return dataclasses.replace(
        trace,
        wall=max(ends) - origin,
        calls=tuple(dataclasses.replace(c, start=0.0, end=shift(c.end)) for c in calls),
        tasks=tuple(
            dataclasses.replace(t, queued=shift(t.queued), start=shift(t.start), end=shift(t.end))
            for t in tasks
        ),
        workers=tuple(
            dataclasses.replace(w, start=shift(w.start), end=shift(w.end))
            for w in trace.workers
            if w.end is None or w.end > origin
        ),
    )
