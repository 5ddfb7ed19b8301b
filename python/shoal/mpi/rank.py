"""``python -P -m shoal.mpi.rank``: one rank of a job started by shoal's
launcher (``shoal run``, ``shoal.spmd``). It attaches to the world, reads
what to run from its control socket, runs it, and exits as ``python
prog.py`` would; a rank whose program raised exits at once (without the
exit barrier), so the ranks waiting for it learn that it is gone."""

from __future__ import annotations

import os
import runpy
import sys
import traceback

from .. import _shoal
from ..cpus import cpu_count
from ..wire.serialize import dumps_exception, loads
from ..wire.transfer import pack, unpack
from . import payload, runtime


def _attach():

    try:
        rank = int(os.environ.pop("SHOAL_MPI_RANK"))
        size = int(os.environ.pop("SHOAL_MPI_SIZE"))
        control = _shoal.adopt_fd(3)
        world = _shoal.adopt_fd(4)
        inbox = _shoal.adopt_fd(5)
        outboxes = [_shoal.adopt_fd(6 + i) for i in range(size)]
    except (KeyError, ValueError) as exc:
        print(
            f"shoal.mpi.rank: {exc}: this module is started by shoal run and shoal.spmd",
            file=sys.stderr,
        )
        sys.exit(2)
    _bind(rank, size)
    runtime.attach(rank, size, world, inbox, outboxes)
    return _shoal.MessageQueue(control, control)


def _bind(rank: int, size: int) -> None:
    """Rank r runs on the r-th core this process may use, when every rank
    has one (as Open MPI binds ranks to cores): two ranks never share a core
    while another sits idle, which makes a polling rank wait for its peer's
    turn. ``SHOAL_MPI_BIND=0`` leaves placement to the kernel."""
    if os.environ.get("SHOAL_MPI_BIND", "1") == "0":
        return

    cores = sorted(os.sched_getaffinity(0))
    if size > min(len(cores), cpu_count()):
        return
    try:
        os.sched_setaffinity(0, {cores[rank]})
    except OSError:
        pass


def _exit_now(code: int) -> None:
    """Leaves without the exit barrier (the program failed)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _print_exception(exc: BaseException, path: str | None) -> None:

    tb = exc.__traceback__
    if path is not None:  # from the program's own frames on, as python prog.py shows it
        first = tb
        while first is not None and first.tb_frame.f_code.co_filename != path:
            first = first.tb_next
        tb = first or tb
    traceback.print_exception(type(exc), exc, tb)


def _run_program(path: str, argv: list[str]) -> int:

    payload.main_by_value = False  # every rank runs this same __main__
    runtime.endpoint().main_by_value = False
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return 0
        if not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        _exit_now(code)
    except BaseException as exc:  # noqa: BLE001 - reported as python prog.py does
        _print_exception(exc, path)
        _exit_now(1)
    return 0


def _run_function(control, fn, args, kwargs, path: list[str]) -> int:

    sys.path[:] = path
    try:
        value = fn(*args, **kwargs)
        runtime.finalize()
        packed = pack(("ok", value), by_value=True)
        failed = False
    except BaseException as exc:  # noqa: BLE001 - sent back to the caller
        packed = pack(("error", dumps_exception(exc)))
        failed = True
    body, fds = (packed, ()) if type(packed) is bytes else packed
    control.put(body, fds, None)
    if failed:
        _exit_now(1)
    return 0


def main() -> int:

    control = _attach()
    body, fds = control.get(None)
    job = loads(body) if not fds else unpack(body, fds)
    if job[0] == "run":
        return _run_program(job[1], job[2])
    return _run_function(control, *job[1:])


if __name__ == "__main__":
    sys.exit(main())
