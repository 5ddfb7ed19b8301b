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


def array_sum(a):
    """Reads a whole array: the work of a task given a large argument."""
    return float(a.sum())


def array_scale(a):
    """Receives an array and returns a new one of the same size."""
    return a * 2.0
