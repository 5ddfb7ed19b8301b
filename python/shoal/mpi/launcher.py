"""Starting and watching ranks on this machine: ``shoal run -n N prog.py``
and ``shoal.spmd(fn, n, *args)``.

The ranks are fresh interpreters (``python -P -m shoal.mpi.rank``: no
current directory on ``sys.path``), started by the engine from a thread
that lives as long as this process, so they die with it. They talk to
each other directly, through shared memory; this side only watches: it
prints their output tagged ``[rank R]``, and the engine records how each
ended (waking the ranks that wait on it) and looks for deadlocks.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .. import _shoal
from ..errors import RankLostError, ShoalError, describe_exit
from ..pool.outcome import RemoteTraceback
from ..pool.workers import worker_env
from ..wire.serialize import loads
from ..wire.transfer import pack, unpack
from . import report

#: How often the engine looks at the ranks for a deadlock.
TICK = 0.1
#: After Ctrl-C (or a timeout), how long ranks get to end before SIGKILL.
GRACE = 1.0


def _command(n: int, caller_path: bool) -> tuple[str, list[str], list[tuple[str, str]]]:
    """How to start a rank. Ranks of ``shoal run`` find shoal (and what
    the program imports, as ``python prog.py`` would); ranks of ``spmd``
    get the caller's ``sys.path``, so its functions unpickle there."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    entries = [package_parent]
    if caller_path:
        entries += [p for p in sys.path if p]
    elif os.environ.get("PYTHONPATH"):
        entries.append(os.environ["PYTHONPATH"])
    env = [("PYTHONUNBUFFERED", "1"), ("PYTHONPATH", os.pathsep.join(entries))]
    # As in a pool: numeric libraries get cores // ranks threads each.
    return sys.executable, ["-P", "-m", "shoal.mpi.rank"], env + worker_env(n)


class Launch:
    """A job of `n` ranks that were each sent `job` (see ``rank.py``)."""

    def __init__(self, n: int, job: tuple, stdin_to_rank0: bool, by_value: bool) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"the number of ranks must be a positive int, not {n!r}")
        packed = pack(job, by_value=by_value)
        body, fds = (packed, ()) if type(packed) is bytes else packed
        program, args, env = _command(n, caller_path=job[0] == "spmd")
        self.n = n
        self.job = _shoal.Job(n, program, args, env, body, fds, stdin_to_rank0, TICK)
        self.ended: dict[int, tuple] = {}
        self.first_failure: tuple | None = None
        self.messages: list[tuple[int, bytes, list]] = []
        self.deadlock = False
        self.aborted: tuple[int, int] | None = None
        self.finished = False

    def write(self, stream: int, text: bytes) -> None:
        out = sys.stdout if stream == 1 else sys.stderr
        binary = getattr(out, "buffer", None)
        if binary is not None:
            out.flush()
            binary.write(text)
            binary.flush()
        else:  # a notebook's stream
            out.write(text.decode("utf-8", "backslashreplace"))
            out.flush()

    def pump(self, timeout: float | None) -> None:
        """Handles what happened, waiting at most `timeout` for something."""
        for event in self.job.events(timeout):
            kind = event[0]
            if kind == "output":
                self.write(event[1], event[2])
            elif kind == "ended":
                _, rank, code, sig = event
                self.ended[rank] = (code, sig)
                if (code != 0 or sig is not None) and self.first_failure is None:
                    self.first_failure = (rank, code, sig)
            elif kind == "message":
                self.messages.append((event[1], event[2], event[3]))
            elif kind == "deadlock":
                self.deadlock = True
            elif kind == "aborted":
                self.aborted = (event[1], event[2])
            elif kind == "finished":
                self.finished = True

    def wait(self, deadline: float | None = None) -> bool:
        """Pumps until every rank has ended (True) or `deadline` (False)."""
        while not self.finished:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.pump(left if left is None or left < 1.0 else 1.0)
        return True

    def stop(self) -> None:
        """SIGTERM to every rank, SIGKILL to those still there after GRACE."""
        self.job.signal(signal.SIGTERM)
        if not self.wait(time.monotonic() + GRACE):
            self.job.signal(signal.SIGKILL)
            self.wait(time.monotonic() + 10)

    def picture(self) -> str:
        return "\n".join(f"  {line}" for line in report.waits(self.job.snapshot()))

    def exit_code(self) -> int:
        if self.aborted is not None:
            return self.aborted[1] & 0xFF or 1
        if self.first_failure is None:
            return 0
        _, code, sig = self.first_failure
        return 128 + sig if sig is not None else code & 0xFF or 1

    def close(self) -> None:
        self.job.close()


def run(path: str, argv: list[str], n: int, timeout: float | None = None) -> int:
    """``shoal run``: runs `path` on `n` ranks; returns the exit status."""
    launch = Launch(n, ("run", os.path.abspath(path), list(argv)), True, False)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if not launch.wait(deadline):
            picture = launch.picture()
            launch.job.signal(signal.SIGKILL)
            launch.wait(time.monotonic() + 10)
            print(
                f"shoal run: stopped after the timeout of {timeout:g} s; the ranks were:\n"
                f"{picture}",
                file=sys.stderr,
            )
            return 124
    except KeyboardInterrupt:
        launch.stop()
        print("shoal run: interrupted; every rank was stopped", file=sys.stderr)
        return 130
    finally:
        launch.close()
    return _summary(launch)


def _summary(launch: Launch) -> int:
    code = launch.exit_code()
    if launch.aborted is not None:
        rank, abort_code = launch.aborted
        print(f"shoal run: rank {rank} called Abort({abort_code})", file=sys.stderr)
    elif launch.deadlock:
        print(
            "shoal run: deadlock: every rank still running waited for another; each "
            "raised DeadlockError (above)",
            file=sys.stderr,
        )
    elif launch.first_failure is not None:
        rank, c, sig = launch.first_failure
        print(f"shoal run: rank {rank} {describe_exit(c, sig)} first", file=sys.stderr)
    return code


def spmd(fn, n: int = 4, *args, **kwargs) -> list:
    """Runs ``fn(*args, **kwargs)`` on `n` ranks (fresh processes on this
    machine) and returns their return values as a list, rank 0 first.
    Inside, ``from shoal import MPI`` gives the ranks' ``COMM_WORLD``; what
    they print appears here, tagged ``[rank R]``. A rank that raises makes
    ``spmd`` raise that exception (with the rank's traceback as cause)."""
    if not callable(fn):
        raise TypeError(f"spmd needs a function to run, not {type(fn).__name__}")
    launch = Launch(n, ("spmd", fn, args, kwargs, list(sys.path)), False, True)
    try:
        launch.wait()
    except KeyboardInterrupt:
        launch.stop()
        raise
    finally:
        launch.close()
    results: list = [None] * n
    have = [False] * n
    failure = None
    for rank, body, fds in launch.messages:
        kind, value = loads(body) if not fds else unpack(body, fds)
        if kind == "ok":
            results[rank], have[rank] = value, True
        elif failure is None:
            exc, tb = loads(value)
            exc.__cause__ = RemoteTraceback(tb)
            exc.add_note(f"(raised by rank {rank} of shoal.spmd)")
            failure = exc
    if failure is not None:
        raise failure
    if launch.aborted is not None:
        rank, code = launch.aborted
        raise ShoalError(f"rank {rank} called Abort({code})")
    for rank in range(n):
        if not have[rank]:
            code, sig = launch.ended.get(rank, (None, None))
            raise RankLostError(
                f"rank {rank} of shoal.spmd {describe_exit(code, sig)} without returning",
                rank=rank,
                exitcode=code,
                signal=sig,
            )
    return results
