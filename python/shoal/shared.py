"""Numpy arrays in shared memory, which every worker sees and can write.

    import shoal, numpy as np

    out = shoal.shared.zeros((1000, 1000))        # a numpy array
    def fill(i):
        out[i] = i                                # seen by the parent
    with shoal.Pool() as pool:
        pool.map(fill, range(1000))

They are ordinary numpy arrays whose memory is a shared segment (a memfd).
Passed to a task (as an argument, inside a closure, through a
``shoal.Queue``), an array or any view of it travels as a handle, never as
a copy; writes in any process are seen by all. The memory is freed when the
last array or view using it, in any process, is gone; nothing is left
behind in /dev/shm, even if a process is killed. As with any shared
memory, concurrent writes to the same elements need a ``shoal.Lock``.
"""

from __future__ import annotations

import math
from typing import Any

from . import _shoal

__all__ = ["array", "empty", "full", "zeros"]


def _numpy():
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy is a test dependency
        raise ImportError("shoal.shared needs numpy: pip install numpy") from exc
    return numpy


def _shareable_dtype(dtype):
    np = _numpy()
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(
            f"dtype {dtype} holds Python objects, which live in one process and cannot be "
            "shared; use a numeric, bool, string or structured dtype without objects"
        )
    return dtype


def empty(shape, dtype: Any = float, order: str = "C"):
    """A new shared array, contents undefined (in fact zeros)."""
    np = _numpy()
    dtype = _shareable_dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    segment = _shoal.Segment.create(nbytes)
    return np.ndarray(shape, dtype, buffer=segment, order=order)


def zeros(shape, dtype: Any = float, order: str = "C"):
    """A new shared array of zeros (a fresh segment is zero-filled)."""
    return empty(shape, dtype, order)


def full(shape, fill_value, dtype: Any = None, order: str = "C"):
    """A new shared array filled with ``fill_value``."""
    np = _numpy()
    if dtype is None:
        dtype = np.array(fill_value).dtype
    out = empty(shape, dtype, order)
    out.fill(fill_value)
    return out


def array(shape_or_data, dtype: Any = None, order: str = "C"):
    """``array((rows, cols), dtype)``: a new shared array of zeros, as
    ``pymp.shared.array``; ``array(data)``: a shared copy of ``data`` (a
    list, an array...). An int or a tuple of ints is a shape."""
    np = _numpy()
    is_shape = isinstance(shape_or_data, int) or (
        isinstance(shape_or_data, tuple) and all(isinstance(n, int) for n in shape_or_data)
    )
    if is_shape:
        return zeros(shape_or_data, float if dtype is None else dtype, order)
    data = np.asarray(shape_or_data, dtype=dtype)
    out = empty(data.shape, data.dtype, order)
    out[...] = data
    return out
