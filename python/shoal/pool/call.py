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

from .._shoal import measured_chunk_size
from .outcome import decode

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

    def complete(self, completion) -> None:
        self.call.complete(self, completion)


class Call:
    """See the module's docstring. ``fn_id`` is the registered function the
    tasks run; ``owns_function``: release it when the call ends (``apply``
    and ``submit`` share cached ones)."""

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
        self.item_ns = 0.0  # measured run time per item, smoothed
        self._lock = threading.Lock()
        self._sent: list[range] = []  # task ids, for cancel
        self._outstanding = 0
        self._input_done = False
        self._ended = False
        self.cancelled = False
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
        with self._lock:
            self._outstanding += len(chunks)
        pipeline = self.pipeline
        if self._traced is not None and self.trace is None:
            self.trace = pipeline.recorder.call(*self._traced)
        first = pipeline.new_ids(len(chunks))
        try:
            pipeline.send(
                Sent(self, first, positions, sizes, detail),
                chunks,
                payloads,
                ser_ns,
            )
        except BaseException:
            with self._lock:
                self._outstanding -= len(chunks)
            raise
        with self._lock:
            self._sent.append(range(first, first + len(chunks)))
            cancelled = self.cancelled
        if cancelled:  # cancel() ran while these were being sent
            pipeline.workers.cancel(list(range(first, first + len(chunks))), True)

    def answered(self, position: int, n: int, ok: bool, value: Any) -> None:
        """Outcomes known without running anything (stored in a checkpoint,
        or an input that failed to read)."""
        self.collector.put(position, n, ok, value)
        if self.progress is not None:
            self.progress.advance(n)

    def input_done(self, total: int | None = None) -> None:
        """No more input; ``total`` items in all."""
        if total is not None and hasattr(self.collector, "input_done"):
            self.collector.input_done(total)
        with self._lock:
            self._input_done = True
        self._end_if_finished()

    # --- answers (the pool's result thread)
    def complete(self, sent: Sent, c) -> None:
        k = c.task_id - sent.first
        n = sent.sizes[k]
        try:
            if self.stage is not None:
                self.stage.answer(self, sent, k, c)
            else:
                ok, value = decode(c, self.what, self.pickled)
                self.collector.put(sent.positions[k], n, ok, value)
            if n and c.duration_ns:
                per_item = c.duration_ns / n
                old = self.item_ns
                self.item_ns = per_item if not old else 0.7 * old + 0.3 * per_item
        except BaseException as exc:  # noqa: BLE001 - fails this call, never the result thread
            self._put_error(sent.positions[k], n, exc)
        if self.progress is not None:
            self.progress.advance(n)
        with self._lock:
            self._outstanding -= 1
        self._end_if_finished()

    def _put_error(self, position: int, n: int, exc: BaseException) -> None:
        try:
            self.collector.put(position, n, False, exc)
        except BaseException:  # noqa: BLE001 - the collector itself failed
            self.collector.end(exc)

    def _end_if_finished(self) -> None:
        with self._lock:
            finished = self._input_done and self._outstanding == 0 and not self._ended
            self._ended = self._ended or finished
        if finished:
            self._end()

    def _end(self, error: BaseException | None = None) -> None:
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
        with self._lock:
            ended, self._ended = self._ended, True
        if not ended:
            self._end(error)

    # --- stopping
    def cancel(self) -> None:
        """Stops the tasks sent so far, those sent from now on, and reading
        the input."""
        with self._lock:
            self.cancelled = True
            ids = [task_id for sent in self._sent for task_id in sent]
        if ids:
            self.pipeline.workers.cancel(ids, True)

    def withdraw(self) -> None:
        """``Future.cancel()``: withdraws tasks not yet started."""
        with self._lock:
            ids = [task_id for sent in self._sent for task_id in sent]
        self.pipeline.workers.cancel(ids, False)


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
