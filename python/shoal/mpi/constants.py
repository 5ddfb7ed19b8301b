"""MPI's constants (with mpi4py's values, so code that prints or compares
them behaves the same), and the codes shoal publishes for what a rank is
doing when it waits."""

from __future__ import annotations

ANY_SOURCE = -1
ANY_TAG = -1
PROC_NULL = -2
ROOT = -3
UNDEFINED = -32766
#: The largest tag (MPI guarantees at least 32767).
TAG_UB = 2**31 - 1

THREAD_SINGLE = 0
THREAD_FUNNELED = 1
THREAD_SERIALIZED = 2
THREAD_MULTIPLE = 3

IDENT = 0
CONGRUENT = 1
SIMILAR = 2
UNEQUAL = 3

# Error classes (``MPI.Exception.Get_error_class()``), as in Open MPI.
SUCCESS = 0
ERR_BUFFER = 1
ERR_COUNT = 2
ERR_TYPE = 3
ERR_TAG = 4
ERR_COMM = 5
ERR_RANK = 6
ERR_REQUEST = 7
ERR_ROOT = 8
ERR_GROUP = 9
ERR_OP = 10
ERR_ARG = 13
ERR_UNKNOWN = 14
ERR_TRUNCATE = 15
ERR_OTHER = 16
ERR_INTERN = 17

ERROR_NAMES = {
    SUCCESS: "MPI_SUCCESS",
    ERR_BUFFER: "MPI_ERR_BUFFER",
    ERR_COUNT: "MPI_ERR_COUNT",
    ERR_TYPE: "MPI_ERR_TYPE",
    ERR_TAG: "MPI_ERR_TAG",
    ERR_COMM: "MPI_ERR_COMM",
    ERR_RANK: "MPI_ERR_RANK",
    ERR_REQUEST: "MPI_ERR_REQUEST",
    ERR_ROOT: "MPI_ERR_ROOT",
    ERR_GROUP: "MPI_ERR_GROUP",
    ERR_OP: "MPI_ERR_OP",
    ERR_ARG: "MPI_ERR_ARG",
    ERR_UNKNOWN: "MPI_ERR_UNKNOWN",
    ERR_TRUNCATE: "MPI_ERR_TRUNCATE",
    ERR_OTHER: "MPI_ERR_OTHER",
    ERR_INTERN: "MPI_ERR_INTERN",
}

# What a rank is doing when it waits (published in its status slot), and
# the op code a collective's messages carry (a different code on another
# rank at the same point is a mismatch). Lower and upper case differ.
SEND = 1
RECV = 2
SENDRECV = 3
PROBE = 4
WAIT = 5
SSEND = 6
BARRIER = 20
BCAST = 21
SCATTER = 22
GATHER = 23
ALLGATHER = 24
ALLTOALL = 25
REDUCE = 26
ALLREDUCE = 27
SCAN = 28
EXSCAN = 29
BARRIER_UPPER = 40
BCAST_UPPER = 41
SCATTER_UPPER = 42
GATHER_UPPER = 43
ALLGATHER_UPPER = 44
REDUCE_UPPER = 46
ALLREDUCE_UPPER = 47
SPLIT = 60
DUP = 61
FINALIZE = 99

CALL_NAMES = {
    SEND: "send",
    RECV: "recv",
    SENDRECV: "sendrecv",
    PROBE: "probe",
    WAIT: "wait",
    SSEND: "ssend",
    BARRIER: "barrier",
    BCAST: "bcast",
    SCATTER: "scatter",
    GATHER: "gather",
    ALLGATHER: "allgather",
    ALLTOALL: "alltoall",
    REDUCE: "reduce",
    ALLREDUCE: "allreduce",
    SCAN: "scan",
    EXSCAN: "exscan",
    BARRIER_UPPER: "Barrier",
    BCAST_UPPER: "Bcast",
    SCATTER_UPPER: "Scatter",
    GATHER_UPPER: "Gather",
    ALLGATHER_UPPER: "Allgather",
    REDUCE_UPPER: "Reduce",
    ALLREDUCE_UPPER: "Allreduce",
    SPLIT: "Split",
    DUP: "Dup",
    FINALIZE: "the exit barrier (its program has finished)",
}

#: Collectives with a root.
ROOTED = {BCAST, SCATTER, GATHER, REDUCE, BCAST_UPPER, SCATTER_UPPER, GATHER_UPPER, REDUCE_UPPER}


class _InPlace:
    """``MPI.IN_PLACE``: the receive buffer holds this rank's input."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IN_PLACE"

    def __reduce__(self):
        return "IN_PLACE"


IN_PLACE = _InPlace()
