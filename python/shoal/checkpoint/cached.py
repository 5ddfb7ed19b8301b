"""``@shoal.cached``: joblib.Memory's job on shoal's checkpoint store."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from ..wire.serialize import (
    dumps,
    loads,
)
from .keys import CALL, function_identity, task_keys
from .store import open_store, store_path


def cached(path: str | os.PathLike, *, key: Callable | None = None) -> Callable:
    """Decorator: stores each call's result in the checkpoint store at
    ``path`` and returns it from there when the function is called again with
    the same arguments (joblib.Memory's job), in this process, a later run,
    or a pool's workers. Editing the function's code starts afresh.

    ``key(*args, **kwargs)``, when given, replaces the arguments in the key.
    Each stored result is committed before the call returns. Exceptions are
    not stored; a result that cannot be pickled is returned, not stored.
    """
    target = store_path(path)

    def decorate(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"shoal.cached decorates a function, got {fn!r}")
        function_ids: dict[bytes, int] = {}  # the store's id per version of fn

        @functools.wraps(fn)
        def memoized(*args, **kwargs):
            store = open_store(target)
            # Worked out on every call: what fn closes over, its defaults and
            # the plain globals it reads may have changed since the last.
            digest, module, qualname = function_identity(fn)
            function = function_ids.get(digest)
            if function is None:
                function = function_ids[digest] = store.function_id(digest, module, qualname)
            salt = digest + CALL
            if key is not None:
                keys = task_keys(salt, [key(*args, **kwargs)])
            else:
                # Keyword order does not change the call.
                keys = task_keys(salt, [(args, sorted(kwargs.items()))])
            data = store.get_many(keys)[0]
            if data is not None:
                return loads(data)
            value = fn(*args, **kwargs)
            try:
                data = dumps(value)
            except Exception:  # noqa: BLE001 - returned, not stored
                return value
            store.put_many(function, keys, [data])
            store.flush()
            return value

        return memoized

    return decorate
