"""Times a kernel serially and on threads, checks they agree, and prints
the lines the kernel examples print (shared by ``numba_kernels.py`` and
``c_kernels.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(run: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    value = run()
    return value, time.perf_counter() - started


def compare(title: str, serial: Callable, threads: Callable, workers: int, show=None) -> None:
    """Runs ``serial()`` then ``threads()``, asserts they agree (``show``
    turns a value into what is printed beside it, e.g. pi), and prints both
    times and the speed-up."""
    one, t_serial = timed(serial)
    many, t_threads = timed(threads)
    if show is None:
        assert (one == many).all(), f"{title}: the threads' result differs from the serial one"
        one_text = many_text = ""
    else:
        one_text, many_text = f"   {show(one)}", f"   {show(many)}"
    print(title)
    print(f"  serial                {t_serial:7.3f} s{one_text}")
    print(
        f"  {workers} threads             {t_threads:7.3f} s{many_text}   "
        f"speed-up {t_serial / t_threads:4.2f}x"
    )


def arguments(description: str, argv: list[str] | None):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=2000, help="picture is size x size")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400_000_000, help="pi's midpoint steps")
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args(argv)
