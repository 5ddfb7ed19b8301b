"""One call of a pool -- ``map``, ``imap``, ``apply_async``, ``submit``, with
or without a checkpoint -- from its input to its result object.

A call cuts its input into chunks and sends each as a task; as answers come
back (on the pool's result thread) it passes each through its checkpoint
stage, if it has one (which stores it), counts it for ``progress``, and
hands the collector (``pool.results``) a run of outcomes. Once the input is
read and every task answered, it releases its function, commits the store
and ends the collector. ``cancel`` stops what it sent and reads no more.

A lazy input (``imap``) is read by a ``Feeder`` thread, as far ahead of the
consumer as the collector allows, with chunks sized from measured run times.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from .._shoal import Outcome, measured_chunk_size
from ..wire.serialize import loads
from .outcome import decode

_DONE = Outcome.Done


def _decode(c, call, pickled: bool) -> tuple[bool, object]:
    """``outcome.decode``, with its common case first: a plain pickled
    result. ``call.what`` names the task in messages; it is read only when
    one is needed (a ``OneTask`` builds it on demand)."""
    payload = c.payload
    if c.outcome is _DONE and pickled and type(payload) is bytes:
        try:
            return True, loads(payload)
        except (Exception, SystemExit):  # noqa: BLE001 - decode says what failed
            pass
    return decode(c, call.what, pickled)


#: Most chunks a feeder reads and sends in one go.
FEED_CHUNKS = 64


class Sent:
    """Tasks ``first, first + 1, ...`` of one call, sent together: where each
    one's items start in the input, and how many it has."""

    __slots__ = ("call", "first", "positions", "sizes", "detail")

    def __init__(self, call: Call, first: int, positions, sizes, detail=None) -> None:
        self.call = call
        self.first = first
        self.positions = positions
        self.sizes = sizes
        self.detail = detail  # the checkpoint stage's own bookkeeping

    def complete(self, c) -> None:
        """Task ``c.task_id``'s answer, on the pool's result thread."""
        call = self.call
        k = c.task_id - self.first
        n = self.sizes[k]
        try:
            if call.stage is not None:
                call.stage.answer(call, self, k, c)
            else:
                ok, value = _decode(c, call, call.pickled)
                call.collector.put(self.positions[k], n, ok, value)
            if call.measure and n and c.duration_ns:
                call.note_run_time(c.duration_ns / n)
        except BaseException as exc:  # noqa: BLE001 - fails this call, never the result thread
            call.put_error(self.positions[k], n, exc)
        if call.progress is not None:
            call.progress.advance(n)
        call.answered_one()


class Call:
    """See the module's docstring. ``fn_id`` is the registered function the
    tasks run; ``owns_function``: release it when the call ends. ``measure``:
    keep ``item_ns``, the smoothed run time per item (a feeder sizes its
    chunks from it)."""

    def __init__(
        self,
        pipeline,
        collector,
        *,
        fn_id: int,
        owns_function: bool,
        options,
        what: str,
        progress=None,
        stage=None,
        traced: tuple | None = None,
        measure: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.collector = collector
        self.fn_id = fn_id
        self.owns_function = owns_function
        self.options = options
        self.what = what
        self.progress = progress
        self.stage = stage
        self._traced = traced  # (method, function, chunksize) when the pool traces
        self.trace: int | None = None  # the call's trace record, from its first task
        self.pickled = pipeline.workers.pickled
        self.measure = measure
        self.item_ns = 0.0
        # Tasks sent (counted by the sending thread, before they leave) and
        # answered (counted by the result thread): the call ends when the
        # input is done and the two agree. Only the end takes a lock.
        self._sent_count = 0
        self._answered = 0
        self._input_done = False
        self._ended = False
        self._end_lock = threading.Lock()
        self._sent: list[range] = []  # task ids, for cancel
        self.cancelled = False
        self._stop_running = False  # once cancelled: stop what workers hold too
        collector._call = self

    # --- sending (the caller's thread, or the feeder's)
    def feed(self, chunks: list[list], position: int, payloads=None, ser_ns: int = 0) -> int:
        """Sends ``chunks`` (the input's items from ``position`` on), or
        answers them from the checkpoint store; returns how many tasks were
        sent. ``payloads``: the chunks already packed for the workers, if
        they are."""
        if self.stage is not None:
            return self.stage.feed(self, chunks, position, payloads)
        positions, sizes, p = [], [], position
        for chunk in chunks:
            positions.append(p)
            sizes.append(len(chunk))
            p += len(chunk)
        self.send(chunks, positions, sizes, payloads, ser_ns)
        return len(chunks)

    def send(self, chunks: list, positions, sizes, payloads=None, ser_ns: int = 0, detail=None):
        """Sends ``chunks`` as tasks; their answers go to ``complete``."""
        pipeline = self.pipeline
        if self._traced is not None and self.trace is None:
            self.trace = pipeline.recorder.call(*self._traced)
        first = pipeline.new_ids(len(chunks))
        self._sent_count += len(chunks)
        try:
            pipeline.send(Sent(self, first, positions, sizes, detail), chunks, payloads, ser_ns)
        except BaseException:
            self._sent_count -= len(chunks)
            raise
        sent = range(first, first + len(chunks))
        self._sent.append(sent)
        if self.cancelled:  # cancel() ran while these were being sent
            pipeline.workers.cancel(list(sent), self._stop_running)

    def answered(self, position: int, n: int, ok: bool, value: Any) -> None:
        """Outcomes known without running anything (stored in a checkpoint,
        or an input that failed to read)."""
        self.collector.put(position, n, ok, value)
        if self.progress is not None:
            self.progress.advance(n)

    def input_done(self, total: int | None = None) -> None:
        """No more input; ``total`` items in all."""
        if total is not None:
            self.collector.input_done(total)
        self._input_done = True
        if self._answered == self._sent_count:
            self._end_once()

    # --- answers (the pool's result thread; see ``Sent.complete``)
    def note_run_time(self, per_item_ns: float) -> None:
        old = self.item_ns
        self.item_ns = per_item_ns if not old else 0.7 * old + 0.3 * per_item_ns

    def answered_one(self) -> None:
        self._answered += 1
        if self._input_done and self._answered == self._sent_count:
            self._end_once()

    def put_error(self, position: int, n: int, exc: BaseException) -> None:
        try:
            self.collector.put(position, n, False, exc)
        except BaseException:  # noqa: BLE001 - the collector itself failed
            self.collector.end(exc)

    def _end_once(self, error: BaseException | None = None) -> None:
        with self._end_lock:
            ended, self._ended = self._ended, True
        if ended:
            return
        if self.owns_function:
            self.pipeline.workers.release(self.fn_id)
        if self.progress is not None:
            self.progress.close()
        if self.stage is not None and error is None:
            error = self.stage.finish()
        collector = self.collector
        # A result the caller keeps must not keep the pool's pipeline alive.
        collector._call = None
        collector.end(error)

    def fail(self, error: BaseException) -> None:
        """The call can't go on (the pool's result thread stopped): every
        task it waits for is given up, and its result fails with ``error``."""
        self._end_once(error)

    # --- stopping
    def cancel(self, stop_running: bool = True) -> None:
        """Stops reading the input and cancels the tasks sent so far and
        those sent from now on; ``stop_running=False`` leaves those a worker
        already holds to finish (what an executor's ``map`` does when its
        iterator is closed or times out)."""
        self._stop_running = self._stop_running or stop_running
        self.cancelled = True
        ids = [task_id for sent in list(self._sent) for task_id in sent]
        if ids:
            self.pipeline.workers.cancel(ids, stop_running)


def name_of(func) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


class OneTask:
    """A call of one task (``apply_async``, ``submit``): the same role as a
    ``Call``, with nothing to count. It is its own entry in the pipeline's
    table of tasks out."""

    # Slots, not a tuple, for what names the task: one object fewer per
    # task for the garbage collector to track.
    __slots__ = ("pipeline", "collector", "task_id", "fn_id", "owns_function", "method", "func",
                 "name")  # fmt: skip

    def __init__(self, pipeline, collector, task_id, fn_id, owns, method, func, name=None):
        self.pipeline = pipeline
        self.collector = collector
        self.task_id = task_id
        self.fn_id = fn_id
        self.owns_function = owns
        self.method = method
        self.func = func
        self.name = name
        collector._call = self

    @property
    def what(self) -> str:
        """``method(name)``, for messages: made only when one needs it."""
        return f"{self.method}({self.name or name_of(self.func)})"

    def complete(self, c) -> None:
        collector = self.collector
        try:
            ok, value = _decode(c, self, self.pipeline.workers.pickled)
            collector.put(0, 1, ok, value)
        except BaseException as exc:  # noqa: BLE001 - fails this call, never the result thread
            collector.end(exc)
        self._end()

    def _end(self) -> None:
        if self.owns_function:
            self.pipeline.workers.release(self.fn_id)
        self.collector._call = None

    def fail(self, error: BaseException) -> None:
        self.collector.end(error)
        self._end()

    def cancel(self, stop_running: bool = True) -> None:
        self.pipeline.workers.cancel([self.task_id], stop_running)

    def withdraw(self) -> bool:
        """``Future.cancel()``: cancels the task if no worker holds it yet;
        says whether it did."""
        return bool(self.pipeline.workers.withdraw([self.task_id]))

    def held(self) -> bool:
        """Whether a worker holds the task (runs it, or has it queued)."""
        return bool(self.pipeline.workers.held([self.task_id]))


class Feeder:
    """Reads a lazy input in chunks and feeds them to its call, while the
    collector has room; with an automatic chunk size, chunks grow from
    measured run times until each runs about 5 ms."""

    def __init__(self, call: Call, source, chunksize: int | None) -> None:
        self.call = call
        self.source = source
        self.chunksize = chunksize
        self.thread = threading.Thread(target=self.run, name="shoal-feeder", daemon=True)

    def run(self) -> None:
        call, collector, position = self.call, self.call.collector, 0
        growth = 1  # while everything read is found stored, read more at once
        try:
            while not call.cancelled:
                size = self.chunksize or measured_chunk_size(call.item_ns)
                room = collector.wait_for_room(size, FEED_CHUNKS * growth)
                if room == 0:
                    return
                chunks, error = [], None
                try:
                    for _ in range(room):
                        chunk = list(itertools.islice(self.source, size))
                        if not chunk:
                            break
                        chunks.append(chunk)
                except Exception as exc:  # noqa: BLE001 - the input's own error
                    error = exc
                read = sum(map(len, chunks))
                failed = error is not None  # a run of its own, at the end
                collector.unreserve(room * size - read - failed, room - len(chunks) - failed)
                if chunks:
                    try:
                        sent = call.feed(chunks, position)
                        growth = 1 if sent else min(growth * 2, 128)
                    except Exception as exc:  # noqa: BLE001 - e.g. an item that can't be pickled
                        call.answered(position, read, False, exc)
                        position += read
                        return
                    position += read
                if error is not None:
                    call.answered(position, 1, False, error)
                    position += 1
                if error is not None or len(chunks) < room or read < room * size:
                    return
        finally:
            call.input_done(position)
