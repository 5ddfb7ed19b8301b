"""Words for what ranks are doing: the lines of a ``DeadlockError``, a
``RankLostError``, a ``CollectiveMismatchError`` and of ``shoal run``'s
report on a timeout. Built from the world's status slots (see
``Endpoint.snapshot``): ``(pid, state, ended_order, exit_code, signal,
finalized, op, ctx, peer, tag, seq, root, location, drained)``."""

from __future__ import annotations

from .. import _shoal
from ..errors import describe_exit
from .constants import (
    ANY_SOURCE,
    ANY_TAG,
    CALL_NAMES,
    FINALIZE,
    PROBE,
    RECV,
    ROOTED,
    SEND,
    SENDRECV,
    WAIT,
)

RUNNING = _shoal.SPMD_STATE_RUNNING
BLOCKED = _shoal.SPMD_STATE_BLOCKED
FINALIZING = _shoal.SPMD_STATE_FINALIZING

#: Communicators' names by context id (a rank names those it belongs to).
comm_names: dict[int, str] = {0: "COMM_WORLD", 2: "COMM_SELF"}


def comm_name(ctx: int) -> str:
    base = ctx & ~1
    return comm_names.get(base, f"communicator #{base // 2}")


def _source(peer: int) -> str:
    return "ANY_SOURCE" if peer == ANY_SOURCE else str(peer)


def _tag(tag: int) -> str:
    return "ANY_TAG" if tag == ANY_TAG else str(tag)


def describe_call(op: int, ctx: int, peer: int, tag: int, seq: int, root: int) -> str:
    """'recv(source=1, tag=0) on COMM_WORLD', 'bcast(root=0) on
    COMM_WORLD (collective #3)'."""
    name = CALL_NAMES.get(op, f"call {op}")
    where = comm_name(ctx)
    if op in (RECV, PROBE, SENDRECV):
        return f"{name}(source={_source(peer)}, tag={_tag(tag)}) on {where}"
    if op == SEND:
        return f"send to rank {peer} on {where} (its queue is full)"
    if op == WAIT:
        return "wait on receive requests"
    if op == FINALIZE:
        return name
    args = f"root={root}" if op in ROOTED else ""
    return f"{name}({args}) on {where} (collective #{seq + 1})"


def describe_message(ctx: int, tag: int, op: int, root: int, nbytes: int) -> str:
    """'tag 5 on COMM_WORLD (80 bytes)', or a collective's message."""
    if op:
        what = describe_call(op, ctx, -1, tag, tag, root)
        return f"a message of {what}"
    return f"tag {tag} on {comm_name(ctx)} ({nbytes} bytes)"


def describe_slot(rank: int, slot: tuple, at_verdict: bool = False) -> str:
    """One line on what `rank` is doing, or how it ended. `at_verdict`: a
    deadlock was declared, so every live rank was waiting then (one that
    runs now has just woken to raise); its last wait is what it waited for."""
    pid, state, order, code, signal, finalized, op, ctx, peer, tag, seq, root, loc, _ = slot
    if order:
        if finalized:
            return f"rank {rank} has finished"
        return f"rank {rank} {describe_exit(code, signal)}"
    if state == RUNNING and not (at_verdict and op):
        return f"rank {rank} is running"
    if state == FINALIZING or op == FINALIZE:
        return f"rank {rank} has finished its program and waits at exit for the others"
    waits = f" for rank {peer}" if peer >= 0 and op not in (SEND,) else ""
    at = f" at {loc}" if loc else ""
    return f"rank {rank} waits{waits} in {describe_call(op, ctx, peer, tag, seq, root)}{at}"


def waits(snapshot: list, at_verdict: bool = False) -> list[str]:
    return [describe_slot(r, slot, at_verdict) for r, slot in enumerate(snapshot)]


def collective_mismatch(snapshot: list) -> list[str] | None:
    """If ranks sleep in different collectives (or roots) of one
    communicator, the lines that show it; else None."""
    seen: dict[int, set] = {}
    for slot in snapshot:
        state, order, op, ctx, seq, root = slot[1], slot[2], slot[6], slot[7], slot[10], slot[11]
        if not order and state != FINALIZING and op >= 20 and op != FINALIZE:
            seen.setdefault(ctx & ~1, set()).add((seq, op, root if op in ROOTED else -1))
    if any(len(calls) > 1 for calls in seen.values()):
        return waits(snapshot, at_verdict=True)
    return None
