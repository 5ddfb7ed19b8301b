"""The lower-case collectives, on top of point-to-point messages in the
communicator's collective context. Each call takes the next sequence
number; every message carries it with the call's op code and root, so a
rank in another collective than its peers is caught.

An object is pickled once: a broadcast forwards the received pickle (and
the shared memory of its large arrays) down a binomial tree without
unpickling it, and ``allgather`` sends one pickle to every rank (a large
one is copied to shared memory once for all of them). Reductions combine
values in rank order along a binomial tree, so an op need not commute.
"""

from __future__ import annotations

from .constants import (
    ALLGATHER,
    ALLREDUCE,
    ALLTOALL,
    BARRIER,
    BARRIER_UPPER,
    BCAST,
    ERR_ARG,
    EXSCAN,
    GATHER,
    REDUCE,
    SCAN,
    SCATTER,
)
from .exception import MPIError
from .payload import dumps, load


def _children(v: int, n: int) -> list[int]:
    """Children of virtual rank `v` in a binomial tree of `n` rooted at 0,
    farthest first."""
    mask = 1
    while mask < n and not v & mask:
        mask <<= 1
    out = []
    mask >>= 1
    while mask > 0:
        if v + mask < n:
            out.append(v + mask)
        mask >>= 1
    return out


def _parent(v: int) -> int:
    return v - (v & -v)


def _split(payload):
    return (payload, None) if type(payload) is bytes else payload


def dissemination(comm, seq: int, op: int, root: int = -1) -> None:
    """A barrier: after round k each rank has heard, directly or not, from
    2**k others (log2 n rounds)."""
    n, r = comm._size, comm._rank
    k = 1
    while k < n:
        comm._csend((r + k) % n, seq, op, root, b"")
        comm._crecv((r - k) % n, seq, op, root)
        k <<= 1


def barrier(comm, upper: bool = False) -> None:
    op = BARRIER_UPPER if upper else BARRIER
    dissemination(comm, comm._next_seq(op), op)


def _tree_bcast(comm, payload, root: int, seq: int, op: int, tree_root: int):
    """Hands `payload` (at `tree_root`) to every rank; returns it."""
    n = comm._size
    v = (comm._rank - tree_root) % n
    if v != 0:
        payload = comm._crecv((_parent(v) + tree_root) % n, seq, op, root)
    body, fds = _split(payload)
    for child in _children(v, n):
        comm._csend((child + tree_root) % n, seq, op, root, body, fds)
    return payload


def bcast(comm, obj, root: int):
    seq = comm._next_seq(BCAST, root)
    if comm._size == 1:
        return obj
    payload = dumps(obj) if comm._rank == root else None
    payload = _tree_bcast(comm, payload, root, seq, BCAST, root)
    return obj if comm._rank == root else load(payload)


def scatter(comm, sendobj, root: int):
    seq = comm._next_seq(SCATTER, root)
    n = comm._size
    if comm._rank == root:
        items = list(sendobj) if sendobj is not None else None
        if items is None or len(items) != n:
            got = "None" if items is None else f"{len(items)} items"
            raise MPIError(
                ERR_ARG,
                f"scatter: the root needs a sequence of {n} items (one per rank), not {got}",
            )
        for i, item in enumerate(items):
            if i != root:
                comm._csend(i, seq, SCATTER, root, *_split(dumps(item)))
        return items[root]
    return load(comm._crecv(root, seq, SCATTER, root))


def gather(comm, sendobj, root: int):
    seq = comm._next_seq(GATHER, root)
    n = comm._size
    if comm._rank != root:
        comm._csend(root, seq, GATHER, root, *_split(dumps(sendobj)))
        return None
    out = [None] * n
    for i in range(n):
        out[i] = sendobj if i == root else load(comm._crecv(i, seq, GATHER, root))
    return out


def allgather(comm, sendobj, op: int = ALLGATHER) -> list:
    seq = comm._next_seq(op)
    n, r = comm._size, comm._rank
    others = [i for i in range(n) if i != r]
    comm._csend_many(others, seq, op, -1, *_split(dumps(sendobj)))
    return [sendobj if i == r else load(comm._crecv(i, seq, op, -1)) for i in range(n)]


def alltoall(comm, sendobj) -> list:
    seq = comm._next_seq(ALLTOALL)
    n, r = comm._size, comm._rank
    items = list(sendobj)
    if len(items) != n:
        raise MPIError(
            ERR_ARG, f"alltoall: give a sequence of {n} items (one per rank), not {len(items)}"
        )
    for j in range(n):
        if j != r:
            comm._csend(j, seq, ALLTOALL, -1, *_split(dumps(items[j])))
    return [items[r] if i == r else load(comm._crecv(i, seq, ALLTOALL, -1)) for i in range(n)]


def _reduce_to_zero(comm, obj, op, seq: int, code: int, root: int):
    """Combines every rank's object in rank order; rank 0 gets the result
    (the others None)."""
    n, r = comm._size, comm._rank
    acc = obj
    mask = 1
    while mask < n:
        if r & mask:
            comm._csend(r - mask, seq, code, root, *_split(dumps(acc)))
            return None
        if r + mask < n:
            acc = op(acc, load(comm._crecv(r + mask, seq, code, root)))
        mask <<= 1
    return acc


def reduce(comm, sendobj, op, root: int):
    seq = comm._next_seq(REDUCE, root)
    if comm._size == 1:
        return sendobj
    acc = _reduce_to_zero(comm, sendobj, op, seq, REDUCE, root)
    if root == 0:
        return acc
    if comm._rank == 0:
        comm._csend(root, seq, REDUCE, root, *_split(dumps(acc)))
        return None
    if comm._rank == root:
        return load(comm._crecv(0, seq, REDUCE, root))
    return None


def allreduce(comm, sendobj, op):
    seq = comm._next_seq(ALLREDUCE)
    if comm._size == 1:
        return sendobj
    acc = _reduce_to_zero(comm, sendobj, op, seq, ALLREDUCE, -1)
    payload = dumps(acc) if comm._rank == 0 else None
    payload = _tree_bcast(comm, payload, -1, seq, ALLREDUCE, 0)
    return acc if comm._rank == 0 else load(payload)


def scan(comm, sendobj, op, exclusive: bool):
    """Prefix reductions along the ranks."""
    code = EXSCAN if exclusive else SCAN
    seq = comm._next_seq(code)
    n, r = comm._size, comm._rank
    before = load(comm._crecv(r - 1, seq, code, -1)) if r > 0 else None
    mine = sendobj if r == 0 else op(before, sendobj)
    if r + 1 < n:
        comm._csend(r + 1, seq, code, -1, *_split(dumps(mine)))
    return before if exclusive else mine
