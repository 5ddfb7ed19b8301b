"""This process as a rank: its endpoint on the world, the exit barrier,
and the translation of failed waits into shoal's errors.

Under ``shoal run`` (or ``shoal.spmd``) the rank's bootstrap
(``shoal.mpi.rank``) attaches to the world the launcher made. A program
started any other way (``python prog.py``) is a world of one rank, as
under MPI.
"""

from __future__ import annotations

import atexit
import os
import sys

from .. import _shoal
from ..errors import CollectiveMismatchError, DeadlockError, RankLostError, describe_exit
from . import report
from .constants import CALL_NAMES, ERR_INTERN, ERR_TRUNCATE, ERR_TYPE, FINALIZE
from .exception import MPIError

Failure = _shoal.SpmdFailure

_endpoint = None
#: Set by the bootstrap of a rank started by shoal's launcher.
attached = False
_finalized = False
#: The first context id that no communicator uses yet (0: COMM_WORLD,
#: 2: COMM_SELF); Split and Dup agree on the next one collectively.
next_ctx = 4
#: The last collectives of each communicator: {ctx: {seq: (op, root)}}.
history: dict[int, dict[int, tuple[int, int]]] = {}

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def where() -> str:
    """The line of the user's program that made the current call."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return ""
    path = frame.f_code.co_filename
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:
        pass
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"


def _spin(size: int) -> tuple[float, bool]:
    """How long a wait polls before sleeping, and whether it yields its
    core while polling (more ranks than cores). ``SHOAL_MPI_SPIN_US``
    sets the first."""
    from ..cpus import cpu_count

    oversubscribed = size > cpu_count()
    # Polling keeps a rank on its core: a reply is seen at once, not after
    # the scheduler wakes a sleeper (which on a busy machine takes
    # milliseconds). MPI libraries poll without end; shoal polls for 10 ms,
    # then sleeps (and says where it waits). With more ranks than cores, a
    # polling rank gives its core away at each look, and polls briefly.
    default = 100.0 if oversubscribed else 10_000.0
    return float(os.environ.get("SHOAL_MPI_SPIN_US", default)), oversubscribed


def attach(rank: int, size: int, world, inbox, outboxes) -> None:
    """Connects this process to a world as `rank` (the bootstrap's call)."""
    global _endpoint, attached
    spin, yield_in_spin = _spin(size)
    _endpoint = _shoal.Endpoint(rank, world, inbox, outboxes, spin, yield_in_spin, where)
    attached = True
    atexit.register(_at_exit)


def endpoint():
    """This rank's endpoint (a world of one rank if nothing attached one)."""
    global _endpoint
    if _endpoint is None:
        world, inboxes = _shoal.local_world(1)
        spin, yield_in_spin = _spin(1)
        _endpoint = _shoal.Endpoint(
            0, world, inboxes[0][1], [inboxes[0][0]], spin, yield_in_spin, where
        )
        atexit.register(_at_exit)
    return _endpoint


# --------------------------------------------------------------- the exit


def finalize() -> None:
    """The exit barrier: waits until every rank has finished its program,
    then checks that no collective message was left unreceived (ranks that
    called different collectives). Runs once, at exit."""
    global _finalized
    if _finalized or _endpoint is None:
        return
    _finalized = True
    left = _endpoint.finalize(FINALIZE)
    stray = [m for m in left if m[3] != 0]
    if stray:
        src, ctx, seq, op, root = stray[0]
        call = report.describe_call(op, ctx, src, seq, seq, root)
        mine = history.get(ctx, {}).get(seq)
        if mine is None:
            own = f"it called no collective #{seq + 1} there"
        else:
            own = "its own was " + report.describe_call(mine[0], ctx, -1, seq, seq, mine[1])
        raise CollectiveMismatchError(
            f"rank {_endpoint.rank} ended with a message of {call} from rank {src} that none "
            f"of its collectives took ({own}): the ranks called different collectives (or "
            "the same ones with different roots, or a different number of them)"
        )


def _at_exit() -> None:
    try:
        finalize()
    except CollectiveMismatchError as exc:
        sys.stdout.flush()
        print(f"shoal.CollectiveMismatchError: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    except KeyboardInterrupt:
        os._exit(130)


def is_finalized() -> bool:
    return _finalized


def abort(code: int) -> None:
    """Ends the whole job with `code` (``Comm.Abort``)."""
    ep = endpoint()
    ep.abort(int(code))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(int(code) & 0xFF if code else 1)


# ------------------------------------------------------------- the errors


def failure(
    exc: BaseException,
    call: int,
    ctx: int,
    peer: int = -1,
    tag: int = -1,
    root: int = -1,
    seq: int = 0,
) -> BaseException:
    """The error to raise for a failed wait (`exc` an ``SpmdFailure``)."""
    if not isinstance(exc, Failure):
        return exc
    kind, *details = exc.args
    ep = _endpoint
    me = ep.rank if ep is not None else 0
    doing = report.describe_call(call, ctx, peer, tag, seq, root)
    loc = where()
    at = f" at {loc}" if loc else ""
    if kind == "lost":
        rank, _order, code, signal, finalized = details
        how = "has finished" if finalized else describe_exit(code, signal)
        if code not in (None, 0) and signal is None:
            how += " (an uncaught exception or sys.exit: see its output)"
        return RankLostError(
            f"rank {rank} {how} while rank {me} waits in {doing}{at}; what it waits for "
            "can never come",
            rank=rank,
            exitcode=code,
            signal=signal,
        )
    if kind == "deadlock":
        snapshot = details[0] if details else ep.snapshot()
        mismatch = report.collective_mismatch(snapshot)
        lines = report.waits(snapshot, at_verdict=True)
        picture = "\n".join(f"  {line}" for line in lines)
        if mismatch is not None:
            return CollectiveMismatchError(
                "the ranks called different collectives (or roots) at the same point, and "
                f"wait for each other:\n{picture}"
            )
        waiting = ep.pending() if ep is not None else []
        if waiting:
            listed = "; ".join(
                f"from rank {src}: {report.describe_message(ctx, tag, op, root, nbytes)}"
                for src, ctx, tag, op, root, nbytes in waiting[:5]
            )
            more = f" (and {len(waiting) - 5} more)" if len(waiting) > 5 else ""
            picture += f"\n  messages that reached rank {me} and no receive takes: {listed}{more}"
        return DeadlockError(
            "deadlock: every rank still running waits for another, and nothing on the way "
            f"can wake any of them:\n{picture}",
            lines,
        )
    if kind == "mismatch":
        src, op, root_got, seq_got, my_op, my_root, my_seq = details
        theirs = report.describe_call(op, ctx, src, seq_got, seq_got, root_got)
        mine = report.describe_call(my_op, ctx, src, my_seq, my_seq, my_root)
        return CollectiveMismatchError(
            f"rank {me} called {mine}{at}, but rank {src} sent it a message of {theirs}: "
            "every rank of a communicator must call the same collectives, with the same "
            "root, in the same order"
        )
    if kind == "truncated":
        src, tag_got, total, cap = details
        return MPIError(
            ERR_TRUNCATE,
            f"{CALL_NAMES.get(call, 'Recv')}: the message from rank {src} (tag {tag_got}) "
            f"has {total} bytes but the buffer holds {cap}; it was left in the queue, so a "
            "receive with a large enough buffer gets it",
        )
    if kind == "dtype":
        from .datatypes import name_of

        src, tag_got, sent, want = details
        return MPIError(
            ERR_TYPE,
            f"{CALL_NAMES.get(call, 'Recv')}: rank {src} sent {name_of(sent)} values (tag "
            f"{tag_got}) but the buffer holds {name_of(want)}; it was left in the queue",
        )
    return MPIError(ERR_INTERN, f"{kind}: {details}")
