"""The launcher: ``srun shoal run --pool prog.py [args]``, ``mpiexec -n N
python -m shoal.cluster prog.py [args]``.

Under an MPI launch of several tasks, rank 0 runs the program and the other
ranks serve its Pools (``cluster.server``); without one (or with a single
task), the program runs here with ordinary local Pools. Either way the exit
status is the program's: 0, ``sys.exit``'s code, 1 after an uncaught
exception, 130 after Ctrl-C.

Nothing waits forever. When the program ends (normally, by an exception or
``sys.exit``) the serving ranks are told to stop and do. A serving rank
that is lost (see ``cluster.link``) ends the run with an error naming it:
once the program returns, rank 0 aborts the MPI job, so no rank waits for
one that is gone. A serving rank that hears nothing from rank 0 for the
time limit (``SHOAL_MPI_TIMEOUT`` seconds, default 60) aborts the job too.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback

#: Environment variables that give the number of tasks a launcher started:
#: Open MPI's mpiexec, MPICH-style PMI (Hydra, Intel MPI), SLURM's srun.
TASK_COUNTS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
#: Set by a launcher that does not say how many tasks it started.
LAUNCHER_MARKS = ("PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")

DEFAULT_TIMEOUT = 60.0


def launched_tasks(environ=os.environ) -> int | None:
    """How many tasks the launcher that started this process started: a
    number, 0 if a launcher started it without saying, None if none did."""
    for name in TASK_COUNTS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    if any(name in environ for name in LAUNCHER_MARKS):
        return 0
    return None


def timeout_setting(environ=os.environ) -> float:
    """Seconds a rank may say nothing before it counts as lost."""
    text = environ.get("SHOAL_MPI_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SystemExit(
            f"shoal: SHOAL_MPI_TIMEOUT must be a positive number of seconds, got {text!r}"
        )
    return value


def run_pool(program: str, args: list[str]) -> int:
    """Runs ``program`` with ``args`` as ``__main__``; under an MPI launch of
    several tasks, on rank 0 with the other ranks serving its Pools. Returns
    the exit status."""
    tasks = launched_tasks()
    if tasks is None or tasks == 1:
        return run_program(program, args)
    try:
        from mpi4py import MPI
    except ImportError:
        _say(f"{tasks or 'several'} tasks were started, and serving a Pool from them needs "
             "mpi4py: pip install 'shoal[mpi]'")  # fmt: skip
        return 2
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        if tasks > 1:
            # Each task is an MPI world of its own: the launcher's MPI
            # plugin is not the one mpi4py's MPI speaks.
            if os.environ.get("SLURM_PROCID", "0") == "0":
                _say(
                    f"srun started {tasks} tasks, but MPI sees each one alone; start them "
                    "with srun --mpi=pmix (or the MPI your cluster's mpi4py was built with)"
                )
            return 2
        return run_program(program, args)
    timeout = timeout_setting()
    comm = comm.Dup()
    # An error reaching a rank is an exception here, not an abort.
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    if comm.Get_rank() == 0:
        status, clean = _program_rank(comm, timeout, program, args)
    else:
        from .server import serve

        status = serve(comm, timeout)
        clean = status == 0
    if not clean:
        _abort(comm, status or 1)
    return status


def _program_rank(comm, timeout: float, program: str, args: list[str]) -> tuple[int, bool]:
    from .link import ClusterError, Link
    from .world import serve_pools_with

    link = Link(comm, timeout)
    try:
        link.start()
    except ClusterError as exc:
        _say(f"the ranks of this MPI launch cannot serve the program: {exc}")
        return 1, False
    serve_pools_with(link)
    try:
        status = run_program(program, args)
    finally:
        serve_pools_with(None)
        clean = link.stop()
    if not clean:
        _say("the run ends with an error: " + "; ".join(link.lost))
        status = status or 1
    return status, clean


def _abort(comm, status: int) -> None:
    """Ends the whole MPI job (no rank waits for a lost one), after writing
    what this process still holds: its checkpoint stores and its output."""
    from ..checkpoint.store import flush_all

    flush_all()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    comm.Abort(status)


def run_program(program: str, args: list[str]) -> int:
    """Runs ``program`` as ``__main__`` with ``sys.argv`` set, as ``python
    program args`` would; returns its exit status."""
    if not os.path.isfile(program):
        _say(f"{program}: no such file")
        return 2
    path = os.path.abspath(program)
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    sys.argv = [program, *args]
    if sys.path:
        sys.path[0] = os.path.dirname(path)
    else:
        sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _exit_status(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:  # noqa: BLE001 - reported as Python would
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    return 0


def _exit_status(code) -> int:
    """What ``sys.exit(code)`` makes the exit status (a message is printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _say(text: str) -> None:
    print(f"shoal: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ CLI glue
def add_pool_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--pool`` to ``shoal run``'s parser (which has ``program`` and
    ``args``)."""
    parser.add_argument(
        "--pool",
        action="store_true",
        help="under srun or mpiexec: rank 0 runs PROGRAM, every other rank serves its "
        "shoal.Pool() with the cores it was given; elsewhere, run it with a local Pool",
    )


def main_pool(args: argparse.Namespace) -> int:
    """``shoal run --pool PROGRAM [ARGS]``."""
    return run_pool(args.program, list(args.args))


def main(argv: list[str] | None = None) -> int:
    """``python -m shoal.cluster PROGRAM [ARGS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m shoal.cluster",
        description="Runs PROGRAM; under srun or mpiexec, rank 0 runs it and every other rank "
        "serves its shoal.Pool() with the cores it was given (outside an MPI launch, "
        "Pools are local).",
    )
    parser.add_argument("program", help="the Python program to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    args = parser.parse_args(argv)
    return run_pool(args.program, args.args)
