"""Benchmark task functions used by ``benches/compare.py``.

They live in their own importable module (not ``__main__``) so that every
library under comparison -- multiprocessing, ProcessPoolExecutor, joblib/loky,
mpire and shoal -- can pickle them by reference, whatever start method its
workers use.
"""

from __future__ import annotations

import os


def inc(x):
    """The trivial task: the cost measured is almost all dispatch overhead."""
    return x + 1


def getpid(_=None):
    """Return the worker's pid (used to check work really left the parent)."""
    return os.getpid()


def pi_chunk(start, stop, n):
    """Midpoint-rule partial sum of the integral of 4/(1+x^2) over [0, 1].

    Covers steps ``start <= i < stop`` of ``n`` steps in total; the sum of all
    chunks is an approximation of pi. Deliberately a pure-Python loop so that
    it holds the GIL and only scales with processes.
    """
    h = 1.0 / n
    total = 0.0
    for i in range(start, stop):
        x = (i + 0.5) * h
        total += 4.0 / (1.0 + x * x)
    return total * h


def pi_chunks(steps, nchunks):
    """Split ``steps`` midpoint-rule steps into ``nchunks`` (start, stop, n) ranges."""
    bounds = [steps * k // nchunks for k in range(nchunks + 1)]
    return [(bounds[k], bounds[k + 1], steps) for k in range(nchunks)]


def sleep_for(seconds):
    """An I/O-like wait: releases the GIL and uses no CPU."""
    import time

    time.sleep(seconds)
    return seconds


_SORT_INPUT = []


def sort_big(k):
    """numpy work that releases the GIL: sort a copy of 2 million floats
    (the input is made once per process)."""
    import numpy as np

    if not _SORT_INPUT:
        _SORT_INPUT.append(np.random.default_rng(0).random(2_000_000))
    return float(np.sort(_SORT_INPUT[0])[k % 1000])


MANDELBROT_RE = (-2.0, 1.0)
MANDELBROT_IM = (-1.2, 1.2)


def mandelbrot_row(x, width, height, max_iter):
    """Iteration counts along row ``x`` of the workshops' Mandelbrot picture:
    the real part is fixed by the row, the imaginary part runs across it.
    Rows through the set's body cost ``max_iter`` iterations per point,
    rows at the edge a few: the work is unevenly spread."""
    re0, re1 = MANDELBROT_RE
    im0, im1 = MANDELBROT_IM
    cr = re0 + (re1 - re0) * x / width
    counts = []
    for y in range(height):
        ci = im0 + (im1 - im0) * y / height
        zr = zi = 0.0
        n = 0
        while n < max_iter:
            zr2, zi2 = zr * zr, zi * zi
            if zr2 + zi2 > 4.0:
                break
            zi = 2.0 * zr * zi + ci
            zr = zr2 - zi2 + cr
            n += 1
        counts.append(n)
    return counts


def pi_chunk_of(bounds):
    """``pi_chunk(*bounds)``, for ``map`` over the chunks of ``pi_chunks``."""
    return pi_chunk(*bounds)


def array_sum(a):
    """Reads a whole array: the work of a task given a large argument."""
    return float(a.sum())


def array_scale(a):
    """Receives an array and returns a new one of the same size."""
    return a * 2.0


def echo(conn):
    """Sends back what it receives until None (a Pipe's other end)."""
    while (obj := conn.recv()) is not None:
        conn.send(obj)


def sum_back(conn):
    """Receives arrays until None; sends back each one's sum."""
    while (a := conn.recv()) is not None:
        conn.send(float(a.sum()))
