"""Rank 0's side of the MPI traffic: one thread that sends what the Pools
post, receives what the serving ranks answer and hands it to the Pool it
belongs to, and keeps track of which ranks are alive.

Only this thread calls MPI, so MPI's thread support matters little. It
polls (MPI's blocking calls spin a core), sleeping a little longer each
time it finds nothing, up to a millisecond; a post wakes it at once.

A serving rank that says nothing for ``timeout`` seconds (each says ALIVE
every second when it has nothing else to say), whose process has ended
(checked when it runs on this machine), or that MPI can no longer reach is
*lost*: its Pools' tasks there fail with ``WorkerLostError`` naming it, and
the launcher ends the run with an error once the program returns. Launchers
usually get there first: srun and Open MPI's mpiexec end the whole job when
a rank dies.

Blobs (see ``cluster.messages``) are counted here: each task, function or
pool set-up that uses one holds it; each serving rank gets it at most once,
when the first task that needs it is sent there; when nothing has held it
for a second, the ranks that have it are told to drop it. The blob's segment is held until
then, so its identity (device and inode) cannot be reused meanwhile.
"""

from __future__ import annotations

import collections
import itertools
import os
import sys
import threading
import time

from .. import _shoal
from ..errors import ShoalError
from . import messages as m
from .poll import MIN_PAUSE, Pause, Wakeup, wait_for

#: How often silences and ended processes are checked (seconds).
CHECK_EVERY = 0.25
#: How long the ranks keep a blob nothing holds (seconds): the tasks of one
#: call are sent in batches, and one batch may finish before the next comes.
KEEP_IDLE = 1.0


class ClusterError(ShoalError):
    """The ranks of an MPI launch could not serve the program."""


class Peer:
    """A serving rank, as rank 0 knows it."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.host: str | None = None
        self.pid: int | None = None
        self.cpus = 0
        self.here = False  # on this machine, in this pid namespace
        self.offset_ns = 0  # its monotonic clock + offset = ours
        self.synced = False
        self.last_heard = self.last_sent = time.monotonic()
        self.lost: str | None = None  # why, once lost
        self.gone = False  # said BYE

    @property
    def live(self) -> bool:
        return self.lost is None and not self.gone

    def name(self) -> str:
        if self.host is None:
            return f"rank {self.rank}"
        return f"rank {self.rank} (node {self.host}, pid {self.pid})"


class Blob:
    __slots__ = ("id", "key", "source", "nbytes", "holds", "ranks", "idle_since")

    def __init__(self, blob_id: int, key, source) -> None:
        self.id = blob_id
        self.key = key
        self.source = source  # the Fd or Segment; kept open while held
        self.nbytes = m.nbytes(source)
        self.holds = 0
        self.ranks: set[int] = set()
        self.idle_since = 0.0


def _identity(attachment) -> tuple[int, int]:
    fd = attachment if type(attachment) is _shoal.Fd else attachment.fd()
    st = os.fstat(fd.fileno())
    return st.st_dev, st.st_ino


class Link:
    """See the module's docstring. Also the *world* a Pool asks for its
    workers (``cluster.world``): ``worker_count``, ``start_workers``."""

    def __init__(self, comm, timeout: float) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.timeout = timeout
        self.machine = m.machine()
        self.peers = {rank: Peer(rank) for rank in range(1, comm.Get_size())}
        self._lock = threading.Lock()
        self.state = threading.Condition(threading.Lock())  # peers' news
        self._outbox: collections.deque = collections.deque()
        self._wake = Wakeup()
        self._pools: dict[int, object] = {}
        self._pool_ids = itertools.count(1)
        self._blob_ids = itertools.count(1)
        self._blobs: dict[tuple, Blob] = {}
        self._sending: list = []
        self._stopping = False
        self.lost: list[str] = []
        #: Bytes of blobs sent to each rank, so far.
        self.blob_bytes: collections.Counter = collections.Counter()
        self.thread = threading.Thread(target=self._run, name="shoal-mpi", daemon=True)

    # ------------------------------------------------------------ start, stop
    def start(self) -> None:
        """Starts the thread and waits until every serving rank has said
        hello and its clock is compared with ours."""
        self.thread.start()
        self._await(lambda p: p.host is not None, "say it is ready to serve")
        for peer in self.peers.values():
            self.post(peer, (m.SYNC, time.monotonic_ns(), self.timeout))
        self._await(lambda p: p.synced, "answer")

    def _await(self, done, what: str) -> None:
        limit = time.monotonic() + self.timeout
        with self.state:
            while True:
                late = [p for p in self.peers.values() if not done(p)]
                failed = [p for p in late if p.lost is not None]
                if failed:
                    raise ClusterError(f"{failed[0].name()} is lost: {failed[0].lost}")
                if not late:
                    return
                left = limit - time.monotonic()
                if left <= 0:
                    names = ", ".join(p.name() for p in late)
                    raise ClusterError(f"{names} did not {what} within {self.timeout:g} s")
                self.state.wait(left)

    def stop(self) -> bool:
        """The program ended: every serving rank stops its engines and
        leaves. True if all did (none was lost)."""
        with self._lock:
            self._stopping = True
            for peer in self.peers.values():
                if peer.live:
                    self._outbox.append((peer.rank, (m.STOP,), ()))
        self._wake.wake()
        limit = time.monotonic() + self.timeout
        with self.state:
            while any(p.live for p in self.peers.values()) and time.monotonic() < limit:
                self.state.wait(limit - time.monotonic())
        for peer in self.peers.values():
            if peer.live:
                self.lose(peer, f"it did not stop within {self.timeout:g} s of the program's end")
        self.thread.join(self.timeout)
        for pool in list(self._pools.values()):
            pool.on_stopped()
        return not self.lost

    # -------------------------------------------------------- the world
    @property
    def worker_count(self) -> int:
        return sum(p.cpus for p in self.peers.values() if p.live)

    def start_workers(self, processes, setup, maxtasksperchild, max_memory, trace):
        """A Pool's workers: ``processes`` of them spread over the serving
        ranks in proportion to their cores (``MpiWorkers``)."""
        from .workers import MpiWorkers

        live = [p for p in self.peers.values() if p.live]
        if not live:
            lost = "; ".join(self.lost) or "none is left"
            raise ClusterError(f"no rank of this MPI launch is left to serve a Pool ({lost})")
        shares = split(processes, [p.cpus for p in live])
        serving = [(p, n) for p, n in zip(live, shares, strict=True) if n]
        return MpiWorkers.open(self, serving, setup, maxtasksperchild, max_memory, trace)

    def add_pool(self, pool) -> int:
        with self._lock:
            pool_id = next(self._pool_ids)
            self._pools[pool_id] = pool
        return pool_id

    def remove_pool(self, pool_id: int) -> None:
        with self._lock:
            self._pools.pop(pool_id, None)

    # ------------------------------------------------------------- posting
    def post(self, peer: Peer, message: tuple) -> None:
        """Sends ``message`` to ``peer`` from the thread, in order."""
        with self._lock:
            self._outbox.append((peer.rank, message, ()))
        self._wake.wake()

    def hold(self, attachments: list) -> list[Blob]:
        """The blobs of a payload's attachments, each held once more."""
        held = []
        with self._lock:
            for attachment in attachments:
                key = _identity(attachment)
                blob = self._blobs.get(key)
                if blob is None:
                    blob = self._blobs[key] = Blob(next(self._blob_ids), key, attachment)
                blob.holds += 1
                held.append(blob)
        return held

    def release(self, blobs: list[Blob]) -> None:
        """Holds ``blobs`` once less (see ``_drop_idle``)."""
        if not blobs:
            return
        now = time.monotonic()
        with self._lock:
            for blob in blobs:
                blob.holds -= 1
                if blob.holds == 0:
                    blob.idle_since = now

    def _drop_idle(self, now: float) -> None:
        """Tells the ranks to drop the blobs nothing has held for a while."""
        drops = collections.defaultdict(list)
        with self._lock:
            for key, blob in list(self._blobs.items()):
                if blob.holds == 0 and now - blob.idle_since > KEEP_IDLE:
                    del self._blobs[key]
                    for rank in blob.ranks:
                        drops[rank].append(blob.id)
            for rank, ids in drops.items():
                self._outbox.append((rank, (m.DROP, ids), ()))

    def blob_ids(self, peer: Peer, blobs: list[Blob]) -> list[int]:
        """The ids of ``blobs`` for a message to ``peer``, which gets each
        one it does not have yet (before that message)."""
        with self._lock:
            for blob in blobs:
                if peer.rank not in blob.ranks:
                    blob.ranks.add(peer.rank)
                    self.blob_bytes[peer.rank] += blob.nbytes
                    announce = (m.BLOB, blob.id, blob.nbytes)
                    self._outbox.append((peer.rank, announce, (m.readable(blob.source),)))
        return [blob.id for blob in blobs]

    # ---------------------------------------------------------- the thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - every rank is then out of reach
            for peer in self.peers.values():
                self.lose(peer, f"rank 0's MPI thread failed ({type(exc).__name__}: {exc})")

    def _loop(self) -> None:
        MPI, comm = self.MPI, self.comm
        status = MPI.Status()
        pause, next_check = Pause(), 0.0
        while True:
            busy = False
            while True:
                with self._lock:
                    if not self._outbox:
                        break
                    rank, message, data = self._outbox.popleft()
                peer = self.peers[rank]
                if peer.lost is None:
                    try:
                        self._send(peer, message, data)
                    except MPI.Exception as exc:
                        self.lose(peer, f"MPI cannot send to it ({exc})")
                busy = True
            while comm.iprobe(MPI.ANY_SOURCE, m.CONTROL, status):
                rank = status.Get_source()
                message = comm.recv(source=rank, tag=m.CONTROL)
                peer = self.peers[rank]
                peer.last_heard = time.monotonic()
                self._handle(peer, message)
                busy = True
            if self._sending:
                self._sending = [s for s in self._sending if self._unsent(s)]
            now = time.monotonic()
            if now >= next_check:
                self._check(now)
                self._drop_idle(now)
                next_check = now + CHECK_EVERY
            if (
                self._stopping
                and not self._sending
                and not any(p.live for p in self.peers.values())
            ):
                return
            if busy:
                pause.news()
                continue
            # While buffers are on their way, keep MPI's progress going.
            self._wake.sleep(MIN_PAUSE if self._sending else pause.next())

    def _send(self, peer: Peer, message: tuple, data) -> None:
        MPI, comm = self.MPI, self.comm
        self._sending.append((comm.isend(message, peer.rank, m.CONTROL), peer, None))
        for view in data:
            self._sending.append((comm.Isend([view, MPI.BYTE], peer.rank, m.DATA), peer, view))
        peer.last_sent = time.monotonic()

    @staticmethod
    def _unsent(sending: tuple) -> bool:
        """Whether a send is still on its way (one to a lost rank never
        arrives: it is forgotten, and the launcher ends the job)."""
        request, peer, _ = sending
        return peer.lost is None and not request.Test()

    def _receive(self, peer: Peer, nbytes: int) -> _shoal.Fd:
        """A buffer ``peer`` announced, into a segment of its own."""
        segment = _shoal.Segment.create(nbytes)
        request = self.comm.Irecv([memoryview(segment), self.MPI.BYTE], peer.rank, m.DATA)
        if not wait_for(request, time.monotonic() + self.timeout + nbytes / 1e7):
            raise ClusterError(f"a result of {nbytes} bytes from it did not arrive in time")
        return segment.fd()

    def _handle(self, peer: Peer, message: tuple) -> None:
        kind = message[0]
        if kind == m.DONE:
            _, pool_id, items, output = message
            for k, item in enumerate(items):
                payload = item[2]
                if type(payload) is tuple:
                    body, sizes = payload
                    try:
                        fds = [self._receive(peer, n) for n in sizes]
                    except ClusterError as exc:
                        self.lose(peer, str(exc))
                        return
                    items[k] = (*item[:2], (body, fds), *item[3:])
            pool = self._pools.get(pool_id)
            if pool is not None:
                pool.on_done(peer, items, output)
        elif kind == m.ALIVE:
            pass
        elif kind == m.OPENED:
            pool = self._pools.get(message[1])
            if pool is not None:
                pool.on_opened(peer, message[2])
        elif kind == m.ENDED:
            pool = self._pools.get(message[1])
            if pool is not None:
                pool.on_ended(peer, message[2])
        elif kind == m.RECORDS_OF:
            for pool in list(self._pools.values()):
                pool.on_records(peer, message[1], message[2])
        elif kind == m.HELLO:
            _, host, pid, cpus, machine = message
            with self.state:
                peer.host, peer.pid, peer.cpus = host, pid, cpus
                peer.here = tuple(machine) == self.machine
                self.state.notify_all()
        elif kind == m.SYNC:
            _, sent, theirs = message
            now = time.monotonic_ns()
            with self.state:
                # One machine has one monotonic clock; across machines,
                # assume the answer came half way through the round trip.
                peer.offset_ns = 0 if peer.here else (sent + now) // 2 - theirs
                peer.synced = True
                self.state.notify_all()
        elif kind == m.BYE:
            with self.state:
                peer.gone = True
                self.state.notify_all()
        elif kind == m.FAILED:
            self.lose(peer, f"it failed: {message[1]}")
        else:
            self.lose(peer, f"it sent a message shoal does not know ({kind!r})")

    def _check(self, now: float) -> None:
        for peer in self.peers.values():
            if not peer.live:
                continue
            if now - peer.last_heard > self.timeout:
                self.lose(peer, f"it has said nothing for {self.timeout:g} s")
            elif peer.here and not _alive(peer.pid):
                self.lose(peer, "its process has ended")
            elif now - peer.last_sent > m.HEARTBEAT:
                with self._lock:
                    self._outbox.append((peer.rank, (m.ALIVE,), ()))

    def lose(self, peer: Peer, why: str) -> None:
        """``peer`` can no longer serve: its tasks fail, and the run will
        end with an error naming it."""
        with self.state:
            if peer.lost is not None or peer.gone:
                return
            peer.lost = why
            self.lost.append(f"{peer.name()}: {why}")
            self.state.notify_all()
        print(f"shoal: {peer.name()} of the MPI launch is lost: {why}", file=sys.stderr, flush=True)
        for pool in list(self._pools.values()):
            pool.on_lost(peer, why)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def split(total: int, weights: list[int]) -> list[int]:
    """``total`` workers spread over ranks in proportion to ``weights``
    (their cores), largest remainders first; the first rank gets them all
    if every weight is 0."""
    weight = sum(weights)
    if weight == 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w / weight for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
