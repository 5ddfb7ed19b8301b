"""Large reductions in a shared arena: one segment per communicator that
every rank maps, with one input slot per rank and one output region.

    1. each rank copies its input into its slot;
    2. barrier;
    3. rank i reduces slice i of every slot, in rank order, into slice i
       of the output (numpy's ufuncs, on all ranks at once);
    4. barrier;
    5. each rank that wants the result copies the output out.

A rank starts writing its slot for the next reduction only after the
barrier of step 2 of that reduction, which every rank reaches only once it
has finished step 5 of this one, so two barriers are enough. The arena is
made by rank 0 (and remade larger when a larger reduction comes), and its
descriptor sent to the others with the reduction's first message.
"""

from __future__ import annotations

from .. import _shoal
from .constants import ERR_COUNT
from .exception import MPIError

_ALIGN = 1 << 20


class Arena:
    __slots__ = ("segment", "cap", "ranks")

    def __init__(self, segment, cap: int, ranks: int) -> None:
        self.segment = segment
        self.cap = cap
        self.ranks = ranks


def _arena(comm, nbytes: int, seq: int, code: int, root: int) -> Arena:
    """The communicator's arena, made or grown to hold `nbytes` per slot."""
    arena = comm._arena
    if arena is not None and arena.cap >= nbytes:
        return arena
    n = comm._size
    cap = -(-nbytes // _ALIGN) * _ALIGN
    if comm._rank == 0:
        segment = _shoal.Segment.create((n + 1) * cap)
        comm._csend_many(list(range(1, n)), seq, code, root, b"arena", [segment.fd()])
    else:
        payload = comm._crecv(0, seq, code, root)
        if type(payload) is bytes or len(payload[1]) != 1:
            raise MPIError(ERR_COUNT, "a reduction's ranks disagree on its size")
        segment = _shoal.Segment.map(payload[1][0], _shoal.ACCESS_SHARED)
    arena = comm._arena = Arena(segment, cap, n)
    return arena


def _barrier(comm, seq: int, code: int, root: int, nbytes: int) -> None:
    """A dissemination barrier whose messages carry the reduction's size,
    so ranks that give different sizes are caught."""
    n, r = comm._size, comm._rank
    mine = nbytes.to_bytes(8, "little")
    k = 1
    while k < n:
        comm._csend((r + k) % n, seq, code, root, mine)
        theirs = comm._crecv((r - k) % n, seq, code, root)
        if theirs != mine:
            other = (r - k) % n
            got = int.from_bytes(theirs, "little") if type(theirs) is bytes else -1
            raise MPIError(
                ERR_COUNT,
                f"rank {other} reduces {got} bytes, rank {r} {nbytes}: every rank must give "
                "the same count",
            )
        k <<= 1


def reduce(comm, src, dst, op, seq: int, code: int, root: int) -> None:
    """Reduces every rank's `src` with `op` into `dst` (where not None)."""
    import numpy

    n, r = comm._size, comm._rank
    nbytes = src.nbytes
    arena = _arena(comm, nbytes, seq, code, root)
    memory = numpy.frombuffer(arena.segment, dtype=numpy.uint8)
    dtype = src.dtype

    def region(i: int):
        return memory[i * arena.cap : i * arena.cap + nbytes].view(dtype)

    numpy.copyto(region(r), src.reshape(-1))
    _barrier(comm, seq, code, root, nbytes)
    count = src.size
    lo, hi = count * r // n, count * (r + 1) // n
    if hi > lo:
        out = region(n)[lo:hi]
        slots = [region(i)[lo:hi] for i in range(n)]
        ufunc = getattr(numpy, op._ufunc) if op.is_predefined and op._ufunc else None
        if ufunc is not None:
            ufunc(slots[0], slots[1], out=out)
            for s in slots[2:]:
                ufunc(out, s, out=out)
        else:
            # Right to left: out = s0 op (s1 op (... op s_last)), which is
            # the rank-order result for an associative op.
            numpy.copyto(out, slots[-1])
            for s in reversed(slots[:-1]):
                op.combine_into(s, out)
    _barrier(comm, seq, code, root, nbytes)
    if dst is not None:
        numpy.copyto(dst.reshape(-1), region(n))
