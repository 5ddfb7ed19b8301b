"""Pickling for tasks: protocol 5, plain pickle first (fast, by reference),
cloudpickle where plain pickle cannot (lambdas, closures, ``__main__``)."""

from __future__ import annotations

# The C accelerator that `pickle` itself re-exports (same functions and
# exception classes): importing `pickle.py` would cost every worker ~15 ms.
import _pickle as pickle

from ..errors import SerializationError

PROTOCOL = 5

# How a worker calls the function on a task's payload.
MODE_MAP = 0  # payload: list of items -> [f(x) for x in items]
MODE_STARMAP = 1  # payload: list of arg tuples -> [f(*a) for a in items]
MODE_CALL = 2  # payload: (args, kwargs) -> f(*args, **kwargs)

loads = pickle.loads
_pickle_dumps = pickle.dumps

#: What plain pickle raises for what only cloudpickle (or shoal's own
#: pickler) can send: lambdas, closures, shoal's Locks and Queues.
PLAIN_PICKLE_FAILS = (pickle.PicklingError, TypeError, AttributeError)


def _by_value(obj: object) -> bytes:
    from .cloud import dumps as cloud_dumps  # cloudpickle: imported when first needed

    return cloud_dumps(obj, PROTOCOL)


def dumps(obj: object) -> bytes:
    """Plain pickle; cloudpickle if that fails or if the pickle refers to
    ``__main__`` (another process's ``__main__`` is not the user's script,
    so classes and functions defined there must travel by value;
    cloudpickle also keeps their identity when they come back)."""
    try:
        data = _pickle_dumps(obj, PROTOCOL)
    except PLAIN_PICKLE_FAILS:
        return _by_value(obj)
    if b"__main__" in data:
        return _by_value(obj)
    return data


def dumps_exception(exc: BaseException) -> bytes:
    """An exception with its traceback text; a stand-in that names it if
    the exception itself cannot be pickled."""
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = dumps((exc, tb))
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        return data
    except Exception as why:  # noqa: BLE001
        stand_in = SerializationError(
            f"the task raised {type(exc).__qualname__}: {exc!r}, "
            f"which could not be sent back to the parent ({type(why).__name__}: {why})"
        )
        return pickle.dumps((stand_in, tb), PROTOCOL)


def unpicklable_result_error(result: object, mode: int, why: Exception) -> SerializationError:
    """Names the offending object's type, looking inside a chunk's list."""
    culprit = result
    if mode in (MODE_MAP, MODE_STARMAP) and isinstance(result, list):
        for item in result:
            try:
                dumps(item)
            except Exception:  # noqa: BLE001 - any failure marks the culprit
                culprit = item
                break
    return SerializationError(
        f"a result of type {type(culprit).__qualname__!r} could not be pickled "
        f"to send it back to the parent: {why}"
    )
