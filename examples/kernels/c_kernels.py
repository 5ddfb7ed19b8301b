"""Mandelbrot and pi in C, compiled with cffi, run on threads.

cffi's API mode compiles the C source below into a Python extension with
the system's C compiler. A call into it releases the GIL, so several
threads run the C code at once, on as many cores, and ``ffi.from_buffer``
hands C a pointer to the numpy array's own memory: every thread writes its
rows straight into one image, nothing is copied.

The extension is built the first time it is needed, into a cache directory
of yours (``$SHOAL_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/shoal/kernels``,
else ``~/.cache/shoal/kernels``), named after a hash of the source: an
edited source is built again, an unchanged one is loaded at once.

    python examples/kernels/c_kernels.py [--size 2000] [--max-iter 200]
                                         [--steps 400_000_000] [--workers 2]

(Needs cffi and a C compiler: ``pip install cffi setuptools``.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile

import kernel_report as report
import numpy as np
import shoal

CDEF = """
void mandelbrot_rows(int32_t *image, int height, int width, int start, int stop, int max_iter);
double pi_midpoint(int64_t start, int64_t stop, int64_t n);
"""

SOURCE = r"""
#include <stdint.h>

/* The picture's window: real part across the columns, imaginary down the rows. */
static const double RE0 = -2.0, RE1 = 1.0, IM0 = -1.5, IM1 = 1.5;

void mandelbrot_rows(int32_t *image, int height, int width, int start, int stop, int max_iter)
{
    for (int y = start; y < stop; y++) {
        double ci = IM0 + (IM1 - IM0) * y / height;
        for (int x = 0; x < width; x++) {
            double cr = RE0 + (RE1 - RE0) * x / width;
            double zr = 0.0, zi = 0.0;
            int n = 0;
            while (n < max_iter && zr * zr + zi * zi <= 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                n++;
            }
            image[(int64_t)y * width + x] = n;
        }
    }
}

double pi_midpoint(int64_t start, int64_t stop, int64_t n)
{
    double h = 1.0 / (double)n, total = 0.0;
    for (int64_t i = start; i < stop; i++) {
        double x = ((double)i + 0.5) * h;
        total += 4.0 / (1.0 + x * x);
    }
    return total * h;
}
"""


def cache_dir() -> str:
    """Where built kernels live: a directory of the user's."""
    if os.environ.get("SHOAL_KERNEL_CACHE"):
        return os.environ["SHOAL_KERNEL_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shoal", "kernels")


def _find(directory: str, name: str) -> str | None:
    for entry in os.listdir(directory):
        if entry.startswith(name + ".") and entry.endswith((".so", ".pyd")):
            return os.path.join(directory, entry)
    return None


def build(directory: str | None = None):
    """The compiled module (``.ffi``, ``.lib``): loaded from the cache, or
    built there first. Two processes building at once both succeed: each
    builds in a directory of its own and moves the result into place."""
    directory = directory or cache_dir()
    digest = hashlib.sha256((CDEF + SOURCE + sys.version).encode()).hexdigest()[:16]
    name = f"_shoal_kernels_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    os.makedirs(directory, exist_ok=True)
    path = _find(directory, name)
    if path is None:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(CDEF)
        ffi.set_source(name, SOURCE, extra_compile_args=["-O3"])
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            built = ffi.compile(tmpdir=scratch)
            path = os.path.join(directory, os.path.basename(built))
            os.replace(built, path)  # atomic: a reader sees all of it or none
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def mandelbrot(size: int, max_iter: int, workers: int, chunk: int = 16) -> np.ndarray:
    """The picture, rows handed out ``chunk`` at a time to ``workers``
    threads that all write into one array through a pointer to it."""
    kernels = build()
    image = np.zeros((size, size), dtype=np.int32)
    pointer = kernels.ffi.from_buffer("int32_t[]", image)  # the array's memory, no copy

    def rows(start: int, stop: int) -> None:
        kernels.lib.mandelbrot_rows(pointer, size, size, start, stop, max_iter)

    shoal.parallel_for(
        size, rows, schedule="dynamic", chunk=chunk, workers=workers, backend="threads"
    )
    return image


def pi_chunk(bounds: tuple[int, int, int]) -> float:
    """``pi_midpoint(start, stop, n)`` of one ``(start, stop, n)``: a
    function of one item, for ``shoal.map`` (and importable by workers)."""
    return build().lib.pi_midpoint(*bounds)


def pi_span(start: int, stop: int, n: int) -> float:
    """The same as a loop body, ``body(start, stop)`` with ``n`` bound
    (``functools.partial(pi_span, n=steps)``), for ``parallel_reduce``."""
    return build().lib.pi_midpoint(start, stop, n)


def pi(steps: int, workers: int, chunks: int = 64) -> float:
    """pi by the midpoint rule, in ``chunks`` calls on a ThreadPool."""
    kernels = build()
    bounds = [(steps * k // chunks, steps * (k + 1) // chunks, steps) for k in range(chunks)]
    with shoal.ThreadPool(workers) as pool:
        return sum(pool.starmap(kernels.lib.pi_midpoint, bounds))


def main(argv: list[str] | None = None) -> None:
    args = report.arguments(__doc__.split("\n\n")[0], argv)
    size, max_iter, steps, workers = args.size, args.max_iter, args.steps, args.workers
    kernels, took = report.timed(build)
    print(f"C kernels ready in {took:.2f} s ({kernels.__file__})")

    def serial_picture():
        image = np.zeros((size, size), dtype=np.int32)
        pointer = kernels.ffi.from_buffer("int32_t[]", image)
        kernels.lib.mandelbrot_rows(pointer, size, size, 0, size, max_iter)
        return image

    report.compare(
        f"Mandelbrot {size} x {size}, at most {max_iter} iterations (C)",
        serial_picture,
        lambda: mandelbrot(size, max_iter, workers),
        workers,
    )
    report.compare(
        f"pi by the midpoint rule, {steps:,} steps (C)",
        lambda: kernels.lib.pi_midpoint(0, steps, steps),
        lambda: pi(steps, workers),
        workers,
        show=lambda value: f"pi = {value:.12f}",
    )


if __name__ == "__main__":
    main()
