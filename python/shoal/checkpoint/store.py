"""The checkpoint stores this process has open: one per file, committed at
exit, and left alone in a forked child (their writer thread stayed behind)."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from .. import _shoal
from ..errors import CheckpointError
from . import signals

_stores: dict[str, _shoal.Store] = {}
_stores_lock = threading.Lock()
# Stores inherited through fork: their writer thread did not come along, so
# they are kept (never closed or used) rather than dropped.
_inherited: list[_shoal.Store] = []


def store_path(checkpoint: object) -> str:
    """The absolute path of a ``checkpoint=`` argument, checked."""
    try:
        return os.path.abspath(os.fspath(checkpoint))
    except TypeError:
        raise TypeError(
            f"checkpoint must be a file name (str or os.PathLike), got {checkpoint!r}"
        ) from None


def open_store(path: str) -> _shoal.Store:
    """This process's one open store for ``path`` (absolute). The first one
    opened in the main thread installs the time-limit handler
    (``checkpoint.signals``)."""
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = _shoal.Store(path)
    signals.install(flush_all)
    return store


def flush_all() -> list[str]:
    """Commits what every open store has buffered; returns their paths.
    A store that cannot commit is reported on stderr, not raised."""
    with _stores_lock:
        stores = list(_stores.items())
    for _, store in stores:
        try:
            store.flush()
        except CheckpointError as exc:
            import sys

            print(f"shoal: {exc}", file=sys.stderr)
    return [path for path, _ in stores]


def _after_fork_in_child() -> None:
    global _stores_lock
    _inherited.extend(_stores.values())
    _stores.clear()
    # Another thread of the parent may have held it at the fork.
    _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_stores() -> None:
    """Commits what is buffered when the interpreter exits, also after an
    uncaught exception or Ctrl-C."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        try:
            store.close()
        except CheckpointError as exc:
            print(f"shoal: {exc}", file=sys.stderr)
