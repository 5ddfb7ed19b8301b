"""The ``shoal`` command."""

from __future__ import annotations

import argparse
import sys


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


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _when(seconds: int | None) -> str:
    import time

    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def checkpoint(args: argparse.Namespace) -> int:
    """``shoal checkpoint info FILE`` / ``shoal checkpoint clear FILE [--function NAME]``."""
    import os

    from . import _shoal

    if not os.path.isfile(args.file):  # opening would create a store
        print(f"shoal checkpoint: {args.file}: no such file", file=sys.stderr)
        return 1
    try:
        store = _shoal.Store(args.file)
        version, tasks, on_disk, functions = store.info()
        if args.action == "info":
            print(
                f"{args.file}: shoal checkpoint store (format {version}), "
                f"{tasks:,} tasks, {_size(on_disk)} on disk"
            )
            if functions:
                print(f"{'tasks':>10} {'versions':>8} {'results':>9}  {'first stored':19}  "
                      f"{'last stored':19}  function")  # fmt: skip
            for module, qualname, versions, n, size, first, last in functions:
                print(f"{n:>10,} {versions:>8} {_size(size):>9}  {_when(first):19}  "
                      f"{_when(last):19}  {module}.{qualname}")  # fmt: skip
            return 0
        if args.function is not None and not any(
            args.function in (q, f"{m}.{q}") for m, q, *_ in functions
        ):
            names = ", ".join(sorted({f"{m}.{q}" for m, q, *_ in functions})) or "none"
            print(
                f"shoal checkpoint: no function named {args.function!r} in {args.file} "
                f"(functions stored: {names})",
                file=sys.stderr,
            )
            return 1
        removed_functions, removed_tasks = store.clear(args.function)
        store.close()
    except _shoal.CheckpointError as exc:
        print(f"shoal checkpoint: {exc}", file=sys.stderr)
        return 1
    what = "everything" if args.function is None else args.function
    print(f"cleared {what}: {removed_tasks:,} tasks of {removed_functions} function versions")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the workshop examples and show the speed-up")
    p_demo.add_argument("--steps", type=int, default=4_000_000, help="pi steps (default 4e6)")
    p_demo.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p_demo.set_defaults(run=demo)
    p_ckpt = sub.add_parser("checkpoint", help="look into or clear a checkpoint store")
    ckpt = p_ckpt.add_subparsers(dest="action", required=True)
    p_info = ckpt.add_parser("info", help="tasks stored per function, size, when")
    p_info.add_argument("file", help="the store, e.g. run.sqlite")
    p_clear = ckpt.add_parser("clear", help="remove stored results")
    p_clear.add_argument("file", help="the store, e.g. run.sqlite")
    p_clear.add_argument(
        "--function", metavar="NAME", help="only this function's (qualname or module.qualname)"
    )
    p_ckpt.set_defaults(run=checkpoint)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
