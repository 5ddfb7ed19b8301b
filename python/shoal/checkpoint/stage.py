"""Checkpointing as a stage of the call pipeline (``pool.call``): before a
chunk is sent, look its results up in the store and deliver what is there;
send the rest; store each answer as it comes, then deliver it.

Each finished task's pickled result is stored in a SQLite file (the Rust
``Store``) under a key made of the function's identity and the task's
arguments (``checkpoint.keys``); a re-run loads what is stored and computes
only the rest. Two granularities:

- ``ChunkStage`` (``map``/``starmap``): a chunk is one row. Its key is the
  hash of the chunk's pickle -- made anyway to send it, when it is plain
  data --, its row the worker's answer as it came. The chunking follows the
  input's length alone, so a re-run with any number of workers makes the
  same chunks and sends only those not stored.
- ``ItemStage`` (``imap``/``imap_unordered`` and ``checkpoint_key=``): an
  item is one row; the workers run ``runner.StoreEach``, which pickles each
  result on its own.

Either way results are stored as they arrive (a kill midway keeps the
finished work, up to the store's last commit, at most ~0.25 s old) and
committed before the call's result is ready.
"""

from __future__ import annotations

import itertools

from .. import _shoal
from ..errors import CheckpointError
from ..pool.outcome import decode, remote_exception
from ..wire.serialize import dumps, loads
from ..wire.transfer import THRESHOLD
from .keys import (
    KEY_LEN,
    MAP,
    MAP_CHUNK,
    STARMAP,
    STARMAP_CHUNK,
    function_identity,
    key_payloads,
    keys_at,
    task_keys,
)
from .runner import Failed, Item, StoreEach
from .store import open_store, store_path


class _Stage:
    """One checkpointed call's store and function version."""

    def __init__(self, func, star: bool, checkpoint) -> None:
        self.path = store_path(checkpoint)
        self.store = open_store(self.path)
        digest, module, qualname = function_identity(func)
        self.digest = digest
        self.name = f"{module}.{qualname}"
        self.function = self.store.function_id(digest, module, qualname)
        # This call's rows: a commit that loses them fails this call alone.
        self.writer = self.store.new_writer()
        self.star = star
        # Rows answered in the result thread's current batch: handed to the
        # store together when the batch is done (one call, not one per row).
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._tasks: list[int] = []
        self._error: BaseException | None = None

    def keep(self, call, key: bytes, value: bytes, tasks: int) -> None:
        """Stores a row with the result thread's next ``write_rows``."""
        if not self._keys:
            call.pipeline.dirty.append(self)
        self._keys.append(key)
        self._values.append(value)
        self._tasks.append(tasks)

    def write_rows(self) -> None:
        """Hands the rows kept so far to the store (which commits them
        within a quarter second); the error, for ``finish``, if it can't."""
        keys, values, tasks = self._keys, self._values, self._tasks
        if not keys:
            return
        self._keys, self._values, self._tasks = [], [], []
        try:
            self.store.put_many(self.function, b"".join(keys), values, tasks, self.writer)
        except Exception as exc:  # noqa: BLE001 - the call's result reports it
            self._error = self._error or exc

    def load(self, data: bytes):
        """A stored result, unpickled."""
        try:
            return loads(data)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint store {self.path}: a stored result of {self.name} cannot be "
                f"unpickled ({type(exc).__name__}: {exc}), e.g. because a class it uses was "
                f"renamed; remove them with: shoal checkpoint clear {self.path} "
                f"--function {self.name}"
            ) from exc

    def finish(self) -> BaseException | None:
        """Commits what is buffered; the error if this call's rows were lost."""
        if self._keys:
            self.write_rows()
        try:
            self.store.flush(self.writer)
        except Exception as exc:  # noqa: BLE001 - the call's result reports it
            return self._error or exc
        return self._error


class ChunkStage(_Stage):
    """A chunk is one row (see the module's docstring)."""

    def __init__(self, func, star: bool, checkpoint) -> None:
        super().__init__(func, star, checkpoint)
        self.salt = self.digest + (STARMAP_CHUNK if star else MAP_CHUNK)

    def feed(self, call, chunks: list[list], position: int, payloads=None) -> int:
        keyed, sendable = key_payloads(chunks)
        sendable = sendable and _shoal.all_plain(keyed, THRESHOLD)
        keys = _shoal.task_keys(self.salt, keyed)
        stored = self.store.get_many(keys)
        missing, positions, sizes = [], [], []
        for i, (chunk, data) in enumerate(zip(chunks, stored, strict=True)):
            if data is None:
                missing.append(i)
                positions.append(position)
                sizes.append(len(chunk))
            else:
                call.answered(position, len(chunk), True, self.load(data))
            position += len(chunk)
        if not missing:
            return 0
        send = [chunks[i] for i in missing]
        # Plain chunks leave as the pickles their keys were hashed from;
        # others are packed as without a checkpoint (arrays in shared memory).
        payloads = [keyed[i] for i in missing] if sendable else None
        call.send(send, positions, sizes, payloads, detail=(keys, missing))
        return len(send)

    def answer(self, call, sent, k: int, c) -> None:
        """A chunk's answer, on the pool's result thread: stored, then
        delivered."""
        ok, values = decode(c, call.what, call.pickled)
        if ok:
            payload = c.payload
            # What is stored is what loads: the answer as it came when it is
            # one pickle, else the values pickled again.
            data = payload if type(payload) is bytes and call.pickled else dumps(values)
            keys, missing = sent.detail
            i = missing[k] * KEY_LEN
            self.keep(call, keys[i : i + KEY_LEN], data, len(values))
        call.collector.put(sent.positions[k], sent.sizes[k], ok, values)


class ItemStage(_Stage):
    """An item is one row (see the module's docstring). ``key(item)``, when
    given, replaces the item's arguments in its key."""

    def __init__(self, func, star: bool, checkpoint, key) -> None:
        super().__init__(func, star, checkpoint)
        self.salt = self.digest + (STARMAP if star else MAP)
        self.key = key
        self.runner = StoreEach(func, star)

    def feed(self, call, chunks: list[list], position: int, payloads=None) -> int:
        items = list(itertools.chain.from_iterable(chunks))
        if self.key is None:
            keyed, sendable = key_payloads(items)
            keys = _shoal.task_keys(self.salt, keyed)
        else:
            keys, keyed, sendable = task_keys(self.salt, items, self.key), None, False
        stored = self.store.get_many(keys)
        missing = []
        for k, data in enumerate(stored):
            if data is None:
                missing.append(k)
            else:
                call.answered(position + k, 1, True, [self.load(data)])
        if not missing:
            return 0
        size = max(map(len, chunks))
        groups = [missing[i : i + size] for i in range(0, len(missing), size)]
        if sendable:  # the items' plain pickles, made for their keys
            send = [[keyed[k] for k in group] for group in groups]
        else:
            send = [[Item(items[k]) for k in group] for group in groups]
        detail = [([position + k for k in group], keys_at(keys, group)) for group in groups]
        call.send(
            send,
            [where[0] for where, _ in detail],
            [len(group) for group in groups],
            detail=detail,
        )
        return len(groups)

    def answer(self, call, sent, k: int, c) -> None:
        where, keys = sent.detail[k]
        ok, outputs = decode(c, call.what, call.pickled)
        if not ok:
            # As imap: the chunk's first item carries the error; the rest
            # of it is skipped.
            _put_positions(call.collector, where, False, outputs)
            return
        if Failed not in map(type, outputs):
            values = list(map(loads, outputs))  # before storing: what is stored loads
            for i, output in enumerate(outputs):
                self.keep(call, keys[i * KEY_LEN : (i + 1) * KEY_LEN], output, 1)
            _put_values(call.collector, where, values)
            return
        values = []
        for i, output in enumerate(outputs):
            if type(output) is bytes:
                values.append((True, loads(output)))
                self.keep(call, keys[i * KEY_LEN : (i + 1) * KEY_LEN], output, 1)
            else:
                values.append((False, remote_exception(output.payload)))
        for p, (ok, value) in zip(where, values, strict=True):
            call.collector.put(p, 1, ok, [value] if ok else value)


def _put_values(collector, where: list[int], values: list) -> None:
    """Delivers ``values`` at positions ``where``, as few runs as they make."""
    start = 0
    for i in range(1, len(where) + 1):
        if i == len(where) or where[i] != where[i - 1] + 1:
            collector.put(where[start], i - start, True, values[start:i])
            start = i


def _put_positions(collector, where: list[int], ok: bool, error: BaseException) -> None:
    """``error`` at the first position; the chunk's other positions are
    answered by it too (an ordered iterator skips them)."""
    collector.put(where[0], 1, ok, error)
    for p in where[1:]:
        collector.put(p, 1, True, [])
