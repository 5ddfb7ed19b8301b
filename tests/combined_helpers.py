"""Task functions for the tests that combine features (importable by
workers, so they pickle by reference)."""

from __future__ import annotations

import os
import time

import numpy as np

N = 40_000  # float64 elements: 320 kB, above the shared-memory threshold


def big(seed: int = 0, n: int = N):
    return np.random.default_rng(seed).standard_normal(n)


def double(a):
    return a * 2.0


def add_arrays(a, b):
    return a + b


def total(a):
    return float(a.sum())


def logged(log_dir: str, tag: str) -> None:
    """Notes one call in ``log_dir`` (one file per call, any process)."""
    with open(os.path.join(log_dir, f"{tag}-{os.getpid()}-{time.monotonic_ns()}"), "w"):
        pass


def calls(log_dir: str) -> int:
    return len(os.listdir(log_dir))


def double_logged(a, log_dir):
    logged(log_dir, "double")
    return a * 2.0


def ramp_logged(pair):
    """A large result computed from a small argument, noting the call."""
    seed, log_dir = pair
    logged(log_dir, f"ramp{seed}")
    return big(seed)


def die_once_then_total(a, marker):
    """Dies by SIGKILL on its first attempt (no ``marker`` yet), holding
    ``a``; returns its sum (and a doubled copy) on the retry."""
    float(a.sum())
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), 9)
    return float(a.sum()), a * 2.0


def sleep_holding(a, seconds):
    float(a.sum())
    time.sleep(seconds)
    return float(a.sum())


def print_and_total(a, tag):
    print(f"{tag} got {a.shape[0]} values summing to {float(a.sum()):.6f}", flush=True)
    return float(a.sum())


def python_total(a):
    """Sums ``a`` in a Python loop: holds the GIL throughout."""
    s = 0.0
    for x in a.tolist():
        s += x
    return s


def same(a):
    return a


def identity_of(*objs):
    return [id(o) for o in objs]


def put_many(queue, values):
    for v in values:
        queue.put(v)
    return len(values)


def add_under_lock(lock, value, n):
    for _ in range(n):
        with lock:
            value.value += 1
    return n


def add_under_lock_pair(args):
    return add_under_lock(*args)


def fill_and_double(out, i, a):
    out[i] = i
    return a * 2.0


def square_into(out, i):
    out[i] = i * i


def scale_rows(out, src, start, stop):
    out[start:stop] = src[start:stop] * 3.0
