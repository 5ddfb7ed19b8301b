"""The ``shoal report``, ``shoal bench`` and ``shoal info`` commands: where a
run's time went, how a function scales, and what this machine offers.

Exit codes, as ruff's: 0 done, 1 the command failed, 2 the command line was
wrong. Errors go to stderr as ``shoal COMMAND: error: what to do``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from ..cpus import cpu_count, cpu_report
from ..trace.advice import advise
from ..trace.format import percent, plural, seconds
from ..trace.report import report
from ..trace.trace import Trace, TraceFormatError
from .bench import (
    amdahl_fit,
    default_workers,
    load_function,
    measure,
    parse_target,
    parse_workers,
    plot_svg,
)
from .info import cpu_limits, cpu_reason, gil_status, self_check, shared_memory, versions

OK, FAILED, USAGE = 0, 1, 2


class CommandError(Exception):
    """Ends a command with a message and an exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_report(sub)
    _add_bench(sub)
    _add_info(sub)


def _guarded(name: str, command: Callable[[argparse.Namespace], int]) -> Callable:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CommandError as e:
            print(f"shoal {name}: error: {e}", file=sys.stderr)
            return e.code

    return functools.update_wrapper(run, command)


# ------------------------------------------------------------------ report
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn a saved trace into an HTML report",
        description="Writes a self-contained HTML page (timeline per worker, utilisation, "
        "where the time went, speed-up, advice) from a trace saved with "
        "pool.trace().save('trace.json'), and prints the advice.",
    )
    p.add_argument("trace", help="the trace JSON file")
    p.add_argument(
        "-o", "--output", help="the HTML file to write (default: the trace's name, with .html)"
    )
    p.set_defaults(run=_guarded("report", report_command))


def report_command(args: argparse.Namespace) -> int:

    output = args.output or os.path.splitext(args.trace)[0] + ".html"
    if os.path.abspath(output) == os.path.abspath(args.trace):
        raise CommandError(f"the report would overwrite its trace {args.trace}; pass -o", USAGE)
    try:
        trace = Trace.load(args.trace)
    except TraceFormatError as e:
        raise CommandError(str(e)) from e
    except OSError as e:
        raise CommandError(f"cannot read {args.trace}: {e.strerror}") from e
    try:
        report(trace, output)
    except OSError as e:
        raise CommandError(f"cannot write {output}: {e.strerror}") from e
    s = trace.summary()
    print(
        f"wrote {output}: {plural(s.tasks, 'task')} on {plural(s.workers, 'worker')} in "
        f"{seconds(s.wall)}, "
        f"speed-up {s.speedup:.2f}x ({percent(s.efficiency)} efficiency)"
    )
    for advice in advise(s):
        print(f"- {advice.text}")
    return OK


# ------------------------------------------------------------------ bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure a function's speed-up as workers are added",
        description="Runs Pool(p).map(FUNCTION, inputs) for each worker count p, alternating "
        "with a plain serial loop over the same inputs, and prints the seconds (medians of the "
        "rounds), the speed-up over the serial loop and the efficiency; then "
        "fits Amdahl's law (the serial fraction f and the limit 1/f) and writes an SVG plot. "
        "The current directory is searched first for MODULE.",
    )
    p.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. mymodule:work")
    p.add_argument(
        "--inputs",
        default="range(64)",
        metavar="EXPR",
        help="a Python expression giving the inputs, evaluated in MODULE's namespace "
        "(default: range(64))",
    )
    p.add_argument(
        "--workers",
        type=_worker_counts,
        metavar="N,N,...",
        help="worker counts (default: powers of two up to cpu_count(), and cpu_count())",
    )
    p.add_argument("--rounds", type=_positive_int, default=3, help="timed rounds each (default 3)")
    p.add_argument(
        "--plot",
        default="shoal-bench.svg",
        metavar="FILE",
        help="where to write the plot (default: shoal-bench.svg)",
    )
    p.set_defaults(run=_guarded("bench", bench_command))


def _worker_counts(text: str) -> list[int]:

    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def bench_command(args: argparse.Namespace) -> int:

    fn, inputs = _bench_inputs(args.target, args.inputs)
    cores = cpu_count()
    workers = args.workers or default_workers(cores)
    rounds = (
        "one round each (a single, noisy measurement; --rounds 3 or more gives medians)"
        if args.rounds == 1
        else f"medians of {args.rounds} rounds, each timing the pool and a serial loop"
    )
    print(f"shoal bench {args.target}: {len(inputs):,} inputs, {cores} usable cores; {rounds}")
    print(f"{'workers':>7}  {'pool s':>9}  {'serial s':>9}  {'speed-up':>8}  {'efficiency':>10}")
    points = []
    try:
        for count in workers:
            point = measure(fn, inputs, count, args.rounds)
            points.append(point)
            print(
                f"{count:>7}  {point.seconds:>9.4f}  {point.serial:>9.4f}  "
                f"{point.speedup:>7.2f}x  {point.efficiency:>10.0%}",
                flush=True,
            )
    except Exception as e:  # noqa: BLE001 - the user's function may raise anything
        raise CommandError(f"{args.target} failed: {type(e).__name__}: {e}") from e
    serial_fraction = amdahl_fit(points)
    fitted = (
        "Amdahl's law fit (to single rounds: noisy)"
        if args.rounds == 1
        else f"Amdahl's law fit (to the medians of {args.rounds} rounds)"
    )
    if serial_fraction is None:
        print("Amdahl's law fit: needs a run with more than one worker")
    elif serial_fraction == 0:
        print(f"{fitted}: serial fraction f = 0: no limit to the speed-up in sight")
    else:
        print(
            f"{fitted}: serial fraction f = {serial_fraction:.3f} "
            f"({serial_fraction:.1%}); predicted limit 1/f = {1 / serial_fraction:.1f}x"
        )
    if max(workers) > cores:
        print(f"note: more workers than the {cores} cores this process may use")
    try:
        with open(args.plot, "w", encoding="utf-8") as f:
            f.write(plot_svg(points, serial_fraction, f"speed-up of {args.target}"))
    except OSError as e:
        raise CommandError(f"cannot write {args.plot}: {e.strerror}") from e
    print(f"wrote {args.plot}")
    return OK


def _bench_inputs(target: str, expression: str) -> tuple[Callable, list]:
    """The function named by ``target`` and its inputs, or a CommandError."""

    try:
        module, name = parse_target(target)
    except ValueError as e:
        raise CommandError(str(e), USAGE) from e
    try:
        fn = load_function(module, name)
    except ImportError as e:
        raise CommandError(f"cannot import {module}: {e}") from e
    except AttributeError as e:
        raise CommandError(f"{module} has no {name!r} ({e})") from e
    except TypeError as e:
        raise CommandError(str(e)) from e
    namespace = dict(vars(sys.modules[module]))
    try:
        inputs = list(eval(expression, namespace))
    except Exception as e:  # noqa: BLE001 - any error in the user's expression
        raise CommandError(
            f"--inputs {expression!r} did not give a list of inputs: {type(e).__name__}: {e}",
            USAGE,
        ) from e
    if not inputs:
        raise CommandError(f"--inputs {expression!r} is empty", USAGE)
    return fn, inputs


# ------------------------------------------------------------------ info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="versions, usable cores and why, shared memory, the GIL, and a self-check",
        description="Shows shoal's and Python's versions, how many cores shoal will use and "
        "which limit decided it (affinity, cgroup quota, SLURM), whether shared memory and the "
        "GIL are there, then starts a pool and runs a task. Exits 1 if that self-check fails.",
    )
    p.set_defaults(run=_guarded("info", info_command))


def info_command(args: argparse.Namespace) -> int:

    def line(name: str, value: str) -> None:
        print(f"{name:<16}{value}", flush=True)

    for name, value in versions():
        line(name, value)
    report = cpu_report()
    line("cpu_count()", f"{report.count}: {cpu_reason(report)}")
    for name, value in cpu_limits(report):
        line(f"  {name}", value)
    line("shared memory", shared_memory()[1])
    line("GIL", gil_status())
    passed, outcome = self_check()
    line("self-check", outcome)
    return OK if passed else FAILED
