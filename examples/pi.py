"""pi two ways, as the parallel-Python workshops compute it.

- Midpoint rule: pi = integral of 4 / (1 + x^2) over [0, 1], summed over
  n steps with ``shoal.parallel_reduce`` -- once per index (the one-liner),
  and once per chunk, so the loop inside a chunk stays in one call.
- Monte Carlo: the share of random points in the unit square that fall in
  the quarter circle is pi / 4. The samples are split into batches, each
  with its own seed, so the answer does not depend on the number of workers.

    python examples/pi.py [--steps N] [--samples N] [--workers N]
"""

from __future__ import annotations

import argparse
import random
import time

import shoal


def midpoint_chunk(start: int, stop: int, n: int) -> float:
    """The midpoint rule's terms for steps ``start..stop`` of ``n``."""
    h = 1.0 / n
    total = 0.0
    for i in range(start, stop):
        x = (i + 0.5) * h
        total += 4.0 / (1.0 + x * x)
    return total * h


def hits_in_batch(batch: int, samples: int) -> int:
    """How many of ``samples`` random points land in the quarter circle."""
    rng = random.Random(batch)
    hits = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        hits += x * x + y * y <= 1.0
    return hits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000_000, help="midpoint-rule steps")
    parser.add_argument("--samples", type=int, default=1_600_000, help="Monte Carlo samples")
    parser.add_argument("--batches", type=int, default=16, help="Monte Carlo batches")
    parser.add_argument("--workers", type=int, default=None, help="default: shoal.cpu_count()")
    args = parser.parse_args(argv)
    n = args.steps
    per_batch = args.samples // args.batches

    # One pool for the three loops (each loop alone would start its own).
    with shoal.Pool(args.workers) as pool:
        started = time.perf_counter()
        pi = shoal.parallel_reduce(n, lambda i: 4.0 / (1.0 + ((i + 0.5) / n) ** 2), backend=pool)
        pi /= n
        print(f"midpoint, one call per index: {pi:.12f}  ({time.perf_counter() - started:.2f} s)")

        started = time.perf_counter()
        pi = shoal.parallel_reduce(
            n,
            lambda start, stop: midpoint_chunk(start, stop, n),
            schedule="dynamic",
            chunk=max(1, n // 64),
            backend=pool,
        )
        print(f"midpoint, one call per chunk: {pi:.12f}  ({time.perf_counter() - started:.2f} s)")

        started = time.perf_counter()
        hits = shoal.parallel_reduce(
            args.batches, lambda b: hits_in_batch(b, per_batch), schedule="dynamic", backend=pool
        )
        pi = 4.0 * hits / (per_batch * args.batches)
        print(
            f"Monte Carlo, {per_batch * args.batches:,} samples: {pi:.6f}  "
            f"({time.perf_counter() - started:.2f} s)"
        )


if __name__ == "__main__":
    main()
