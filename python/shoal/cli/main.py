"""The ``shoal`` command."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

from .. import __version__, _shoal
from ..cpus import cpu_count
from ..errors import CheckpointError
from ..slurm import add_commands as add_slurm_commands
from ..trace.format import plural
from . import datasets
from . import demo as _demo
from . import run as _run
from .measure import add_commands

#: What `shoal --help` says first (plain text: argparse prints it as it is).
DESCRIPTION = (
    "shoal: parallel computing for Python, with its engine written in Rust. "
    "These commands measure the workshops' lessons on this machine, look into "
    "checkpoint stores, turn traces into reports, benchmark a function's speed-up "
    "and check the installation."
)


def _version() -> str:

    return f"shoal {__version__} (Python {platform.python_version()})"


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def demo(args: argparse.Namespace) -> int:

    workers = args.workers or cpu_count()
    print(f"shoal demo: the workshops' lessons on {plural(workers, 'worker')}", end="")
    print(f" (median of {args.rounds} alternating rounds)\n", flush=True)
    if (warning := _demo.busy_warning(cpu_count())) is not None:
        print(warning + "\n")
    lessons = _demo.run(
        workers, args.scale, args.rounds, lambda lesson: print(_demo.table(lesson) + "\n")
    )
    with open(args.html, "w", encoding="utf-8") as f:
        f.write(_demo.page(lessons, workers))
    print(f"timelines of the parallel runs: {args.html}")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _when(seconds: int | None) -> str:

    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def checkpoint(args: argparse.Namespace) -> int:
    """``shoal checkpoint info FILE`` / ``shoal checkpoint clear FILE [--function NAME]``."""

    try:
        # A missing or empty file is refused, not made into a store.
        store = _shoal.Store(args.file, create=False)
        version, tasks, on_disk, functions = store.info()
        if args.action == "info":
            print(
                f"{args.file}: shoal checkpoint store (format {version}), "
                f"{plural(tasks, 'task')}, {_size(on_disk)} on disk"
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
    except CheckpointError as exc:
        print(f"shoal checkpoint: {exc}", file=sys.stderr)
        return 1
    what = "everything" if args.function is None else args.function
    print(
        f"cleared {what}: {plural(removed_tasks, 'task')} of "
        f"{plural(removed_functions, 'function version')}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="the workshops' lessons (GIL, threads, processes, schedules, chunking, races)",
        description="Measures the parallel-Python workshops' lessons on this machine: "
        "pure Python on threads vs processes (the GIL), I/O waits and numpy on threads, "
        "a numba loop on threads with the GIL held and released (with numba installed), "
        "the pi program, Mandelbrot with static vs dynamic schedules, tiny tasks "
        "with and without chunking, and a race condition on a shared Value with and "
        "without its lock. Prints speed-ups with one sentence per lesson and "
        "writes an HTML page with each lesson's timeline.",
    )
    p_demo.add_argument(
        "--rounds", type=_positive(int), default=3, help="alternating rounds (default 3)"
    )
    p_demo.add_argument(
        "--scale", type=_positive(float), default=1.0, help="work per lesson (default 1.0)"
    )
    p_demo.add_argument("--workers", type=_positive(int), help="default: shoal.cpu_count()")
    p_demo.add_argument(
        "--html", default="shoal-demo.html", help="timeline page (default shoal-demo.html)"
    )
    p_demo.set_defaults(run=demo)
    p_ckpt = sub.add_parser(
        "checkpoint",
        help="look into or clear a checkpoint store",
        description="Shows what a checkpoint store (map(..., checkpoint='run.sqlite')) "
        "holds, or removes stored results so they are computed again.",
    )
    ckpt = p_ckpt.add_subparsers(dest="action", required=True)
    p_info = ckpt.add_parser("info", help="tasks stored per function, size, when")
    p_info.add_argument("file", help="the store, e.g. run.sqlite")
    p_clear = ckpt.add_parser("clear", help="remove stored results")
    p_clear.add_argument("file", help="the store, e.g. run.sqlite")
    p_clear.add_argument(
        "--function", metavar="NAME", help="only this function's (qualname or module.qualname)"
    )
    p_ckpt.set_defaults(run=checkpoint)
    add_commands(sub)  # report, bench, info
    add_slurm_commands(sub)  # lab, submit
    datasets.add_command(sub)
    _run.add_command(sub)  # run
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
