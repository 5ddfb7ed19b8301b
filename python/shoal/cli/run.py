"""``shoal run -n N prog.py [args]``: a program on N ranks of this machine."""

from __future__ import annotations

import argparse
import os
import sys

from ..cluster.launch import add_pool_flag, main_pool
from ..cpus import cpu_count
from ..mpi.launcher import run as launch


def _ranks(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not t > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return t


def add_command(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a message-passing program (from shoal import MPI) on N ranks",
        description="Runs PROGRAM on N ranks of this machine, as `mpiexec -n N python "
        "PROGRAM` would, without MPI: ranks pass messages through shared memory. Their "
        "output is tagged [rank R]. The exit status is 0 when every rank exits 0, else "
        "that of the first rank that failed. A rank that dies makes the ranks waiting for "
        "it raise RankLostError; ranks that all wait for each other raise DeadlockError.",
    )
    p.add_argument(
        "-n", "--np", dest="n", type=_ranks, metavar="N", help="ranks (default: shoal.cpu_count())"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop every rank after this long, show where each one was, and exit 124",
    )
    add_pool_flag(p)
    p.add_argument("program", help="the Python program to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.program):
        print(f"shoal run: {args.program}: no such file", file=sys.stderr)
        return 2
    if args.pool:  # one Pool served by the ranks of an MPI launch (or a local one)
        return main_pool(args)
    n = args.n if args.n is not None else cpu_count()
    return launch(args.program, args.args, n, args.timeout)
