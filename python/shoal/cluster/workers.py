"""``MpiWorkers``: the set of workers of a Pool served by the ranks of an MPI
launch, for the call pipeline (``pool.pipeline`` lists the calls).

Each serving rank runs this Pool's tasks on an engine of its own, with
``workers`` processes. Tasks wait here until a rank has room: each keeps
two tasks per worker, more when tasks are short (enough to cover a few
milliseconds of round trip), so a rank never idles while this one decides;
but the last tasks of a call (as many as there are workers) wait here for
whichever worker frees up first. Payloads are
packed here exactly as for local workers (large buffers in shared memory);
``cluster.link`` sends each buffer once to each rank that needs it.

Completions come back as ``_shoal.Completion``s (with the worker's slot
numbered across the ranks, and its times on this rank's clock when the pool
traces), so the pipeline reads them as it reads local ones. A rank that is
lost fails the tasks it held with ``WorkerLostError`` naming it.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
from typing import NamedTuple

from .._shoal import Completion, Outcome, RunInfo, Stream
from ..errors import ShoalError, WorkerLostError, WorkerStartError
from ..pool.workers import timed_batches
from ..wire.serialize import dumps
from ..wire.transfer import dumps_function, pack, pack_many, payload_nbytes
from . import messages as m

_OUTCOMES = {
    int(o): o
    for o in (
        Outcome.Done,
        Outcome.Failed,
        Outcome.Lost,
        Outcome.TimedOut,
        Outcome.OverMemory,
        Outcome.Cancelled,
        Outcome.InitFailed,
        Outcome.CannotStart,
        Outcome.Error,
    )
}
_STREAMS = {int(s): s for s in (Stream.Stdout, Stream.Stderr, Stream.Log)}

#: Tasks kept at a rank per worker: the one running, and enough waiting
#: to cover this long a round trip to rank 0 and back (MPI's, and the
#: polls'), at most MAX_DEPTH in all.
COVER_NS = 3_000_000
MAX_DEPTH = 256


class Output(NamedTuple):
    """A worker's output, as ``_shoal.WorkerOutput``."""

    slot: int
    pid: int
    stream: Stream
    data: bytes


class WorkerRecord(NamedTuple):
    """A worker, as ``_shoal.WorkerRecord``."""

    slot: int
    pid: int
    started_ns: int
    ended_ns: int | None
    cpu_ns: int


class Batch(NamedTuple):
    output: list
    done: list


class Task:
    __slots__ = ("fn_id", "task_id", "payload", "timeout", "retries", "blobs")

    def __init__(self, fn_id, task_id, payload, timeout, retries, blobs) -> None:
        self.fn_id, self.task_id, self.payload = fn_id, task_id, payload
        self.timeout, self.retries, self.blobs = timeout, retries, blobs


class Serving:
    """This Pool on one serving rank."""

    def __init__(self, peer, workers: int, base: int) -> None:
        self.peer = peer
        self.workers = workers
        self.base = base  # its first worker's number in the Pool
        self.in_flight = 0
        self.opened: str | bool = False  # True, or the error text
        self.ended = False
        self.lost: str | None = None
        self.records: list[WorkerRecord] = []

    @property
    def active(self) -> bool:
        return not self.ended and self.lost is None


class MpiWorkers:
    """See the module's docstring."""

    kind = "process"
    pickled = True
    settle = None  # completions are decoded as they come

    # Packed as for local workers: the ranks' engines take the same payloads.
    pack = staticmethod(pack)
    pack_many = staticmethod(pack_many)
    pack_batches = staticmethod(timed_batches)

    @staticmethod
    def sizes(payloads: list) -> list[int]:
        return [payload_nbytes(p) for p in payloads]

    def __init__(self, link, serving: list[tuple], trace: bool) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._serving: dict[int, Serving] = {}
        base = 0
        for peer, n in serving:
            self._serving[peer.rank] = Serving(peer, n, base)
            base += n
        self._queue: collections.deque[Task] = collections.deque()
        self._queued_fns: collections.Counter = collections.Counter()
        self._releasing: set[int] = set()  # released while tasks of it wait here
        self._where: dict[int, Serving] = {}  # task id -> the rank running it
        self._task_blobs: dict[int, list] = {}
        self._fn_blobs: dict[int, list] = {}
        self._init_blobs: list = []
        self._done: list = []
        self._output: list = []
        self._item_ns = 0.0
        self._closing = self._close_sent = self._terminating = False
        self._records_asked: dict[int, dict] = {}
        self._request_ids = itertools.count(1)
        self._trace = trace
        self.pool_id = link.add_pool(self)

    @classmethod
    def open(cls, link, serving, setup: tuple, maxtasksperchild, max_memory, trace):
        """Starts an engine for a new Pool on each serving rank (``serving``:
        ``(peer, workers)`` pairs) and waits until each has."""
        self = cls(link, serving, trace)
        try:
            for s in self._serving.values():
                init = pack(setup + (s.workers,))
                m.check_portable(init, "the pool's initializer or initargs")
                blobs = link.hold(init[1]) if type(init) is not bytes else []
                self._init_blobs += blobs
                message = (m.OPEN, self.pool_id, s.workers, self._portable(s, init, blobs),
                           maxtasksperchild, max_memory, trace)  # fmt: skip
                link.post(s.peer, message)
            self._await_opened()
        except BaseException:
            self.terminate()
            link.remove_pool(self.pool_id)
            link.release(self._init_blobs)
            raise
        return self

    def _await_opened(self) -> None:
        limit = time.monotonic() + self._link.timeout
        with self._lock:
            while True:
                for s in self._serving.values():
                    if s.lost is not None:
                        raise ShoalError(f"{s.peer.name()} of the MPI launch is lost: {s.lost}")
                    if isinstance(s.opened, str):
                        raise WorkerStartError(
                            f"{s.peer.name()} could not start this Pool's workers: {s.opened}"
                        )
                late = [s for s in self._serving.values() if s.opened is not True]
                if not late:
                    return
                left = limit - time.monotonic()
                if left <= 0:
                    raise ShoalError(
                        f"{late[0].peer.name()} did not start this Pool's workers within "
                        f"{self._link.timeout:g} s"
                    )
                self._changed.wait(left)

    def _portable(self, s: Serving, payload, blobs: list):
        """``payload`` as it travels to ``s``: attachments become blob ids."""
        if type(payload) is bytes:
            return payload
        return payload[0], self._link.blob_ids(s.peer, blobs)

    # ------------------------------------------------------------ functions
    def register(self, fn_id: int, func, mode: int, retry_on: tuple) -> None:
        payload = dumps_function(func, mode, retry_on)
        m.check_portable(payload, f"function {func!r}")
        blobs = self._link.hold(payload[1]) if type(payload) is not bytes else []
        with self._lock:
            self._fn_blobs[fn_id] = blobs
            for s in self._serving.values():
                if s.active:
                    portable = self._portable(s, payload, blobs)
                    self._link.post(s.peer, (m.FUNCTION, self.pool_id, fn_id, portable))

    def release(self, fn_id: int) -> None:
        with self._lock:
            if self._queued_fns[fn_id]:
                self._releasing.add(fn_id)  # its waiting tasks still need it
                return
            self._release(fn_id)

    def _release(self, fn_id: int) -> None:
        for s in self._serving.values():
            if s.active:
                self._link.post(s.peer, (m.RELEASE, self.pool_id, fn_id))
        self._link.release(self._fn_blobs.pop(fn_id, []))

    # ---------------------------------------------------------------- tasks
    def submit(self, fn_id: int, first_id: int, chunks: list, payloads: list, options) -> None:
        for payload in payloads:  # before anything is held or sent
            m.check_portable(payload, "a task's arguments")
        hold, timeout, retries = self._link.hold, options.timeout, options.retries
        blobs = [None if type(p) is bytes else hold(p[1]) for p in payloads]
        tasks = [
            Task(fn_id, first_id + k, payload, timeout, retries, blobs[k])
            for k, payload in enumerate(payloads)
        ]
        with self._lock:
            self._queue.extend(tasks)
            self._queued_fns[fn_id] += len(tasks)
            if self._terminating:
                self._fail_queued()
            elif not any(s.active for s in self._serving.values()):
                self._fail_queued(self._no_rank_left())
            else:
                self._dispatch()

    def _no_rank_left(self) -> WorkerLostError:
        why = "; ".join(f"{s.peer.name()}: {s.lost}" for s in self._serving.values() if s.lost)
        return WorkerLostError(
            f"no rank of the MPI launch is left to serve this pool ({why or 'all ended'})",
            pid=None,
            exitcode=None,
            signal=None,
        )

    def submit_one(self, fn_id: int, task_id: int, args, payload, options) -> None:
        self.submit(fn_id, task_id, [args], [payload], options)

    def _depth(self) -> int:
        """Tasks to keep at a rank per worker (see the module's docstring)."""
        item_ns = self._item_ns
        if not item_ns:
            return 2  # not known yet
        return min(MAX_DEPTH, 1 + math.ceil(COVER_NS / item_ns))

    def _dispatch(self) -> None:
        """Sends waiting tasks to ranks with room (the lock is held): first
        to idle workers, then, while more tasks wait than there are
        workers, to wait behind running ones (up to ``_depth`` per worker).
        The last tasks of a call thus go to whichever worker frees up first,
        instead of queueing behind each other at one rank while another
        idles."""
        queue = self._queue
        if not queue:
            return
        ranks = [s for s in self._serving.values() if s.active and s.opened is True]
        if not ranks:
            return
        depth = self._depth()
        workers = sum(s.workers for s in ranks)
        while queue:
            # The least busy rank for its size first; it takes its share of
            # what waits (a few tasks are spread, not piled on one).
            best = min(ranks, key=lambda s: s.in_flight / s.workers)
            idle = best.workers - best.in_flight
            if idle > 0:
                room = idle
            else:
                room = min(best.workers * depth - best.in_flight, len(queue) - workers)
                if room <= 0:
                    return
            share = max(best.workers, -(-len(queue) // len(ranks)))
            self._send(best, [queue.popleft() for _ in range(min(room, share, len(queue)))])
        self._maybe_close()

    def _send(self, s: Serving, tasks: list[Task]) -> None:
        link, where, task_blobs = self._link, self._where, self._task_blobs
        run: list[Task] = []
        payloads: list = []
        for k, t in enumerate(tasks):
            where[t.task_id] = s
            if t.blobs is None:
                payloads.append(t.payload)
            else:
                task_blobs[t.task_id] = t.blobs
                payloads.append((t.payload[0], link.blob_ids(s.peer, t.blobs)))
            run.append(t)
            following = tasks[k + 1] if k + 1 < len(tasks) else None
            if (
                following is None
                or following.task_id != t.task_id + 1
                or (following.fn_id, following.timeout, following.retries)
                != (t.fn_id, t.timeout, t.retries)
            ):
                first = run[0]
                message = (m.TASKS, self.pool_id, first.fn_id, first.timeout, first.retries,
                           first.task_id, payloads)  # fmt: skip
                link.post(s.peer, message)
                self._sent_from_queue(first.fn_id, len(run))
                run, payloads = [], []
        s.in_flight += len(tasks)

    def _sent_from_queue(self, fn_id: int, n: int) -> None:
        left = self._queued_fns[fn_id] - n
        if left:
            self._queued_fns[fn_id] = left
            return
        del self._queued_fns[fn_id]
        if fn_id in self._releasing:
            self._releasing.discard(fn_id)
            self._release(fn_id)

    def _fail_queued(self, error: BaseException | None = None) -> None:
        """Every waiting task ends here: cancelled, or failed with
        ``error`` (the lock is held)."""
        blobs = []
        while self._queue:
            t = self._queue.popleft()
            self._done.append(self._ended_here(t.task_id, error))
            self._sent_from_queue(t.fn_id, 1)
            if t.blobs:
                blobs += t.blobs
        self._link.release(blobs)
        self._changed.notify_all()

    def _ended_here(self, task_id: int, error: BaseException | None):
        if error is None:
            return Completion(task_id, Outcome.Cancelled)
        return Completion(task_id, Outcome.Failed, dumps((error, str(error) + "\n")))

    def cancel(self, task_ids: list[int], stop_running: bool = False) -> None:
        ids = set(task_ids)
        with self._lock:
            waiting = [t for t in self._queue if t.task_id in ids]
            if waiting:
                self._queue = collections.deque(t for t in self._queue if t.task_id not in ids)
                blobs = []
                for t in waiting:
                    self._done.append(Completion(t.task_id, Outcome.Cancelled))
                    self._sent_from_queue(t.fn_id, 1)
                    blobs += t.blobs or ()
                self._link.release(blobs)
                self._changed.notify_all()
            by_rank = collections.defaultdict(list)
            for task_id in ids:
                s = self._where.get(task_id)
                if s is not None:
                    by_rank[s.peer.rank].append(task_id)
            for rank, sent in by_rank.items():
                s = self._serving[rank]
                if s.active:
                    self._link.post(s.peer, (m.CANCEL, self.pool_id, sent, stop_running))
            self._maybe_close()

    def withdraw(self, task_ids: list[int]) -> list[int]:
        """Cancels those of ``task_ids`` still waiting here (no rank holds
        them yet); returns them (``Future.cancel()``)."""
        ids = set(task_ids)
        with self._lock:
            waiting = [t.task_id for t in self._queue if t.task_id in ids]
        if waiting:
            self.cancel(waiting)
        return waiting

    def held(self, task_ids: list[int]) -> list[int]:
        """Those of ``task_ids`` a serving rank holds (``Future.running()``)."""
        with self._lock:
            return [task_id for task_id in task_ids if task_id in self._where]

    # ------------------------------------------------- the ranks answer
    def on_opened(self, peer, error: str | None) -> None:
        with self._lock:
            s = self._serving[peer.rank]
            s.opened = True if error is None else error
            s.ended = error is not None  # no engine there
            self._changed.notify_all()

    def on_done(self, peer, items: list, output: list) -> None:
        """A rank's completions, on the link's thread."""
        s = self._serving.get(peer.rank)
        if s is None:
            return
        offset, base = peer.offset_ns, s.base
        done, blobs = [], []
        durations = 0
        where, task_blobs = self._where, self._task_blobs
        traced = self._trace
        for item in items:
            (task_id, outcome, payload, duration_ns, pid, exitcode, signal,
             timeout, started, rss, limit, run) = item  # fmt: skip
            outcome = _OUTCOMES[outcome]
            if traced and run is not None:
                slot, run_pid, start_ns, deser_ns, result_ser_ns = run
                run = RunInfo(slot + base, run_pid, start_ns + offset, deser_ns, result_ser_ns)
            else:
                run = None
            c = Completion(task_id, outcome, payload, duration_ns, pid=pid, exitcode=exitcode,
                           signal=signal, timeout=timeout, started=started, rss=rss,
                           limit=limit, run=run)  # fmt: skip
            done.append(c)
            if outcome is Outcome.Done:
                durations += duration_ns
        lines = [
            Output(slot + base, pid, _STREAMS[stream], data) for slot, pid, stream, data in output
        ]
        with self._lock:
            for c in done:
                if where.pop(c.task_id, None) is not None:
                    s.in_flight -= 1
                held = task_blobs.pop(c.task_id, None)
                if held:
                    blobs += held
            if durations and done:
                # Smoothed run time per task: how deep each rank's queue is.
                per_task = durations / len(done)
                self._item_ns = (
                    per_task if not self._item_ns else 0.7 * self._item_ns + 0.3 * per_task
                )
            self._done += done
            self._output += lines
            self._dispatch()
            self._changed.notify_all()
        self._link.release(blobs)

    def on_ended(self, peer, records: list) -> None:
        s = self._serving.get(peer.rank)
        if s is None:
            return
        with self._lock:
            s.ended = True
            s.records = self._records(s, records)
            self._changed.notify_all()
            everywhere = not any(x.active for x in self._serving.values())
        if everywhere:
            self._finish()

    def on_records(self, peer, request: int, records) -> None:
        with self._lock:
            asked = self._records_asked.get(request)
            s = self._serving.get(peer.rank)
            if asked is not None and s is not None:
                asked[peer.rank] = self._records(s, records) if records is not None else s.records
                self._changed.notify_all()

    def on_lost(self, peer, why: str) -> None:
        s = self._serving.get(peer.rank)
        if s is None:
            return
        with self._lock:
            if s.lost is not None or s.ended:
                return
            s.lost = why
            message = (
                f"{peer.name()} of the MPI launch, which ran {s.workers} of this pool's workers, "
                f"is lost ({why}); its tasks cannot finish"
            )
            error = WorkerLostError(message, pid=peer.pid, exitcode=None, signal=None)
            blobs = []
            for task_id in [t for t, where in self._where.items() if where is s]:
                del self._where[task_id]
                self._done.append(self._ended_here(task_id, error))
                blobs += self._task_blobs.pop(task_id, None) or ()
            s.in_flight = 0
            if not any(x.active for x in self._serving.values()):
                self._fail_queued(self._no_rank_left())
            self._link.release(blobs)
            self._changed.notify_all()
            everywhere = not any(x.active for x in self._serving.values())
        if everywhere:
            self._finish()

    def on_stopped(self) -> None:
        """The program ended and the ranks left."""
        for s in self._serving.values():
            self.on_lost(s.peer, "the program ended")

    def _finish(self) -> None:
        self._link.remove_pool(self.pool_id)
        with self._lock:
            blobs, self._init_blobs = self._init_blobs, []
        self._link.release(blobs)

    @staticmethod
    def _records(s: Serving, records: list) -> list[WorkerRecord]:
        offset = s.peer.offset_ns
        return [
            WorkerRecord(
                slot + s.base, pid, started + offset, None if ended is None else ended + offset, cpu
            )  # fmt: skip
            for slot, pid, started, ended, cpu in records
        ]

    # ---------------------------------------------------------- the pipeline
    def wait_completions(self, timeout: float | None = None):
        """The completions and output that arrived, as a batch; an empty
        batch after ``timeout`` seconds; None once every rank's engine for
        this Pool has ended and everything was taken."""
        limit = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._done and not self._output:
                if self._queue or any(s.active for s in self._serving.values()):
                    if limit is None:
                        self._changed.wait()
                        continue
                    left = limit - time.monotonic()
                    if left <= 0:
                        return Batch([], [])
                    self._changed.wait(left)
                    continue
                return None
            batch = Batch(self._output, self._done)
            self._output, self._done = [], []
        return batch

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._maybe_close()

    def _maybe_close(self) -> None:
        """Once closed and nothing waits here, each rank closes its engine
        (which finishes what it holds)."""
        if self._closing and not self._close_sent and not self._queue:
            self._close_sent = True
            for s in self._serving.values():
                if s.active:
                    self._link.post(s.peer, (m.CLOSE, self.pool_id))

    def terminate(self) -> None:
        with self._lock:
            if self._terminating:
                return
            self._terminating = True
            self._fail_queued()
            for s in self._serving.values():
                if s.active:
                    self._link.post(s.peer, (m.TERMINATE, self.pool_id))

    def join(self, timeout: float | None = None) -> bool:
        limit = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(s.active for s in self._serving.values()):
                if limit is None:
                    self._changed.wait()
                    continue
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def records(self) -> list[WorkerRecord]:
        """Every worker the ranks have run for this Pool (asked of them
        while it runs; kept once it ended)."""
        with self._lock:
            active = [s for s in self._serving.values() if s.active]
            if not active:
                return [r for s in self._serving.values() for r in s.records]
            request = next(self._request_ids)
            asked = self._records_asked[request] = {}
            for s in active:
                self._link.post(s.peer, (m.RECORDS, self.pool_id, request))
            limit = time.monotonic() + self._link.timeout
            while any(s.active and s.peer.rank not in asked for s in self._serving.values()):
                left = limit - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            del self._records_asked[request]
            records = []
            for s in self._serving.values():
                records += asked.get(s.peer.rank, s.records)
        return records

    def worker_pids(self) -> list[int]:
        return [r.pid for r in self.records() if r.ended_ns is None]
