"""The Mandelbrot set, 500 x 400 points and at most 1,000 iterations, as
the workshops draw it -- with ``shoal.parallel_for`` over the image's rows.

Each row is a line of constant real part (the real axis runs down the rows,
as in the workshops' ``for x in ...: for y in ...`` loops). Rows through the
set's main body cost a thousand iterations per point, rows at the left edge
a handful: the ``static`` schedule, one contiguous block of rows per worker,
leaves one worker with most of the work, while ``dynamic`` hands out rows
as workers free up. The busy time of each worker shows the difference.

The picture is a shared array (``shoal.shared.zeros``): every worker writes
its rows straight into it, and the parent sees them without anything being
sent back. (Needs numpy.)

    python examples/mandelbrot.py [--width 500] [--height 400] [--max-iter 1000]
                                  [--workers N] [--out mandelbrot.pgm]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import time

import numpy as np
import shoal

RE = (-2.0, 1.0)  # the real axis, down the rows
IM = (-1.2, 1.2)  # the imaginary axis, along each row


def mandelbrot_row(x: int, width: int, height: int, max_iter: int) -> list[int]:
    """Iteration counts for row ``x``: the points ``re + i*im`` with ``re``
    fixed by the row and ``im`` running across it."""
    cr = RE[0] + (RE[1] - RE[0]) * x / width
    counts = []
    for y in range(height):
        ci = IM[0] + (IM[1] - IM[0]) * y / height
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


def fill_row(x: int, image: np.ndarray, max_iter: int) -> None:
    """The loop body: computes row ``x`` into the shared ``image``."""
    width, height = image.shape
    image[x] = mandelbrot_row(x, width, height, max_iter)


def save_pgm(path: str, image: np.ndarray, max_iter: int) -> None:
    """A greyscale picture (points in the set black), real axis across."""
    # A power below 1 brings out the slow-escaping points near the set.
    grey = (255 - 255 * (image.T / max_iter) ** 0.3).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(f"P5 {image.shape[0]} {image.shape[1]} 255\n".encode())
        f.write(grey.tobytes())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=500, help="rows (points on the real axis)")
    parser.add_argument("--height", type=int, default=400, help="points per row")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="write the picture here (PGM)")
    args = parser.parse_args(argv)
    row = functools.partial(
        mandelbrot_row, width=args.width, height=args.height, max_iter=args.max_iter
    )
    print(
        f"Mandelbrot, {args.width} x {args.height} points, at most {args.max_iter} "
        f"iterations, {args.workers} processes"
    )
    started = time.perf_counter()
    serial = np.array([row(x) for x in range(args.width)], dtype=np.int32)
    t_serial = time.perf_counter() - started
    print(f"  serial            {t_serial:6.2f} s")
    image = shoal.shared.zeros((args.width, args.height), dtype=np.int32)
    body = functools.partial(fill_row, image=image, max_iter=args.max_iter)
    # Workers import numpy at start, so the first loop's time is the loop's.
    with shoal.Pool(args.workers, importlib.import_module, ("numpy",)) as pool:
        for schedule in ("dynamic", "static"):
            image[:] = 0
            result = shoal.parallel_for(args.width, body, schedule=schedule, backend=pool)
            assert (image == serial).all(), "the workers' rows differ from the serial ones"
            busy = ", ".join(f"{b:.2f}" for b in result.busy)
            print(
                f"  {schedule:<8} {result.wall:6.2f} s  speed-up {t_serial / result.wall:4.2f}x  "
                f"busy per worker [{busy}] s, imbalance {result.imbalance:.2f}"
            )
    if args.out:
        save_pgm(args.out, image, args.max_iter)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
