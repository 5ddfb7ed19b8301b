"""What a worker runs for a checkpointed call stored item by item: the
user's function on one item, its result pickled on its own."""

from __future__ import annotations

from collections.abc import Callable

from ..wire.serialize import (
    MODE_CALL,
    dumps,
    dumps_exception,
    loads,
    unpicklable_result_error,
)


class Failed:
    """An exception raised by the user's function for one item, with its
    traceback, pickled."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self):
        return Failed, (self.payload,)


class Item:
    """An item sent to ``StoreEach`` as it is, not as its plain pickle: the
    pool packs it as any task's arguments (large arrays in shared memory,
    shared arrays and shoal's Lock, Value and Queue as handles; on a
    ThreadPool, the object itself)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __reduce__(self):
        return Item, (self.value,)


class StoreEach:
    """What the workers run for a checkpointed call: the user's function on
    one item -- pickled when the parent pickled it for its key anyway (plain
    data), else an ``Item`` --, its result pickled on its own (the parent
    stores these bytes as they are), and an exception caught so the chunk's
    other items still run and are stored. A result that can't be pickled
    fails its item only (it could not travel back to the parent either)."""

    __slots__ = ("fn", "star")

    def __init__(self, fn: Callable, star: bool) -> None:
        self.fn = fn
        self.star = star

    def __reduce__(self):
        return StoreEach, (self.fn, self.star)

    def __call__(self, item):
        try:
            args = item.value if type(item) is Item else loads(item)
            value = self.fn(*args) if self.star else self.fn(args)
        except Exception as exc:  # noqa: BLE001 - re-raised in the parent
            return Failed(dumps_exception(exc))
        try:
            return dumps(value)
        except Exception as why:  # noqa: BLE001 - reported for this item
            return Failed(dumps_exception(unpicklable_result_error(value, MODE_CALL, why)))
