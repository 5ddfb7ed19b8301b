"""The ``shoal`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ._cli_measure import add_commands


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def demo(args: argparse.Namespace) -> int:
    from . import _demo
    from ._cpus import cpu_count

    workers = args.workers or cpu_count()
    print(f"shoal demo: the workshops' lessons on {workers} workers", end="")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo", help="the workshops' lessons (GIL, threads, processes, schedules, chunking)"
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
