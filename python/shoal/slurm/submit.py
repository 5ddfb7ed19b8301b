"""``shoal submit prog.py``: a Python program as a SLURM batch job.

Writes the batch script (``--dry-run`` prints it), submits it, and with
``--wait`` follows the job's output and returns its exit status, saying why
the job waits while it is queued. One node runs the program in the batch
script itself; several run ``srun shoal run --pool prog.py``, one task per
node, each serving the program's Pool with the node's CPUs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from . import batch, jobs
from .jobs import OK, SlurmError

#: Seconds before the time limit at which SLURM warns the program (SIGTERM;
#: SIGUSR1 through srun), so a Pool with checkpoint= can store what it has and
#: exit cleanly (``shoal.checkpoint.signals``).
TERM_BEFORE_END = 60


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="run a Python program as a SLURM batch job",
        usage="shoal submit PROGRAM [options] [-- PROGRAM'S ARGUMENTS]",
        description="Writes a batch script that runs PROGRAM on the nodes asked for, and "
        "submits it with sbatch. With --wait, follows the job's output, says why it waits "
        "while queued, and exits with the job's exit status. Otherwise exit status: 0 "
        "submitted, 1 failed (sbatch's message), 2 usage error or no SLURM here.",
    )
    _options(p)
    # Everything from the program on: options may follow it (`prog.py --nodes 2`).
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=_command, submit_parser=p)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=_positive_int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--cpus-per-node", type=_positive_int, help="CPUs on each node (default: the cluster's)"
    )
    p.add_argument("--time", help="wall time, e.g. 2:00:00 (default: the partition's)")
    p.add_argument("--partition", help="the partition (default: the cluster's)")
    p.add_argument("--account", help="the account to charge (default: yours)")
    p.add_argument("--mem", help="memory per node, e.g. 8G (default: the cluster's)")
    p.add_argument(
        "--setup",
        help="shell lines run first, e.g. 'module load python/3.11' "
        "(default: use the Python environment shoal runs in)",
    )
    p.add_argument(
        "--requeue",
        action="store_true",
        help="let SLURM requeue the job (preemption, node failure); its output is appended",
    )
    p.add_argument("--output", help="the job's output file (default shoal-PROGRAM-%%j.out)")
    p.add_argument(
        "--wait", action="store_true", help="follow the output; exit with the job's status"
    )
    p.add_argument("--dry-run", action="store_true", help="print the batch script and stop")


def _parse(args: argparse.Namespace) -> tuple[argparse.Namespace, Path, list[str]]:
    """Splits ``command`` into the program, options given after it, and the
    program's own arguments (after ``--``, or plain words)."""
    parser: argparse.ArgumentParser = args.submit_parser
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("the program to run is missing, e.g. shoal submit prog.py --nodes 2")
    rest = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    _options(rest)
    rest.add_argument("args", nargs="*")
    opts = rest.parse_args(command[1:], namespace=argparse.Namespace(**vars(args)))
    program = Path(command[0])
    if not program.is_file():
        parser.error(f"{command[0]}: no such file")
    return opts, program.resolve(), opts.args


def _command(args: argparse.Namespace) -> int:
    opts, program, program_args = _parse(args)
    try:
        if not opts.dry_run:
            jobs.require("sbatch")
        text = script(opts, program, program_args)
        if opts.dry_run:
            print(text, end="")
            return OK
        job = jobs.sbatch(text)
        output = _output_path(job, opts, program)
        _status(f"submitted job {job}; its output goes to {output}")
        if not opts.wait:
            return OK
        try:
            return follow(job, output)
        except KeyboardInterrupt:
            _status(f"stopped following job {job}; it goes on (scancel {job} stops it)")
            return 130
    except SlurmError as e:
        print(f"shoal submit: error: {e}", file=sys.stderr)
        return e.code


def script(opts: argparse.Namespace, program: Path, program_args: list[str]) -> str:
    python = "python3" if opts.setup else shlex.quote(sys.executable)
    line = " ".join(shlex.quote(a) for a in [str(program), *program_args])
    if opts.nodes == 1:
        # The program is the batch script's process, so --signal reaches it.
        body = f"exec {python} {line}"
        warning = "TERM"
    else:
        # One task per node; each serves the program's Pool on that node's CPUs.
        body = f"exec srun {python} -m shoal run --pool {line}"
        # srun answers SIGTERM by ending the job at once, and passes SIGUSR1
        # on to the tasks (the program's rank stores its checkpoint).
        warning = "USR1"
    if opts.requeue:
        # The program asks SLURM to requeue the job when it is warned
        # (shoal.checkpoint.signals): the requeued job resumes.
        body = "export SHOAL_REQUEUE=1\n" + body
    directives = {
        "job-name": f"shoal-{program.stem}",
        "nodes": opts.nodes,
        "ntasks-per-node": 1,
        "cpus-per-task": opts.cpus_per_node,
        "time": opts.time,
        "partition": opts.partition,
        "account": opts.account,
        "mem": opts.mem,
        "chdir": Path.cwd(),
        "output": opts.output or f"shoal-{program.stem}-%j.out",
        "signal": f"B:{warning}@{TERM_BEFORE_END}",
        "requeue": opts.requeue,
        "open-mode": "append" if opts.requeue else None,  # a requeued run adds to the output
    }
    return batch.render(
        directives,
        setup=opts.setup,
        body=body,
        comment=f"{program.name} as a batch job, written by `shoal submit`.",
    )


def _output_path(job: int, opts: argparse.Namespace, program: Path) -> Path:
    """The job's output file: as SLURM resolved it, else from the pattern."""
    info = jobs.details(job) or {}
    if info.get("StdOut"):
        return Path(info["StdOut"])
    pattern = opts.output or f"shoal-{program.stem}-%j.out"
    return Path.cwd() / pattern.replace("%j", str(job))


def follow(job: int, output: Path) -> int:
    """Copies the job's output here as it grows until the job ends; says why
    it waits while it is queued. Returns the job's exit status."""
    offset, said, pause = 0, None, 0.2
    while True:
        j = jobs.find(job)
        offset = _copy(output, offset)
        if j is None or j.state not in jobs.LIVE:
            break
        news = j.state if j.state != "PENDING" else f"pending: {jobs.explain(j.reason)}"
        if j.state == "RUNNING":
            news = f"running on {j.nodes}"
        if news != said and not (j.state == "PENDING" and j.reason == "None" and said):
            # (reason None: between two scheduling passes; nothing to tell)
            _status(f"job {job} is {news}")
            said = news
        if j.state == "PENDING" and jobs.never_starts(j.reason):
            raise SlurmError(
                f"job {job} cannot start as submitted ({j.reason}); it stays queued until "
                f"you change it or scancel {job}"
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)
    # The last lines may reach a shared file system after the job ended.
    time.sleep(0.3)
    _copy(output, offset)
    how = None
    for _ in range(10):  # the controller records the end a moment after squeue drops it
        if (how := jobs.outcome(job)) is not None:
            break
        time.sleep(0.3)
    if how is None:
        raise SlurmError(f"job {job} ended, but SLURM no longer knows how (no accounting)")
    _status(f"job {job} {how.state}, exit status {how.status}")
    return how.status


def _copy(output: Path, offset: int) -> int:
    """Writes what the output file gained since ``offset``; the new offset."""
    try:
        with open(output, "rb") as f:
            f.seek(0, 2)
            if f.tell() < offset:  # rewritten (a requeued job without append)
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return offset + len(data)


def _status(text: str) -> None:
    print(f"shoal submit: {text}", file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
