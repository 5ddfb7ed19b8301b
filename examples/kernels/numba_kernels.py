"""Mandelbrot and pi as numba kernels that release the GIL, run on threads.

``@njit(nogil=True)`` compiles a function to machine code that runs without
the GIL: several threads run it at once, on as many cores, and they share
the image (a plain numpy array) without copying it. The same loop on
processes would pay to start them and to send the rows back; on threads it
costs nothing but the call.

    python examples/kernels/numba_kernels.py [--size 2000] [--max-iter 200]
                                             [--steps 400_000_000] [--workers 2]

(Needs numba: ``pip install numba``.)
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import shoal

#: The picture's window: real part across the columns, imaginary down the rows.
RE = (-2.0, 1.0)
IM = (-1.5, 1.5)


@numba.njit(nogil=True, cache=True)
def mandelbrot_rows(image, start, stop, max_iter):
    """Escape counts of rows ``start..stop`` of ``image`` (height x width,
    int32), written in place."""
    height, width = image.shape
    for y in range(start, stop):
        ci = IM[0] + (IM[1] - IM[0]) * y / height
        for x in range(width):
            cr = RE[0] + (RE[1] - RE[0]) * x / width
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            image[y, x] = n


@numba.njit(nogil=True, parallel=True, cache=True)
def mandelbrot_prange(image, max_iter):
    """The same picture with numba's own threads (``prange``): what
    ``parallel_for`` on threads is measured against."""
    height, width = image.shape
    for y in numba.prange(height):
        ci = IM[0] + (IM[1] - IM[0]) * y / height
        for x in range(width):
            cr = RE[0] + (RE[1] - RE[0]) * x / width
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            image[y, x] = n


@numba.njit(nogil=True, cache=True)
def pi_midpoint(start, stop, n):
    """The midpoint rule's terms of 4 / (1 + x^2) for steps ``start..stop``
    of ``n``."""
    h = 1.0 / n
    total = 0.0
    for i in range(start, stop):
        x = (i + 0.5) * h
        total += 4.0 / (1.0 + x * x)
    return total * h


def mandelbrot(size: int, max_iter: int, workers: int, chunk: int = 16) -> np.ndarray:
    """The picture, rows handed out ``chunk`` at a time to ``workers``
    threads that all write into one array."""
    image = np.zeros((size, size), dtype=np.int32)

    def rows(start: int, stop: int) -> None:
        mandelbrot_rows(image, start, stop, max_iter)

    shoal.parallel_for(
        size, rows, schedule="dynamic", chunk=chunk, workers=workers, backend="threads"
    )
    return image


def pi_chunk(bounds: tuple[int, int, int]) -> float:
    """``pi_midpoint(start, stop, n)`` of one ``(start, stop, n)``: a
    function of one item, for ``shoal.map`` (and importable by workers)."""
    return pi_midpoint(*bounds)


def pi(steps: int, workers: int, chunks: int = 64) -> float:
    """pi by the midpoint rule, in ``chunks`` calls on a ThreadPool."""
    bounds = [(steps * k // chunks, steps * (k + 1) // chunks, steps) for k in range(chunks)]
    with shoal.ThreadPool(workers) as pool:
        return sum(pool.starmap(pi_midpoint, bounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="picture is size x size")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400_000_000, help="pi's midpoint steps")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    # Compile (or load from numba's cache) before timing.
    mandelbrot_rows(np.zeros((1, 1), dtype=np.int32), 0, 1, 1)
    pi_midpoint(0, 1, 1)

    started = time.perf_counter()
    serial = np.zeros((args.size, args.size), dtype=np.int32)
    mandelbrot_rows(serial, 0, args.size, args.max_iter)
    t_serial = time.perf_counter() - started
    started = time.perf_counter()
    image = mandelbrot(args.size, args.max_iter, args.workers)
    t_threads = time.perf_counter() - started
    assert (image == serial).all(), "the threads' rows differ from the serial ones"
    print(f"Mandelbrot {args.size} x {args.size}, at most {args.max_iter} iterations (numba)")
    print(f"  serial                {t_serial:7.3f} s")
    print(
        f"  {args.workers} threads             {t_threads:7.3f} s   "
        f"speed-up {t_serial / t_threads:4.2f}x"
    )

    started = time.perf_counter()
    one = pi_midpoint(0, args.steps, args.steps)
    t_serial = time.perf_counter() - started
    started = time.perf_counter()
    many = pi(args.steps, args.workers)
    t_threads = time.perf_counter() - started
    print(f"pi by the midpoint rule, {args.steps:,} steps (numba)")
    print(f"  serial                {t_serial:7.3f} s   pi = {one:.12f}")
    print(
        f"  {args.workers} threads             {t_threads:7.3f} s   pi = {many:.12f}   "
        f"speed-up {t_serial / t_threads:4.2f}x"
    )


if __name__ == "__main__":
    main()
