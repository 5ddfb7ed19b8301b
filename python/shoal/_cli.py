"""The ``shoal`` command."""

from __future__ import annotations

import argparse
import os
import sys

from ._cli_measure import add_commands


def _pi_chunk(start: int, stop: int, n: int) -> float:
    """Midpoint-rule partial sum of 4/(1+x^2) over steps [start, stop)."""
    h = 1.0 / n
    s = 0.0
    for i in range(start, stop):
        x = (i + 0.5) * h
        s += 4.0 / (1.0 + x * x)
    return s * h


def demo(args: argparse.Namespace) -> int:
    import statistics
    import time

    import shoal

    n, chunks, rounds = args.steps, 64, args.rounds
    bounds = [(i * n // chunks, (i + 1) * n // chunks, n) for i in range(chunks)]
    workers = shoal.cpu_count()
    print(f"shoal demo: pi by the midpoint rule, {n:,} steps in {chunks} chunks")
    print(f"cores this process may use: {workers}")
    serial_times, pool_times = [], []
    with shoal.Pool(workers) as pool:
        pool.map(abs, [0])  # workers up
        # CPU speed on shared machines drifts: alternate the two and take medians.
        for _ in range(rounds):
            t0 = time.perf_counter()
            serial = sum(_pi_chunk(*b) for b in bounds)
            serial_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            parallel = sum(pool.starmap(_pi_chunk, bounds))
            pool_times.append(time.perf_counter() - t0)
    t_serial, t_pool = statistics.median(serial_times), statistics.median(pool_times)
    print(f"{'':10}{'pi':>20}{'seconds':>10}   (median of {rounds} alternating rounds)")
    print(f"{'serial':10}{serial:20.15f}{t_serial:10.3f}")
    print(f"{'Pool':10}{parallel:20.15f}{t_pool:10.3f}")
    print(f"speed-up with {workers} workers: {t_serial / t_pool:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the workshop examples and show the speed-up")
    p_demo.add_argument("--steps", type=int, default=4_000_000, help="pi steps (default 4e6)")
    p_demo.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p_demo.set_defaults(run=demo)
    add_commands(sub)  # report, bench, info
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `shoal info | head`: the reader left early; not a failure (as ruff).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
