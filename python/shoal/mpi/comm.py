"""``MPI.Comm`` / ``MPI.Intracomm``: a communicator, with mpi4py's names.

Lower-case methods send any picklable object (large numpy arrays travel
in shared memory, not in the pickle); upper-case methods send numpy
buffers. Point-to-point calls are here; the collectives' algorithms are in
``collectives`` (lower case) and ``buffered`` (upper case).

A communicator has a context id: its point-to-point messages carry it,
its collectives' messages carry it + 1 and their own sequence number, so
the two never mix, and a rank that calls another collective than its
peers is caught (``CollectiveMismatchError``).
"""

from __future__ import annotations

import operator

from .. import _shoal
from . import buffered, buffers, collectives, report, runtime
from .buffers import fast_codes, message
from .constants import (
    ANY_SOURCE,
    ANY_TAG,
    CONGRUENT,
    DUP,
    ERR_ARG,
    ERR_COMM,
    ERR_RANK,
    ERR_ROOT,
    ERR_TAG,
    IDENT,
    PROBE,
    PROC_NULL,
    RECV,
    SEND,
    SPLIT,
    TAG_UB,
    UNDEFINED,
    UNEQUAL,
)
from .exception import MPIError
from .payload import dumps as _pack
from .request import _BUFFER, _OBJECT, Request

Failure = runtime.Failure
_fail = runtime.failure


class Comm(_shoal.CommCore):
    """A communicator: ``Get_rank()``, ``Get_size()``, ``rank``, ``size``,
    point-to-point and collective communication, ``Split``, ``Dup``,
    ``Free``, ``Abort``.

    ``send`` and ``recv`` come from the engine's ``CommCore``, which does
    their common case without a Python frame and calls ``_send_slow`` and
    ``_recv_slow`` (below) for the rest."""

    __slots__ = (
        "_ep",
        "_ctx",
        "_cctx",
        "_ranks",
        "_index",
        "_rank",
        "_size",
        "_deps",
        "_seq",
        "_name",
        "_arena",
        "_freed",
    )

    def __init__(self, ep, ctx: int, ranks, name: str) -> None:
        ranks = tuple(ranks)
        self._ep = ep
        self._ctx = ctx
        self._cctx = ctx + 1
        self._ranks = ranks
        self._size = len(ranks)
        self._rank = ranks.index(ep.rank)
        identity = ranks == tuple(range(ep.size))
        self._index = None if identity else {w: i for i, w in enumerate(ranks)}
        self._deps = self._core_deps
        self._seq = 0
        self._name = name
        self._arena = None
        self._freed = False
        report.comm_names.setdefault(ctx, _short(name, ctx))

    # ------------------------------------------------------------ basics

    def Get_rank(self) -> int:
        return self._rank

    def Get_size(self) -> int:
        return self._size

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    def Get_name(self) -> str:
        return self._name

    def Set_name(self, name: str) -> None:
        self._name = str(name)
        report.comm_names[self._ctx] = _short(self._name, self._ctx)

    @property
    def name(self) -> str:
        return self._name

    def Is_inter(self) -> bool:
        return False

    def Is_intra(self) -> bool:
        return True

    @property
    def is_inter(self) -> bool:
        return False

    @property
    def is_intra(self) -> bool:
        return True

    def Compare(self, other: Comm) -> int:
        if self is other or self._ctx == other._ctx:
            return IDENT
        return CONGRUENT if self._ranks == other._ranks else UNEQUAL

    def Get_topology(self) -> int:
        return UNDEFINED

    def __bool__(self) -> bool:
        return not self._freed

    def __repr__(self) -> str:
        return f"<shoal MPI.Intracomm {self._name or 'unnamed'}: rank {self._rank} of {self._size}>"

    def __reduce__(self):
        raise TypeError(
            "a communicator cannot be pickled or sent; each rank has its own (MPI.COMM_WORLD)"
        )

    # ----------------------------------------------------------- helpers

    def _live(self, call: str) -> None:
        if self._freed:
            raise MPIError(ERR_COMM, f"{call} on a communicator that was freed")

    def _comm_rank(self, world: int) -> int:
        if world < 0:
            return world
        return world if self._index is None else self._index[world]

    def _peer(self, value, call: str, what: str, wildcard: bool) -> int | None:
        """World rank of comm rank `value` (-1 for ANY_SOURCE if
        `wildcard`, None for PROC_NULL), checked."""
        try:
            r = operator.index(value)
        except TypeError:
            raise TypeError(f"{call}: {what} must be a rank (an int), not {value!r}") from None
        if 0 <= r < self._size:
            return self._ranks[r]
        if r == PROC_NULL:
            return None
        if wildcard and r == ANY_SOURCE:
            return -1
        allowed = "MPI.ANY_SOURCE or MPI.PROC_NULL" if wildcard else "or MPI.PROC_NULL"
        raise MPIError(
            ERR_RANK,
            f"{call}: there is no rank {r} in {self._name or 'this communicator'} "
            f"(ranks 0 to {self._size - 1}, {allowed})",
        )

    def _dest(self, dest, call: str) -> int | None:
        return self._peer(dest, call, "dest", False)

    def _source(self, source, call: str) -> int | None:
        return self._peer(source, call, "source", True)

    @staticmethod
    def _tag(tag, call: str, wildcard: bool) -> int:
        try:
            t = operator.index(tag)
        except TypeError:
            raise TypeError(f"{call}: tag must be an int, not {tag!r}") from None
        if 0 <= t <= TAG_UB or (wildcard and t == ANY_TAG):
            return t
        allowed = " or MPI.ANY_TAG" if wildcard else ""
        raise MPIError(ERR_TAG, f"{call}: tag {t} is invalid: give 0 to {TAG_UB}{allowed}")

    def _root(self, root, call: str) -> int:
        try:
            r = operator.index(root)
        except TypeError:
            raise TypeError(f"{call}: root must be a rank (an int), not {root!r}") from None
        if 0 <= r < self._size:
            return r
        raise MPIError(
            ERR_ROOT, f"{call}: root {r} is not a rank of this communicator (0 to {self._size - 1})"
        )

    def _deps_of(self, world_src: int) -> int:
        return world_src if world_src >= 0 else self._deps

    def _next_seq(self, op: int, root: int = -1) -> int:
        """The next collective's sequence number (remembered with its op
        and root, to explain a mismatch found at exit)."""
        seq = self._seq
        self._seq = (seq + 1) & 0x7FFFFFFF
        history = runtime.history.get(self._cctx)
        if history is None:
            history = runtime.history[self._cctx] = {}
        history[seq] = (op, root)
        history.pop(seq - 64, None)
        return seq

    # The transport of collectives: comm ranks, the collective's context.

    def _csend(self, dest: int, seq: int, op: int, root: int, payload, fds=None, dtype=0):
        try:
            self._ep.send(self._ranks[dest], self._cctx, seq, op, root, dtype, payload, fds, op)
        except Failure as exc:
            raise _fail(exc, op, self._cctx, self._ranks[dest], seq, root, seq) from None

    def _csend_many(self, dests, seq: int, op: int, root: int, payload, fds=None, dtype=0):
        if not dests:
            return
        world = [self._ranks[d] for d in dests]
        try:
            self._ep.send_many(world, self._cctx, seq, op, root, dtype, payload, fds, op)
        except Failure as exc:
            raise _fail(exc, op, self._cctx, -1, seq, root, seq) from None

    def _crecv(self, src: int, seq: int, op: int, root: int):
        w = self._ranks[src]
        try:
            return self._ep.recv(self._cctx, w, seq, op, root, op, self._deps)[2]
        except Failure as exc:
            raise _fail(exc, op, self._cctx, w, seq, root, seq) from None

    def _crecv_into(self, src: int, seq: int, op: int, root: int, buf) -> int:
        w = self._ranks[src]
        try:
            return self._ep.recv_into(
                self._cctx, w, seq, op, root, op, self._deps, buf.array, buf.code
            )[2]
        except Failure as exc:
            raise _fail(exc, op, self._cctx, w, seq, root, seq) from None

    # ------------------------------------------------ point to point, objects

    def _translate(self, exc, call: int, peer: int, tag: int) -> BaseException:
        """The error for a failed wait of ``CommCore``'s send or recv."""
        return _fail(exc, call, self._ctx, peer, tag)

    def _send_slow(self, obj, dest: int, tag: int = 0) -> None:
        """``send`` for what ``CommCore`` leaves to Python: ranks and tags
        to check, PROC_NULL, objects that go through shoal's transfer."""
        if dest.__class__ is int and 0 <= dest < self._size:
            d = self._ranks[dest]
        else:
            d = self._dest(dest, "send")
        if tag.__class__ is not int or not 0 <= tag <= TAG_UB:
            tag = self._tag(tag, "send", False)
        if d is None:
            return
        try:
            if self._ep.send_obj(d, self._ctx, tag, obj, SEND):
                return
            packed = _pack(obj)
            if packed.__class__ is bytes:
                self._ep.send(d, self._ctx, tag, 0, -1, 0, packed, None, SEND)
            else:
                self._ep.send(d, self._ctx, tag, 0, -1, 0, packed[0], packed[1], SEND)
        except Failure as exc:
            raise _fail(exc, SEND, self._ctx, d, tag) from None

    send = _shoal.CommCore.send
    ssend = send
    bsend = send

    def _recv_slow(self, buf=None, source: int = ANY_SOURCE, tag: int = ANY_TAG, status=None):
        """``recv`` for what ``CommCore`` leaves to Python (a status, ranks
        and tags to check, PROC_NULL)."""
        if source.__class__ is int and 0 <= source < self._size:
            s = self._ranks[source]
        else:
            s = self._source(source, "recv")
        if tag.__class__ is not int or not (0 <= tag <= TAG_UB or tag == ANY_TAG):
            tag = self._tag(tag, "recv", True)
        if s is None:
            if status is not None:
                status._set(PROC_NULL, ANY_TAG, 0)
            return None
        deps = s if s >= 0 else self._deps
        try:
            if status is None:
                return self._ep.recv_obj(self._ctx, s, tag, RECV, deps)
            src, t, n, obj = self._ep.recv_obj_status(self._ctx, s, tag, RECV, deps)
        except Failure as exc:
            raise _fail(exc, RECV, self._ctx, s, tag) from None
        status._set(self._comm_rank(src), t, n)
        return obj

    recv = _shoal.CommCore.recv

    def sendrecv(
        self,
        sendobj,
        dest: int,
        sendtag: int = 0,
        recvbuf=None,
        source: int = ANY_SOURCE,
        recvtag: int = ANY_TAG,
        status=None,
    ):
        """Sends `sendobj` to `dest` and receives from `source` (sends never
        wait for their receiver, so a ring of sendrecv cannot deadlock)."""
        self._source(source, "sendrecv")
        self.send(sendobj, dest, sendtag)
        return self.recv(recvbuf, source, recvtag, status)

    def isend(self, obj, dest: int, tag: int = 0) -> Request:
        """Sends without waiting; the request is complete at once."""
        self.send(obj, dest, tag)
        return Request._done(self)

    issend = isend
    ibsend = isend

    def irecv(self, buf=None, source: int = ANY_SOURCE, tag: int = ANY_TAG) -> Request:
        """Posts a receive; ``request.wait()`` returns the object."""
        s = self._source(source, "irecv")
        tag = self._tag(tag, "irecv", True)
        if s is None:
            return Request._done(self, PROC_NULL, ANY_TAG)
        return Request(self, _OBJECT, self._ep.post(self._ctx, s, tag), deps=self._deps_of(s))

    def probe(self, source: int = ANY_SOURCE, tag: int = ANY_TAG, status=None) -> bool:
        """Waits until a message from `source` with `tag` can be received."""
        return self._probe("probe", source, tag, status, True)

    def iprobe(self, source: int = ANY_SOURCE, tag: int = ANY_TAG, status=None) -> bool:
        """Whether a message from `source` with `tag` can be received now."""
        return self._probe("iprobe", source, tag, status, False)

    def _probe(self, call: str, source, tag, status, block: bool) -> bool:
        s = self._source(source, call)
        tag = self._tag(tag, call, True)
        if s is None:
            if status is not None:
                status._set(PROC_NULL, ANY_TAG, 0)
            return True
        try:
            found = self._ep.probe(self._ctx, s, tag, PROBE, self._deps_of(s), block)
        except Failure as exc:
            raise _fail(exc, PROBE, self._ctx, s, tag) from None
        if found is None:
            return False
        if status is not None:
            src, t, nbytes, _ = found
            status._set(self._comm_rank(src), t, nbytes)
        return True

    Probe = probe
    Iprobe = iprobe

    # ------------------------------------------------ point to point, buffers

    def Send(self, buf, dest: int, tag: int = 0) -> None:
        """Sends a buffer (a numpy array, or ``[array, MPI.DOUBLE]``...)."""
        code = fast_codes.get(buf.dtype) if buf.__class__ is buffers.ndarray else None
        if code is None:
            b = message(buf, "Send")
            buf, code = b.array, b.code
        if dest.__class__ is int and 0 <= dest < self._size:
            d = self._ranks[dest]
        else:
            d = self._dest(dest, "Send")
        if tag.__class__ is not int or not 0 <= tag <= TAG_UB:
            tag = self._tag(tag, "Send", False)
        if d is None:
            return
        try:
            self._ep.send(d, self._ctx, tag, 0, -1, code, buf, None, SEND)
        except Failure as exc:
            raise _fail(exc, SEND, self._ctx, d, tag) from None

    Ssend = Send
    Bsend = Send
    Rsend = Send

    def Recv(self, buf, source: int = ANY_SOURCE, tag: int = ANY_TAG, status=None) -> None:
        """Receives into a buffer; a message larger than it, or of another
        dtype, raises ``MPI.Exception`` and stays in the queue."""
        code = fast_codes.get(buf.dtype) if buf.__class__ is buffers.ndarray else None
        if code is None or not buf.flags.writeable:
            b = message(buf, "Recv", writable=True)
            buf, code = b.array, b.code
        if source.__class__ is int and 0 <= source < self._size:
            s = self._ranks[source]
        else:
            s = self._source(source, "Recv")
        if tag.__class__ is not int or not (0 <= tag <= TAG_UB or tag == ANY_TAG):
            tag = self._tag(tag, "Recv", True)
        if s is None:
            if status is not None:
                status._set(PROC_NULL, ANY_TAG, 0)
            return
        try:
            src, t, n = self._ep.recv_into(
                self._ctx, s, tag, 0, -1, RECV, s if s >= 0 else self._deps, buf, code
            )
        except Failure as exc:
            raise _fail(exc, RECV, self._ctx, s, tag) from None
        except (BufferError, ValueError):
            message(buf, "Recv", writable=True)  # says what is wrong with it
            raise
        if status is not None:
            status._set(self._comm_rank(src), t, n)

    def Sendrecv(
        self,
        sendbuf,
        dest: int,
        sendtag: int = 0,
        recvbuf=None,
        source: int = ANY_SOURCE,
        recvtag: int = ANY_TAG,
        status=None,
    ) -> None:
        """Sends `sendbuf` to `dest` and receives `recvbuf` from `source`."""
        if recvbuf is None:
            raise MPIError(ERR_ARG, "Sendrecv needs a recvbuf to receive into")
        self._source(source, "Sendrecv")
        self.Send(sendbuf, dest, sendtag)
        self.Recv(recvbuf, source, recvtag, status)

    def Sendrecv_replace(
        self,
        buf,
        dest: int,
        sendtag: int = 0,
        source: int = ANY_SOURCE,
        recvtag: int = ANY_TAG,
        status=None,
    ) -> None:
        self.Send(buf, dest, sendtag)
        self.Recv(buf, source, recvtag, status)

    def Isend(self, buf, dest: int, tag: int = 0) -> Request:
        """Sends a buffer without waiting (the data is copied at once)."""
        self.Send(buf, dest, tag)
        return Request._done(self)

    Issend = Isend
    Ibsend = Isend
    Irsend = Isend

    def Irecv(self, buf, source: int = ANY_SOURCE, tag: int = ANY_TAG) -> Request:
        """Posts a receive into `buf`; the buffer is filled by ``wait``."""
        b = message(buf, "Irecv", writable=True)
        s = self._source(source, "Irecv")
        tag = self._tag(tag, "Irecv", True)
        if s is None:
            return Request._done(self, PROC_NULL, ANY_TAG)
        ident = self._ep.post(self._ctx, s, tag)
        return Request(self, _BUFFER, ident, buf=b, deps=self._deps_of(s))

    # ------------------------------------------------- collectives, objects

    def barrier(self) -> None:
        """Waits until every rank of the communicator has called it."""
        self._live("barrier")
        collectives.barrier(self)

    def Barrier(self) -> None:
        self._live("Barrier")
        collectives.barrier(self, upper=True)

    def bcast(self, obj=None, root: int = 0):
        """`root`'s object, on every rank."""
        self._live("bcast")
        return collectives.bcast(self, obj, self._root(root, "bcast"))

    def scatter(self, sendobj=None, root: int = 0):
        """Item ``i`` of `root`'s sequence, on rank ``i``."""
        self._live("scatter")
        return collectives.scatter(self, sendobj, self._root(root, "scatter"))

    def gather(self, sendobj, root: int = 0):
        """Every rank's object, as a list on `root` (None elsewhere)."""
        self._live("gather")
        return collectives.gather(self, sendobj, self._root(root, "gather"))

    def allgather(self, sendobj) -> list:
        """Every rank's object, as a list on every rank."""
        self._live("allgather")
        return collectives.allgather(self, sendobj)

    def alltoall(self, sendobj) -> list:
        """Item ``j`` of rank ``i``'s sequence goes to rank ``j``, at ``i``."""
        self._live("alltoall")
        return collectives.alltoall(self, sendobj)

    def reduce(self, sendobj, op=None, root: int = 0):
        """Every rank's object combined with `op` (``MPI.SUM`` by default),
        in rank order, on `root` (None elsewhere)."""
        self._live("reduce")
        return collectives.reduce(self, sendobj, _op(op), self._root(root, "reduce"))

    def allreduce(self, sendobj, op=None):
        """Every rank's object combined with `op`, on every rank."""
        self._live("allreduce")
        return collectives.allreduce(self, sendobj, _op(op))

    def scan(self, sendobj, op=None):
        """Ranks 0..i's objects combined, on rank i."""
        self._live("scan")
        return collectives.scan(self, sendobj, _op(op), exclusive=False)

    def exscan(self, sendobj, op=None):
        """Ranks 0..i-1's objects combined, on rank i (None on rank 0)."""
        self._live("exscan")
        return collectives.scan(self, sendobj, _op(op), exclusive=True)

    # ------------------------------------------------- collectives, buffers

    def Bcast(self, buf, root: int = 0) -> None:
        """Copies `root`'s buffer into every rank's."""
        self._live("Bcast")
        buffered.bcast(self, buf, self._root(root, "Bcast"))

    def Scatter(self, sendbuf, recvbuf, root: int = 0) -> None:
        """Part ``i`` of `root`'s `sendbuf` (split in equal parts) into rank
        ``i``'s `recvbuf`."""
        self._live("Scatter")
        buffered.scatter(self, sendbuf, recvbuf, self._root(root, "Scatter"))

    def Gather(self, sendbuf, recvbuf, root: int = 0) -> None:
        """Every rank's `sendbuf`, in rank order, into `root`'s `recvbuf`."""
        self._live("Gather")
        buffered.gather(self, sendbuf, recvbuf, self._root(root, "Gather"))

    def Allgather(self, sendbuf, recvbuf) -> None:
        """Every rank's `sendbuf`, in rank order, into every `recvbuf`."""
        self._live("Allgather")
        buffered.allgather(self, sendbuf, recvbuf)

    def Reduce(self, sendbuf, recvbuf, op=None, root: int = 0) -> None:
        """Element-wise `op` of every rank's `sendbuf` into `root`'s `recvbuf`."""
        self._live("Reduce")
        buffered.reduce(self, sendbuf, recvbuf, _op(op), self._root(root, "Reduce"))

    def Allreduce(self, sendbuf, recvbuf, op=None) -> None:
        """Element-wise `op` of every rank's `sendbuf` into every `recvbuf`."""
        self._live("Allreduce")
        buffered.allreduce(self, sendbuf, recvbuf, _op(op))

    # ---------------------------------------------------- communicators

    def Dup(self) -> Comm:
        """A new communicator with the same ranks (its messages never mix
        with this one's)."""
        self._live("Dup")
        ctx = _agree_ctx(self, DUP, None)[0]
        return Comm(self._ep, ctx, self._ranks, "")

    Clone = Dup

    def Split(self, color: int = 0, key: int = 0) -> Comm:
        """Ranks with the same `color` form a new communicator, ordered by
        `key` (then by their rank here). ``MPI.UNDEFINED`` as color: this
        rank joins none and gets ``MPI.COMM_NULL``."""
        self._live("Split")
        color = operator.index(color)
        key = operator.index(key)
        if color < 0 and color != UNDEFINED:
            raise MPIError(ERR_ARG, f"Split: color {color} is invalid (give >= 0 or UNDEFINED)")
        ctx, everyone = _agree_ctx(self, SPLIT, (color, key))
        if color == UNDEFINED:
            return COMM_NULL
        members = sorted(
            (k, r) for r, (c, k) in enumerate(everyone) if c == color
        )  # by key, then by rank here
        return Comm(self._ep, ctx, [self._ranks[r] for _, r in members], "")

    def Free(self) -> None:
        self._freed = True

    def Disconnect(self) -> None:
        self.Free()

    def Abort(self, errorcode: int = 0) -> None:
        """Ends every rank of the job at once; ``shoal run`` exits with
        `errorcode`."""
        runtime.abort(errorcode)


Intracomm = Comm


class _NullComm:
    """``MPI.COMM_NULL``."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return other is self

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<shoal MPI.COMM_NULL>"

    def __getattr__(self, name: str):
        raise MPIError(ERR_COMM, f"{name} on MPI.COMM_NULL (a Split with color UNDEFINED)")


COMM_NULL = _NullComm()


def _short(name: str, ctx: int) -> str:
    if name.startswith("MPI_"):
        return name[4:]
    return name or f"communicator #{ctx // 2}"


def _op(op):
    from . import ops

    if op is None:
        return ops.SUM
    if not isinstance(op, ops.Op):
        raise TypeError(f"op must be an MPI.Op (MPI.SUM, MPI.MAX, Op.Create(...)), not {op!r}")
    return op


def _agree_ctx(comm: Comm, call: int, item) -> tuple[int, list]:
    """A context id no rank of `comm` uses yet, agreed by all, and every
    rank's `item` (an allgather of both)."""
    everyone = collectives.allgather(comm, (runtime.next_ctx, item), op=call)
    ctx = max(c for c, _ in everyone)
    runtime.next_ctx = ctx + 2
    return ctx, [i for _, i in everyone]
