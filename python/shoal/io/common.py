"""What the zarr and parquet references share: importing an optional
dependency with an error that says how to install it, and a per-process
cache of opened stores, so that a worker opens each store once however many
of its chunks it reads."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import ModuleType

from ..errors import MissingDependencyError

#: The extra that brings the data dependencies: ``pip install "shoal[data]"``.
EXTRA = "data"

#: module -> the PyPI package that provides it
_PACKAGES = {"zarr": "zarr", "pyarrow": "pyarrow", "numcodecs": "numcodecs"}


def need(module: str, what: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` saying that
    ``what`` needs it and how to install it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{what} needs {_PACKAGES.get(top, top)}, which is not installed "
            f'({exc}); install shoal\'s data extra: pip install "shoal[{EXTRA}]"',
            name=top,
        ) from exc


def stamp(path: str) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a file: changes when it is rewritten."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class ProcessCache:
    """Opened objects by key, kept for the life of the process (a worker
    reading many chunks of one store opens it once). Safe from several
    threads: a key is opened once even when threads ask for it together.
    A key should include a :func:`stamp` of what it opens, so that a store
    rewritten under the same path is opened again."""

    def __init__(self, limit: int = 64) -> None:
        self._lock = threading.Lock()
        self._items: dict = {}
        self._limit = limit

    def get(self, key, opener: Callable[[], object]):
        with self._lock:
            if key in self._items:
                return self._items[key]
            value = opener()
            if len(self._items) >= self._limit:  # forget the oldest
                del self._items[next(iter(self._items))]
            self._items[key] = value
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: Allocations this large or larger are mapped on their own, and given back
#: to the system when freed (see :func:`bound_allocator`).
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_bounded: list[bool] = []


def bound_allocator() -> None:
    """Makes this process's C allocator give chunk-sized buffers back to the
    system when they are freed (glibc's ``mallopt(M_MMAP_THRESHOLD, 1 MiB)``,
    once per process; nothing elsewhere). Reading a chunk allocates and
    frees buffers of about its size: its compressed bytes and decompressed
    data. By default glibc raises its threshold to the largest such block
    (up to 32 MiB) and then keeps freed blocks for reuse in a pool per
    thread, where ``malloc_trim`` cannot reach them: a process reading
    many chunks from several threads keeps several chunks' worth of free
    memory resident. dask's distributed workers make the same trade
    (``MALLOC_TRIM_THRESHOLD_``): a little CPU for page faults, for memory
    that follows what is in use."""
    if _bounded:
        return
    _bounded.append(True)
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def fspath(path, what: str) -> str:
    """``path`` as an absolute path (workers may run in another directory)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    return os.path.abspath(os.fspath(path))
