"""A serving rank: runs the tasks of rank 0's Pools on shoal's local engine.

For each Pool rank 0 opens, this rank starts an engine (a process pool of
its own workers, as many as rank 0 asked for: by default the cores the
launcher gave this rank) and hands it the functions and tasks that arrive;
each engine's completions go back to rank 0 as they come. A worker that dies
here is handled by the engine as it is locally (its task fails or is
retried, a new worker takes its place).

One thread talks MPI: it polls for rank 0's messages (MPI's blocking calls
spin a core, which belongs to the workers), sends what the engines finished
(each engine has a thread that waits for its completions and wakes the loop)
and says ALIVE when it has been quiet for a second. If rank 0 says nothing
for ``timeout`` seconds the loop gives up (the launcher then aborts the
job): a serving rank never waits forever for a program that is gone.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import sys
import threading
import time

from .. import _shoal
from ..cpus import cpu_count
from ..pool.workers import ProcessWorkers
from . import messages as m
from .poll import MAX_PAUSE, Pause, Wakeup, wait_for

#: What a message about one pool does to that pool's engine.
_ABOUT_A_POOL = {
    m.FUNCTION: lambda server, engine, fn_id, payload: engine.register_function(
        fn_id, server.local(payload)
    ),
    m.RELEASE: lambda server, engine, fn_id: engine.release_function(fn_id),
    m.CANCEL: lambda server, engine, task_ids, stop_running: engine.cancel(task_ids, stop_running),
    m.CLOSE: lambda server, engine: engine.close(),
    m.TERMINATE: lambda server, engine: engine.terminate(),
}


class ServerLost(Exception):
    """Rank 0 went silent: the run cannot go on."""


class Served:
    """One of rank 0's Pools on this rank: its engine, and a thread that
    passes the engine's completions to the loop."""

    def __init__(self, pool_id: int, engine: _shoal.Engine, ready, wake) -> None:
        self.pool_id = pool_id
        self.engine = engine
        self._ready = ready
        self._wake = wake
        self.thread = threading.Thread(target=self._forward, name="shoal-served", daemon=True)
        self.thread.start()

    def _forward(self) -> None:
        ready, wake, engine = self._ready, self._wake, self.engine
        while True:
            try:
                batch = engine.wait_completions(None)
            except BaseException as exc:  # noqa: BLE001 - reported by the loop
                ready.append((self.pool_id, exc))
                wake.wake()
                return
            ready.append((self.pool_id, batch))
            wake.wake()
            if batch is None:
                return

    def records(self) -> list[tuple]:
        return [(r.slot, r.pid, r.started_ns, r.ended_ns, r.cpu_ns) for r in self.engine.workers()]


class Server:
    """See the module's docstring."""

    def __init__(self, comm, timeout: float) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.timeout = timeout
        self.pools: dict[int, Served] = {}
        self.blobs: dict[int, _shoal.Segment] = {}
        self.ready: collections.deque = collections.deque()
        self.wake = Wakeup()
        self.sending: list = []  # (request, what it sends), until done
        self.last_heard = self.last_sent = time.monotonic()
        self.stopping = False

    # ----------------------------------------------------------- the loop
    def run(self) -> None:
        MPI, comm = self.MPI, self.comm
        self.send((m.HELLO, socket.gethostname(), os.getpid(), cpu_count(), m.machine()))
        status = MPI.Status()
        pause = Pause()
        while True:
            busy = False
            while comm.iprobe(0, m.CONTROL, status):
                message = comm.recv(source=0, tag=m.CONTROL)
                self.last_heard = time.monotonic()
                self.handle(message)
                busy = True
            while self.ready:
                self.forward(*self.ready.popleft())
                busy = True
            self.test_sends()
            if self.stopping:
                self.stop()
                return
            now = time.monotonic()
            if now - self.last_sent > m.HEARTBEAT:
                self.send((m.ALIVE,))
            if now - self.last_heard > self.timeout:
                raise ServerLost(
                    f"rank 0 (the program) has said nothing for {self.timeout:g} s: it is stuck "
                    "or gone"
                )
            if busy:
                pause.news()
                continue
            self.wake.sleep(pause.next())

    def send(self, message: tuple, data: list = ()) -> None:
        MPI, comm = self.MPI, self.comm
        self.sending.append((comm.isend(message, 0, m.CONTROL), None))
        for view in data:
            self.sending.append((comm.Isend([view, MPI.BYTE], 0, m.DATA), view))
        self.last_sent = time.monotonic()

    def test_sends(self) -> None:
        if self.sending:
            self.sending = [(r, keep) for r, keep in self.sending if not r.Test()]

    def wait(self, request, nbytes: int, what: str) -> None:
        """Waits for ``request`` (polling: MPI's own wait spins), at most
        the time limit plus what ``nbytes`` take at 10 MB/s."""
        if not wait_for(request, time.monotonic() + self.timeout + nbytes / 1e7):
            raise ServerLost(f"{what} did not arrive from rank 0 in time")

    # -------------------------------------------------------- rank 0 says
    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == m.TASKS:
            _, pool_id, fn_id, timeout, retries, first_id, payloads = message
            served = self.pools.get(pool_id)
            if served is None:  # ended meanwhile (terminated): nothing runs them
                cancelled = int(_shoal.Outcome.Cancelled)
                items = [(first_id + k, cancelled, None, 0, None, None, None, None, None, None,
                          None) for k in range(len(payloads))]  # fmt: skip
                self.send((m.DONE, pool_id, items, []))
                return
            local = [self.local(p) for p in payloads]
            served.engine.submit(fn_id, first_id, local, timeout, retries)
        elif kind == m.BLOB:
            _, blob_id, nbytes = message
            segment = _shoal.Segment.create(nbytes)
            request = self.comm.Irecv([memoryview(segment), self.MPI.BYTE], 0, m.DATA)
            self.wait(request, nbytes, f"a buffer of {nbytes} bytes")
            self.blobs[blob_id] = segment
        elif kind == m.DROP:
            for blob_id in message[1]:
                self.blobs.pop(blob_id, None)
        elif kind == m.OPEN:
            self.open(*message[1:])
        elif kind == m.RECORDS:
            _, pool_id, request = message
            served = self.pools.get(pool_id)
            self.send((m.RECORDS_OF, request, served.records() if served else None))
        elif kind == m.SYNC:
            _, clock, self.timeout = message
            self.send((m.SYNC, clock, time.monotonic_ns()))
        elif kind == m.STOP:
            self.stopping = True
        elif kind in _ABOUT_A_POOL:
            # A pool's engine may have ended (terminated) before rank 0
            # heard of it: what comes after is moot.
            served = self.pools.get(message[1])
            if served is not None:
                _ABOUT_A_POOL[kind](self, served.engine, *message[2:])
        elif kind != m.ALIVE:
            raise ValueError(f"shoal internal error: unknown message {kind!r} from rank 0")

    def local(self, payload):
        """A payload as this rank's engine takes it: blob ids become the
        segments they arrived in."""
        if type(payload) is bytes:
            return payload
        body, blob_ids = payload
        return body, [self.blobs[i] for i in blob_ids]

    def open(self, pool_id, workers, init, maxtasksperchild, max_memory, trace) -> None:
        try:
            start = ProcessWorkers.start_packed
            engine = start(workers, self.local(init), maxtasksperchild, max_memory, trace).engine
        except Exception as exc:  # noqa: BLE001 - rank 0 raises it in the program
            self.send((m.OPENED, pool_id, f"{type(exc).__name__}: {exc}"))
            return
        self.pools[pool_id] = Served(pool_id, engine, self.ready, self.wake)
        self.send((m.OPENED, pool_id, None))

    # ------------------------------------------------------ engines answer
    def forward(self, pool_id: int, batch) -> None:
        if isinstance(batch, BaseException):
            raise batch
        if batch is None:  # the engine finished (closed or terminated)
            served = self.pools.pop(pool_id)
            served.engine.join(5.0)
            self.send((m.ENDED, pool_id, served.records()))
            return
        items, data = [], []
        for c in batch.done:
            payload = c.payload
            if type(payload) is tuple:  # a result with buffers in shared memory
                body, attachments = payload
                views = [m.readable(a) for a in attachments]
                data += views
                payload = (body, [len(v) for v in views])
            run = c.run
            if run is not None:
                run = (run.slot, run.pid, run.start_ns, run.deser_ns, run.result_ser_ns)
            items.append((c.task_id, int(c.outcome), payload, c.duration_ns, c.pid, c.exitcode,
                          c.signal, c.timeout, c.started, c.rss, c.limit, run))  # fmt: skip
        output = [(o.slot, o.pid, int(o.stream), o.data) for o in batch.output]
        if items or output:
            self.send((m.DONE, pool_id, items, output), data)

    # ------------------------------------------------------------ leaving
    def stop(self) -> None:
        """Rank 0's program ended: stops every engine, says BYE."""
        for served in self.pools.values():
            served.engine.terminate()
        for served in self.pools.values():
            served.engine.join(5.0)
        self.pools.clear()
        self.blobs.clear()
        self.send((m.BYE,))
        limit = time.monotonic() + self.timeout
        while self.sending and time.monotonic() < limit:
            self.test_sends()
            time.sleep(MAX_PAUSE)


def serve(comm, timeout: float) -> int:
    """A serving rank's life; its exit status (the launcher aborts the job
    when it is not 0)."""
    # Signals meant for the program (SLURM's warning before the time limit,
    # Ctrl-C through mpiexec) reach every rank, and the workers started
    # here inherit the ignoring. Rank 0 decides; this rank serves until it
    # says STOP.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    server = Server(comm, timeout)
    try:
        server.run()
    except ServerLost as exc:
        print(f"shoal: rank {comm.Get_rank()}: {exc}; stopping the job", file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - told to rank 0, which names this rank
        import traceback

        text = "".join(traceback.format_exception(exc))
        print(f"shoal: rank {comm.Get_rank()} failed:\n{text}", file=sys.stderr, flush=True)
        try:
            server.send((m.FAILED, f"{type(exc).__name__}: {exc}"))
            server.wait(server.sending[-1][0], 0, "the failure report")
        except BaseException:  # noqa: BLE001 - the launcher aborts the job anyway
            pass
        return 1
    return 0
