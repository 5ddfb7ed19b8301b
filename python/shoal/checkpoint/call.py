"""Checkpoint and resume: ``pool.map(f, xs, checkpoint="run.sqlite")`` and
``@shoal.cached("cache.sqlite")``.

Each finished task's pickled result is stored in a SQLite file (the Rust
``Store``) under a key made of the function's identity and the task's
arguments; a re-run loads what is stored and computes only the rest.

- The function's identity is its module, qualified name and a hash of its
  code (bytecode, constants, names, nested functions) and of the values it
  closes over (closure cells, defaults), so an edited function is
  recomputed. Globals it reads are not part of it.
- The arguments' part is a hash of their pickle; numpy arrays and other
  out-of-band buffers are hashed in place, not copied into the pickle.
- ``map``/``starmap`` store a chunk (one task) as one row: its key is the
  hash of the chunk's pickle, sent as it is when it is plain data (chunks
  with arrays are packed again, to travel in shared memory); its value the
  worker's answer as it came. A re-run makes the same chunks (the automatic
  chunk size follows the input's length alone) and sends only those not
  stored. Per-item rows cost a SQLite insert and lookup each, many times a
  trivial task's run time.
- ``imap``/``imap_unordered`` and ``checkpoint_key=`` store each item: their
  workers pickle each result on its own (``_StoreEach``).
- Either way the parent stores results as they arrive: a kill midway keeps
  the finished work, up to the store's last commit (at most ~0.25 s old).
- The tasks are the pool's own otherwise (``_Tasks``): traced, counted for
  ``progress``, stopped by ``pool.cancel``.
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import _shoal
from ..wire.serialize import (
    MODE_MAP,
    MODE_STARMAP,
    dumps,
    loads,
)
from ..wire.transfer import THRESHOLD, loads_payload
from .keys import (
    _MAP,
    _MAP_CHUNK,
    _STARMAP,
    _STARMAP_CHUNK,
    KEY_LEN,
    _key_payloads,
    _keys_at,
    function_identity,
    task_keys,
)
from .runner import _Failed, _Item, _StoreEach
from .store import open_store, store_path

if TYPE_CHECKING:
    from ..pool.progress import Progress

#: A checkpointed map's automatic chunking: this many chunks (fewer for a
#: short input), from the input's length alone so that a re-run makes the
#: same chunks; a kill loses at most the chunks the workers hold.
_MAP_CHUNKS = 64

#: imap: target run time of one chunk when the chunk size is automatic, and
#: most items read ahead of the consumer.
_IMAP_CHUNK_TARGET_NS = 5_000_000
_IMAP_MAX_CHUNK = 1024
_IMAP_READ_AHEAD = 8192


# ----------------------------------------------------------------- parent side
class _Tasks:
    """Runs chunks of items on a pool's workers through one registered
    function, as one call of the pool's own: in its trace, counted for
    ``progress``, stopped by ``pool.cancel``. The one place this module
    touches the pool's internals, with ``_progress``."""

    def __init__(
        self, pool, fn: Callable, mode: int, options, traced: tuple, progress: Progress | None
    ) -> None:
        self._pool = pool
        self._options = options
        self.workers = pool._processes
        self._fn_id = pool._register(fn, mode, options)
        self._trace = pool._trace_call(*traced)  # (method, user's function, chunksize)
        self.progress = progress
        self._lock = threading.Lock()
        self._sent: list[range] = []  # task ids, for cancel (finished ones are ignored)
        self._cancelled = False

    def send(self, chunks: list[list], sink: Callable, payloads: list | None = None) -> int:
        """Each chunk is one task; ``sink(index, code, payload, duration_ns)``
        gets its answer on the pool's result thread. ``payloads``: the
        chunks already pickled, if they can be sent as they are. Returns
        the first task's id."""
        first = self._pool._new_ids(len(chunks))
        progress = self.progress
        if progress is None:

            def answer(task_id, code, payload, duration_ns):
                sink(task_id - first, code, payload, duration_ns)

        else:
            sizes = [len(chunk) for chunk in chunks]

            def answer(task_id, code, payload, duration_ns):
                progress.advance(sizes[task_id - first])
                sink(task_id - first, code, payload, duration_ns)

        self._pool._send(self._fn_id, first, chunks, answer, self._options, self._trace, payloads)
        with self._lock:
            self._sent.append(range(first, first + len(chunks)))
            cancelled = self._cancelled
        if cancelled:  # cancel() ran while these were being sent
            self.cancel()
        return first

    def cancel(self) -> None:
        """Stops the tasks sent so far, and those sent from now on."""
        with self._lock:
            self._cancelled = True
            ids = [task_id for sent in self._sent for task_id in sent]
        if ids:
            self._pool._engine.cancel(ids, True)

    def track(self, iterator, feeder: threading.Thread) -> None:
        """``close``/``join``/``terminate`` treat them like imap's own."""
        self._pool._iterators.add(iterator)
        self._pool._feeders.append(feeder)

    def release(self) -> None:
        self._pool._release_function(self._fn_id)
        if self.progress is not None:
            self.progress.close()


def _progress(pool, what: str, total: int | None, asked: tuple) -> Progress | None:
    """The call's progress report; ``asked``: its ``progress`` and
    ``on_progress``, None where the pool's apply."""
    return pool._call_progress(what, total, *asked)


def _count_stored(progress: Progress | None, items: int, done: bool) -> None:
    """Counts items answered from the store; closes the report if ``done``."""
    if progress is None:
        return
    if items:
        progress.advance(items)
    if done:
        progress.close()


class _Call:
    """One checkpointed call's store, function version and keys."""

    def __init__(self, func: Callable, star: bool, checkpoint, key: Callable | None) -> None:
        self.path = store_path(checkpoint)
        self.store = open_store(self.path)
        digest, module, qualname = function_identity(func)
        self.name = f"{module}.{qualname}"
        self.function = self.store.function_id(digest, module, qualname)
        self.salt = digest + (_STARMAP if star else _MAP)
        self.chunk_salt = digest + (_STARMAP_CHUNK if star else _MAP_CHUNK)
        self.func = func
        self.star = star
        self.key = key
        self.runner = _StoreEach(func, star)

    def load(self, data: bytes):
        """A stored result, unpickled."""
        try:
            return loads(data)
        except Exception as exc:
            raise _shoal.CheckpointError(
                f"checkpoint store {self.path}: a stored result of {self.name} cannot be "
                f"unpickled ({type(exc).__name__}: {exc}), e.g. because a class it uses was "
                f"renamed; remove them with: shoal checkpoint clear {self.path} "
                f"--function {self.name}"
            ) from exc

    def lookup(self, items: list) -> tuple[bytes, list, list[bytes] | None]:
        """The items' keys (concatenated), their stored results (bytes or
        None), and their pickles if those were made on the way."""
        if self.key is None:
            payloads, sendable = _key_payloads(items)
            keys = _shoal.task_keys(self.salt, payloads)
        else:
            keys, payloads, sendable = task_keys(self.salt, items, self.key), None, False
        return keys, self.store.get_many(keys), payloads if sendable else None

    @staticmethod
    def pickled(items: list, positions, pickles: list[bytes] | None) -> list:
        """The items at ``positions`` (a list or a range) as the runner takes
        them: their pickles if made on the way, else as they are."""
        if pickles is None:
            return [_Item(items[p]) for p in positions]
        if isinstance(positions, range):
            return pickles[positions.start : positions.stop]
        return [pickles[p] for p in positions]

    def take(self, outputs: list, keys: bytes) -> tuple[list, dict[int, BaseException]]:
        """Stores a chunk's pickled results under ``keys``; returns the values
        (None where the task failed) and the errors by index."""
        if _Failed not in map(type, outputs):
            values = list(map(loads, outputs))  # before storing: what is stored loads
            self.store.put_many(self.function, keys, outputs)
            return values, {}
        from ..pool.outcome import _remote_exception

        values, errors, stored_keys, stored = [], {}, [], []
        for k, output in enumerate(outputs):
            if type(output) is bytes:
                values.append(loads(output))
                stored_keys.append(keys[k * KEY_LEN : (k + 1) * KEY_LEN])
                stored.append(output)
            else:
                values.append(None)
                errors[k] = _remote_exception(output.payload)
        if stored:
            self.store.put_many(self.function, b"".join(stored_keys), stored)
        return values, errors


def map_async(
    pool,
    func,
    iterable,
    chunksize,
    star,
    callback,
    error_callback,
    checkpoint,
    key,
    options,
    progress: tuple,
):
    """``map_async``/``starmap_async`` with a checkpoint: stored results are
    loaded, the missing ones computed and stored as they arrive. Without
    ``checkpoint_key`` a chunk is stored as one row; with it, each item.
    ``progress``: the call's ``progress`` and ``on_progress``."""
    from ..pool.results import AsyncResult

    method = "starmap" if star else "map"
    what = f"{method}({_name(func)})"
    call = _Call(func, star, checkpoint, key)
    if key is None:
        return _map_chunks(
            pool, what, call, iterable, chunksize, callback, error_callback, options, progress
        )
    items = list(iterable)
    keys, stored, pickles = call.lookup(items)
    reporter = _progress(pool, what, len(items), progress)
    out = [None if data is None else call.load(data) for data in stored]
    missing = [i for i, data in enumerate(stored) if data is None]
    result = AsyncResult(what, callback, error_callback)
    _count_stored(reporter, len(items) - len(missing), not missing)
    if not missing:
        result._set(True, out)
        return result
    traced = (method, func, chunksize)
    if chunksize is None:  # as Pool.map: about four chunks per worker
        chunksize = -(-len(missing) // (pool._processes * 4))
    if len(missing) == len(items):  # nothing stored: chunks are plain ranges
        missing = range(len(items))
    chunks = [missing[i : i + chunksize] for i in range(0, len(missing), chunksize)]
    tasks = _Tasks(pool, call.runner, MODE_MAP, options, traced, reporter)
    run = _MapRun(what, call, result, out, keys, chunks, tasks)
    run.start([call.pickled(items, chunk, pickles) for chunk in chunks])
    return result


def _map_chunks(pool, what, call, iterable, chunksize, callback, error_callback, options, progress):
    """A checkpointed map stored chunk by chunk: a chunk's key is the hash
    of its pickle (made anyway to send it, when it is plain data), its row
    the worker's answer as it came (the chunk's results, pickled together).
    A stored chunk is not sent. The chunking depends on the input's length
    alone, so a re-run with any number of workers makes the same chunks."""
    from ..pool.results import AsyncResult

    items = iterable if isinstance(iterable, list) else list(iterable)
    n = len(items)
    traced = ("starmap" if call.star else "map", call.func, chunksize)
    if chunksize is None:
        chunksize = max(1, -(-n // _MAP_CHUNKS))
    chunks = [items[i : i + chunksize] for i in range(0, n, chunksize)]
    payloads, sendable = _chunk_pickles(chunks)
    keys = _shoal.task_keys(call.chunk_salt, payloads)
    stored = call.store.get_many(keys)
    reporter = _progress(pool, what, n, progress)
    out = [None if data is None else call.load(data) for data in stored]
    missing = [i for i, data in enumerate(stored) if data is None]
    result = AsyncResult(what, callback, error_callback)
    if reporter is not None:
        _count_stored(reporter, n - sum(len(chunks[i]) for i in missing), not missing)
    if not missing:
        result._set(True, list(itertools.chain.from_iterable(out)))
        return result
    mode = MODE_STARMAP if call.star else MODE_MAP
    tasks = _Tasks(pool, call.func, mode, options, traced, reporter)
    run = _ChunkRun(what, call, result, out, keys, missing, tasks)
    if len(missing) < len(chunks):
        chunks = [chunks[i] for i in missing]
        payloads = [payloads[i] for i in missing]
    run.start(chunks, payloads if sendable else None)
    return result


def _chunk_pickles(chunks: list[list]) -> tuple[list[bytes], bool]:
    """Per chunk, what its key is hashed from (as for an item: its pickle,
    with arrays hashed in place); and whether these are the chunks' plain
    pickles, fit to send as they are. Otherwise the pool packs the chunks
    as without a checkpoint: large arrays travel in shared memory, shared
    arrays as handles, and what lives in ``__main__`` by value."""
    payloads, sendable = _key_payloads(chunks)
    return payloads, sendable and _shoal.all_plain(payloads, THRESHOLD)


class _Run:
    """A checkpointed map's chunks in flight: each chunk is stored as it
    arrives; the first failure, or the last chunk (once everything is
    committed), makes the result ready. Subclasses store a chunk's answer
    in their ``sink`` (called on the pool's result thread), then call
    ``chunk_done``; ``value`` is the finished result."""

    def __init__(self, what, call: _Call, result, out: list, tasks, n_chunks: int) -> None:
        self.what = what
        self.call = call
        self.result = result
        self.out = out
        self.tasks = tasks
        self.left = n_chunks
        self.error: BaseException | None = None
        self.done = False
        from ..pool.outcome import VALUE, decode

        self.decode = decode  # imported here: workers need not load it
        self.value_code = VALUE

    def start(self, chunks: list, payloads: list[bytes] | None = None) -> None:
        try:
            first = self.tasks.send(chunks, self.sink, payloads)
        except BaseException:
            self.tasks.release()
            raise
        self.result._tasks = range(first, first + len(chunks))  # for pool.cancel

    def value(self) -> list:
        """The call's result once every chunk is in."""
        return self.out

    def chunk_done(self) -> None:
        """Counts a chunk as answered (stored or failed), on the result thread."""
        self.left -= 1
        if self.left == 0:
            self.tasks.release()
            try:
                self.call.store.flush()
            except Exception as exc:  # noqa: BLE001 - the last commit failed
                self.error = self.error or exc
        # As multiprocessing: the first failure makes the result ready; the
        # other chunks are still stored as they finish.
        if not self.done and (self.error is not None or self.left == 0):
            self.done = True
            if self.error is None:
                self.result._set(True, self.value())
            else:
                self.result._set(False, self.error)


class _ChunkRun(_Run):
    """Chunks stored whole, one row each (see ``_map_chunks``)."""

    def __init__(self, what, call: _Call, result, out: list, keys: bytes, missing, tasks) -> None:
        super().__init__(what, call, result, out, tasks, len(missing))
        self.keys = keys
        self.missing = missing  # the chunks sent, by their index in `out`

    def sink(self, index: int, code: int, payload, duration_ns: int) -> None:
        """A chunk's answer, on the pool's result thread."""
        i = self.missing[index]
        try:
            if code == _shoal.OUTCOME_DONE and type(payload) is bytes:
                values = loads(payload)  # before storing: what is stored loads
                data = payload
            elif code == _shoal.OUTCOME_DONE:  # large results came in shared memory
                values = loads_payload(payload)
                data = dumps(values)
            elif code == self.value_code:  # a thread pool's answer: the list itself
                values, data = payload, dumps(payload)
            else:
                values, data = None, None
                error = self.decode(code, payload, self.what)[1]
                self.error = self.error or error
            if data is not None:
                key = self.keys[i * KEY_LEN : (i + 1) * KEY_LEN]
                self.call.store.put_many(self.call.function, key, [data], [len(values)])
                self.out[i] = values  # per chunk: its results
        except Exception as exc:  # noqa: BLE001 - e.g. the store failed
            self.error = self.error or exc
        self.chunk_done()

    def value(self) -> list:
        return list(itertools.chain.from_iterable(self.out))


class _MapRun(_Run):
    """Items stored one row each (``checkpoint_key=``); a chunk's values are
    put in place as it arrives."""

    def __init__(self, what, call: _Call, result, out: list, keys: bytes, chunks, tasks) -> None:
        super().__init__(what, call, result, out, tasks, len(chunks))
        # Per chunk: its items' keys, and the slice of `out` it fills (None
        # when its items are not side by side).
        self.chunk_keys = [_keys_at(keys, chunk) for chunk in chunks]
        self.spans = [(c[0], c[-1] + 1) if c[-1] - c[0] == len(c) - 1 else None for c in chunks]
        self.chunks = chunks

    def sink(self, index: int, code: int, payload, duration_ns: int) -> None:
        """A chunk's answer, on the pool's result thread."""
        try:
            ok, outputs = self.decode(code, payload, self.what)
            if ok:
                values, errors = self.call.take(outputs, self.chunk_keys[index])
                span = self.spans[index]
                if span is not None:
                    self.out[span[0] : span[1]] = values
                else:
                    for p, value in zip(self.chunks[index], values, strict=True):
                        self.out[p] = value
                if errors and self.error is None:
                    self.error = errors[min(errors)]
            elif self.error is None:
                self.error = outputs
        except Exception as exc:  # noqa: BLE001 - e.g. the store failed
            self.error = self.error or exc
        self.chunk_done()


class _ResumeIterator:
    """``imap``/``imap_unordered`` results with a checkpoint. A feeder
    thread reads the input in blocks, answers stored items at once and sends
    the others to the workers; at most ``_IMAP_READ_AHEAD`` items (or one
    block) wait ahead of the consumer. Outcomes arrive and are taken in
    batches, so an item costs no lock of its own."""

    def __init__(self, what: str, ordered: bool) -> None:
        self._what = what
        self._ordered = ordered
        self._cond = threading.Condition()
        # Delivered outcomes: (ok, value), or None for a position that has
        # none of its own (the rest of a chunk whose failure was reported at
        # its first item). Ordered: by position; unordered: arrival order.
        self._by_position: dict[int, tuple[bool, object] | None] = {}
        self._arrived: list = []
        self._next = 0  # ordered: next position to take
        self._ready: collections.deque = collections.deque()  # taken, not yet yielded
        self._ahead = 0  # items read and not yet taken
        self._read_ahead = _IMAP_READ_AHEAD
        self._total: int | None = None  # items, once the input is exhausted
        self._taken = 0
        self._stopped = False
        self._cancelled = False
        self._stored = False  # every result is answered and committed
        self._store_error: BaseException | None = None  # the last commit failed

    # --- feeder and result-thread side
    def _wait_for_room(self, block: int) -> bool:
        """Reserves room for ``block`` items; False if the input is to be
        read no further (cancelled, or the pool terminated)."""
        with self._cond:
            while (
                not self._stopped
                and not self._cancelled
                and self._ahead > 0
                and self._ahead + block > self._read_ahead
            ):
                self._cond.wait()
            if self._stopped or self._cancelled:
                return False
            self._ahead += block
            return True

    def _deliver(self, outcomes: list[tuple[int, tuple[bool, object] | None]]) -> None:
        """``(position, outcome)`` pairs."""
        with self._cond:
            if self._ordered:
                self._by_position.update(outcomes)
            else:
                self._arrived.extend(outcome for _, outcome in outcomes)
            self._cond.notify_all()

    def _unreserve(self, items: int) -> None:
        """Gives back room reserved for items the input did not have."""
        with self._cond:
            self._ahead -= items
            self._cond.notify_all()

    def _end_input(self, total: int) -> None:
        with self._cond:
            self._total = total
            self._cond.notify_all()

    def _finish(self, store_error: BaseException | None) -> None:
        with self._cond:
            self._stored = True
            self._store_error = store_error
            self._cond.notify_all()

    def _unbound(self) -> None:
        with self._cond:
            self._read_ahead = float("inf")
            self._cond.notify_all()

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _cancel(self) -> None:
        """Reads no more input; what was sent is answered (cancelled)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    # --- consumer side
    def __iter__(self):
        return self

    def _take(self) -> None:
        """Moves every outcome that may be yielded now to ``_ready``; called
        with the lock held."""
        if self._ordered:
            n = 0
            while self._next in self._by_position:
                outcome = self._by_position.pop(self._next)
                self._next += 1
                n += 1
                if outcome is not None:
                    self._ready.append(outcome)
        else:
            n = len(self._arrived)
            self._ready.extend(o for o in self._arrived if o is not None)
            self._arrived.clear()
        if n:
            self._taken += n
            self._ahead -= n
            self._cond.notify_all()

    def next(self, timeout: float | None = None):  # noqa: A003 - multiprocessing's name
        if not self._ready:
            with self._cond:
                while True:
                    self._take()
                    if self._ready:
                        break
                    if self._stopped:
                        raise StopIteration
                    if self._stored and self._total is not None and self._taken >= self._total:
                        # The end comes once everything is committed.
                        error, self._store_error = self._store_error, None
                        if error is not None:
                            raise error
                        raise StopIteration
                    if not self._cond.wait(timeout):
                        from ..pool.results import TimeoutError  # noqa: A004

                        raise TimeoutError(f"no result from {self._what} within {timeout} s")
        ok, value = self._ready.popleft()
        if not ok:
            raise value
        return value

    __next__ = next  # type: ignore[assignment]  # noqa: A003


def imap(
    pool, func, iterable, chunksize, ordered, checkpoint, key, options, progress: tuple
) -> _ResumeIterator:
    """``imap``/``imap_unordered`` with a checkpoint; ``progress``: the
    call's ``progress`` and ``on_progress``."""
    name = "imap" if ordered else "imap_unordered"
    what = f"{name}({_name(func)})"
    it = _ResumeIterator(what, ordered)
    call = _Call(func, False, checkpoint, key)
    total = len(iterable) if hasattr(iterable, "__len__") else None
    reporter = _progress(pool, what, total, progress)
    tasks = _Tasks(pool, call.runner, MODE_MAP, options, (name, func, chunksize), reporter)
    feeder = _Feeder(it, call, tasks, iter(iterable), chunksize)
    it._feed = feeder  # for pool.cancel
    thread = threading.Thread(target=feeder.run, name="shoal-checkpoint-feeder", daemon=True)
    feeder.tasks.track(it, thread)
    thread.start()
    return it


class _Feeder:
    """A checkpointed imap's feeder thread and the sink of its chunks."""

    def __init__(self, it: _ResumeIterator, call: _Call, tasks: _Tasks, source, chunksize):
        self.it = it
        self.call = call
        self.tasks = tasks
        self.source = source
        self.chunksize = chunksize
        self._lock = threading.Lock()
        self._outstanding = 0  # chunks sent and not answered
        self._input_done = False
        self._released = False
        self._item_ns = 0.0  # measured run time per item, smoothed
        from ..pool.outcome import decode

        self.decode = decode  # imported here: workers need not load it

    def run(self) -> None:
        position = 0
        # Blocks hold about four chunks per worker; while the input is all
        # stored, they double, so a resume reads it in large blocks.
        growth = 1
        try:
            while True:
                size = self.chunksize or _auto_chunk(self._item_ns)
                block_len = min(size * self.tasks.workers * 4 * growth, _IMAP_READ_AHEAD)
                block_len = max(block_len, size)
                if not self.it._wait_for_room(block_len):  # cancelled or terminated
                    self.it._end_input(position)
                    return
                block, error = [], None
                try:
                    block.extend(itertools.islice(self.source, block_len))
                except Exception as exc:  # noqa: BLE001 - the input's own error
                    error = exc
                self.it._unreserve(block_len - len(block) - (error is not None))
                computed = self._answer(block, position, size)
                growth = 1 if computed else growth * 2
                position += len(block)
                if error is not None:
                    self.it._deliver([(position, (False, error))])
                    position += 1
                if error is not None or len(block) < block_len:
                    self.it._end_input(position)
                    return
        finally:
            with self._lock:
                self._input_done = True
            self._release_if_done()

    def _answer(self, block: list, position: int, size: int) -> bool:
        """Delivers the block's stored results and sends the others; True if
        there were others."""
        if not block:
            return False
        try:
            keys, stored, pickles = self.call.lookup(block)
            hits = [
                (position + k, (True, self.call.load(data)))
                for k, data in enumerate(stored)
                if data is not None
            ]
        except Exception as exc:  # noqa: BLE001 - e.g. an item that can't be pickled
            self._fail(list(range(position, position + len(block))), exc)
            return True
        self.it._deliver(hits)
        _count_stored(self.tasks.progress, len(hits), False)
        missing = [k for k, data in enumerate(stored) if data is None]
        if not missing:
            return False
        chunks = [missing[i : i + size] for i in range(0, len(missing), size)]
        where = [[position + k for k in chunk] for chunk in chunks]
        chunk_keys = [_keys_at(keys, chunk) for chunk in chunks]
        with self._lock:
            self._outstanding += len(chunks)
        try:
            self.tasks.send(
                [self.call.pickled(block, chunk, pickles) for chunk in chunks],
                functools.partial(self._sink, where, chunk_keys),
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the pool was closed
            with self._lock:
                self._outstanding -= len(chunks)
            self._fail([p for chunk in where for p in chunk], exc)
        return True

    def cancel(self) -> None:
        """``pool.cancel``: stops reading the input and the chunks sent."""
        self.it._cancel()
        self.tasks.cancel()

    def _fail(self, positions: list[int], error: BaseException) -> None:
        """``error`` at the first position; the others are skipped, as imap
        skips the rest of a failed chunk."""
        self.it._deliver([(positions[0], (False, error))] + [(p, None) for p in positions[1:]])

    def _sink(self, where, chunk_keys, index, code, payload, duration_ns) -> None:
        positions = where[index]
        try:
            ok, outputs = self.decode(code, payload, self.it._what)
            if ok:
                values, errors = self.call.take(outputs, chunk_keys[index])
                per_item = duration_ns / len(positions)
                old = self._item_ns
                self._item_ns = per_item if not old else 0.7 * old + 0.3 * per_item
                self.it._deliver(
                    [
                        (p, (False, errors[k]) if k in errors else (True, value))
                        for k, (p, value) in enumerate(zip(positions, values, strict=True))
                    ]
                )
            else:
                self._fail(positions, outputs)
        except Exception as exc:  # noqa: BLE001 - e.g. the store failed
            self._fail(positions, exc)
        with self._lock:
            self._outstanding -= 1
        self._release_if_done()

    def _release_if_done(self) -> None:
        with self._lock:
            release = self._input_done and self._outstanding == 0 and not self._released
            self._released = self._released or release
        if release:
            self.tasks.release()
            try:
                self.call.store.flush()
            except _shoal.CheckpointError as exc:
                self.it._finish(exc)
            else:
                self.it._finish(None)


def _auto_chunk(item_ns: float) -> int:
    if item_ns <= 0:
        return 1
    return int(min(_IMAP_MAX_CHUNK, max(1, _IMAP_CHUNK_TARGET_NS / item_ns)))


def _name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__
