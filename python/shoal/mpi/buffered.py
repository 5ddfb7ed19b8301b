"""The upper-case collectives, on numpy buffers.

Small buffers travel as messages (inside the rings). A broadcast sends one
copy that every rank reads (a large one is staged in shared memory once).
Large reductions (``Reduce``/``Allreduce`` of 128 KiB and more) run in a
shared *arena* instead (see ``arena``): each rank copies its input in once,
reduces its own slice of every rank's input, and copies the result out.
"""

from __future__ import annotations

from . import arena
from .buffers import Buf, message
from .constants import (
    ALLGATHER_UPPER,
    ALLREDUCE_UPPER,
    BCAST_UPPER,
    ERR_ARG,
    ERR_COUNT,
    ERR_TYPE,
    GATHER_UPPER,
    IN_PLACE,
    REDUCE_UPPER,
    SCATTER_UPPER,
)
from .exception import MPIError

#: From this size on, reductions run in the shared arena.
ARENA_MIN = 128 * 1024


def _expect(call: str, got: int, buf: Buf, who: str) -> None:
    if got != buf.nbytes:
        raise MPIError(
            ERR_COUNT,
            f"{call}: {who} sent {got} bytes but this rank's buffer holds {buf.describe()}; "
            "every rank must give the same count",
        )


def _parts(call: str, buf: Buf, n: int) -> int:
    if buf.count % n:
        raise MPIError(
            ERR_COUNT,
            f"{call}: the buffer of {buf.count} elements does not split into {n} equal parts",
        )
    return buf.count // n


def _part(buf: Buf, i: int, size: int) -> Buf:
    return Buf(buf.array[i * size : (i + 1) * size], buf.dtype)


def bcast(comm, spec, root: int) -> None:
    seq = comm._next_seq(BCAST_UPPER, root)
    n, r = comm._size, comm._rank
    b = message(spec, "Bcast", writable=r != root)
    if n == 1:
        return
    if r == root:
        others = [i for i in range(n) if i != root]
        comm._csend_many(others, seq, BCAST_UPPER, root, b.array, None, b.code)
    else:
        _expect("Bcast", comm._crecv_into(root, seq, BCAST_UPPER, root, b), b, f"root {root}")


def scatter(comm, sendspec, recvspec, root: int) -> None:
    seq = comm._next_seq(SCATTER_UPPER, root)
    n, r = comm._size, comm._rank
    if r == root:
        sb = message(sendspec, "Scatter")
        size = _parts("Scatter", sb, n)
        for i in range(n):
            if i != root:
                part = _part(sb, i, size)
                comm._csend(i, seq, SCATTER_UPPER, root, part.array, None, part.code)
        if recvspec is not IN_PLACE:
            rb = message(recvspec, "Scatter", writable=True)
            mine = _part(sb, root, size)
            if rb.count != size or rb.dtype != sb.dtype:
                raise MPIError(
                    ERR_COUNT,
                    f"Scatter: the root's recvbuf holds {rb.describe()}, its part "
                    f"is {mine.describe()}",
                )
            rb.array[...] = mine.array
    else:
        rb = message(recvspec, "Scatter", writable=True)
        _expect("Scatter", comm._crecv_into(root, seq, SCATTER_UPPER, root, rb), rb, "the root")


def gather(comm, sendspec, recvspec, root: int) -> None:
    seq = comm._next_seq(GATHER_UPPER, root)
    n, r = comm._size, comm._rank
    if r != root:
        sb = message(sendspec, "Gather")
        comm._csend(root, seq, GATHER_UPPER, root, sb.array, None, sb.code)
        return
    rb = message(recvspec, "Gather", writable=True)
    size = _parts("Gather", rb, n)
    if sendspec is not IN_PLACE:
        sb = message(sendspec, "Gather")
        if sb.count != size or sb.dtype != rb.dtype:
            raise MPIError(
                ERR_COUNT,
                f"Gather: recvbuf has room for {size} elements per rank, the root "
                f"sends {sb.describe()}",
            )
        _part(rb, root, size).array[...] = sb.array
    for i in range(n):
        if i != root:
            part = _part(rb, i, size)
            _expect("Gather", comm._crecv_into(i, seq, GATHER_UPPER, root, part), part, f"rank {i}")


def allgather(comm, sendspec, recvspec) -> None:
    seq = comm._next_seq(ALLGATHER_UPPER)
    n, r = comm._size, comm._rank
    rb = message(recvspec, "Allgather", writable=True)
    size = _parts("Allgather", rb, n)
    mine = _part(rb, r, size)
    if sendspec is not IN_PLACE:
        sb = message(sendspec, "Allgather")
        if sb.count != size or sb.dtype != rb.dtype:
            raise MPIError(
                ERR_COUNT,
                f"Allgather: recvbuf has room for {size} elements per rank, this "
                f"rank sends {sb.describe()}",
            )
        mine.array[...] = sb.array
    others = [i for i in range(n) if i != r]
    comm._csend_many(others, seq, ALLGATHER_UPPER, -1, mine.array, None, mine.code)
    for i in others:
        part = _part(rb, i, size)
        _expect("Allgather", comm._crecv_into(i, seq, ALLGATHER_UPPER, -1, part), part, f"rank {i}")


def _inputs(call: str, sendspec, recvspec, need_recv: bool):
    """`(input array, recv Buf or None)`, checked against each other."""
    rb = message(recvspec, call, writable=True) if need_recv else None
    if sendspec is IN_PLACE:
        if rb is None:
            raise MPIError(ERR_ARG, f"{call}: MPI.IN_PLACE needs a recvbuf holding the input")
        return rb.array, rb
    sb = message(sendspec, call)
    if rb is not None:
        if sb.dtype != rb.dtype:
            raise MPIError(ERR_TYPE, f"{call}: sendbuf is {sb.dtype}, recvbuf {rb.dtype}")
        if sb.count != rb.count:
            raise MPIError(
                ERR_COUNT, f"{call}: sendbuf holds {sb.count} elements, recvbuf {rb.count}"
            )
    return sb.array, rb


def _reduce_small(comm, src, op, seq: int, code: int, root: int):
    """Binomial reduction to rank 0 in rank order; rank 0 gets a new array."""
    import numpy

    n, r = comm._size, comm._rank
    acc = src
    mask = 1
    while mask < n:
        if r & mask:
            comm._csend(r - mask, seq, code, root, acc, None, _code(acc))
            return None
        if r + mask < n:
            theirs = numpy.empty_like(src)
            got = comm._crecv_into(r + mask, seq, code, root, Buf(theirs, theirs.dtype))
            if got != theirs.nbytes:
                raise MPIError(
                    ERR_COUNT, f"rank {r + mask} reduced {got} bytes, this rank {theirs.nbytes}"
                )
            op.combine_into(acc, theirs)  # theirs = acc op theirs: rank order kept
            acc = theirs
        mask <<= 1
    return acc if acc is not src else src.copy()


def _code(array) -> int:
    from .datatypes import code

    return code(array.dtype)


def allreduce(comm, sendspec, recvspec, op) -> None:
    seq = comm._next_seq(ALLREDUCE_UPPER)
    src, rb = _inputs("Allreduce", sendspec, recvspec, True)
    n = comm._size
    if n == 1:
        if src is not rb.array:
            rb.array[...] = src
        return
    if rb.nbytes >= ARENA_MIN:
        arena.reduce(comm, src, rb.array, op, seq, ALLREDUCE_UPPER, -1)
        return
    acc = _reduce_small(comm, src, op, seq, ALLREDUCE_UPPER, -1)
    if comm._rank == 0:
        others = list(range(1, n))
        comm._csend_many(others, seq, ALLREDUCE_UPPER, -1, acc, None, rb.code)
        rb.array[...] = acc
    else:
        got = comm._crecv_into(0, seq, ALLREDUCE_UPPER, -1, rb)
        _expect("Allreduce", got, rb, "rank 0")


def reduce(comm, sendspec, recvspec, op, root: int) -> None:
    seq = comm._next_seq(REDUCE_UPPER, root)
    r, n = comm._rank, comm._size
    src, rb = _inputs("Reduce", sendspec, recvspec, r == root)
    if n == 1:
        if src is not rb.array:
            rb.array[...] = src
        return
    if src.nbytes >= ARENA_MIN:
        arena.reduce(comm, src, rb.array if rb is not None else None, op, seq, REDUCE_UPPER, root)
        return
    acc = _reduce_small(comm, src, op, seq, REDUCE_UPPER, root)
    if root == 0:
        if r == 0:
            rb.array[...] = acc
    elif r == 0:
        comm._csend(root, seq, REDUCE_UPPER, root, acc, None, _code(acc))
    elif r == root:
        _expect("Reduce", comm._crecv_into(0, seq, REDUCE_UPPER, root, rb), rb, "rank 0")
