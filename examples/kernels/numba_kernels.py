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

import kernel_report as report
import numba
import numpy as np
import shoal

#: The picture's window: real part across the columns, imaginary down the rows.
RE = (-2.0, 1.0)
IM = (-1.5, 1.5)


@numba.njit(nogil=True, cache=True)
def escape(cr, ci, max_iter):
    """Iterations before z -> z^2 + c leaves the disc of radius 2."""
    zr = zi = 0.0
    n = 0
    while n < max_iter and zr * zr + zi * zi <= 4.0:
        zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
        n += 1
    return n


@numba.njit(nogil=True, cache=True)
def mandelbrot_rows(image, start, stop, max_iter):
    """Escape counts of rows ``start..stop`` of ``image`` (height x width,
    int32), written in place."""
    height, width = image.shape
    for y in range(start, stop):
        ci = IM[0] + (IM[1] - IM[0]) * y / height
        for x in range(width):
            image[y, x] = escape(RE[0] + (RE[1] - RE[0]) * x / width, ci, max_iter)


@numba.njit(nogil=True, parallel=True, cache=True)
def mandelbrot_prange(image, max_iter):
    """The same picture with numba's own threads (``prange``): what
    ``parallel_for`` on threads is measured against."""
    height = image.shape[0]
    for y in numba.prange(height):
        mandelbrot_rows(image, y, y + 1, max_iter)


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


def pi_span(start: int, stop: int, n: int) -> float:
    """The same as a loop body, ``body(start, stop)`` with ``n`` bound
    (``functools.partial(pi_span, n=steps)``), for ``parallel_reduce``."""
    return pi_midpoint(start, stop, n)


def pi(steps: int, workers: int, chunks: int = 64) -> float:
    """pi by the midpoint rule, in ``chunks`` calls on a ThreadPool."""
    bounds = [(steps * k // chunks, steps * (k + 1) // chunks, steps) for k in range(chunks)]
    with shoal.ThreadPool(workers) as pool:
        return sum(pool.starmap(pi_midpoint, bounds))


def main(argv: list[str] | None = None) -> None:
    args = report.arguments(__doc__.split("\n\n")[0], argv)
    size, max_iter, steps, workers = args.size, args.max_iter, args.steps, args.workers
    # Compile (or load from numba's cache) before timing.
    mandelbrot_rows(np.zeros((1, 1), dtype=np.int32), 0, 1, 1)
    pi_midpoint(0, 1, 1)

    def serial_picture():
        image = np.zeros((size, size), dtype=np.int32)
        mandelbrot_rows(image, 0, size, max_iter)
        return image

    report.compare(
        f"Mandelbrot {size} x {size}, at most {max_iter} iterations (numba)",
        serial_picture,
        lambda: mandelbrot(size, max_iter, workers),
        workers,
    )
    report.compare(
        f"pi by the midpoint rule, {steps:,} steps (numba)",
        lambda: pi_midpoint(0, steps, steps),
        lambda: pi(steps, workers),
        workers,
        show=lambda value: f"pi = {value:.12f}",
    )


if __name__ == "__main__":
    main()
