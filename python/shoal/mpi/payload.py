"""Objects as messages: pickled as shoal pickles Pool tasks (protocol 5,
large buffers in shared memory), and loaded back."""

from __future__ import annotations

import _pickle

from ..wire.serialize import PLAIN_PICKLE_FAILS, PROTOCOL, loads
from ..wire.transfer import pack, unpack

#: Objects of ``__main__`` travel by reference between ranks that run the
#: same program (``shoal run``: as mpi4py sends them), by value between
#: ranks that run a function of another process's ``__main__``
#: (``shoal.spmd`` from a notebook).
main_by_value = True

#: A plain pickle smaller than this, without out-of-band buffers, is sent
#: as it is (it cannot hold anything that belongs in shared memory).
_SMALL = 64 * 1024
_dumps = _pickle.dumps


class _HasBuffers(Exception):
    """Raised by :func:`refuse_buffers`: the object holds buffers (numpy
    arrays) that shoal's transfer should handle."""


def refuse_buffers(buffer) -> None:
    """A pickler's ``buffer_callback`` that stops a plain pickling at the
    first out-of-band buffer, before anything large is copied."""
    raise _HasBuffers


def dumps(obj):
    """``bytes``, or ``(bytes, [Fd])`` with the segments of large buffers.

    An object without buffers whose pickle is small is pickled once,
    plainly. The others go through shoal's transfer, which moves large
    buffers to shared memory and sends shared arrays as handles (both
    ranks then see one array)."""
    try:
        data = _dumps(obj, PROTOCOL, buffer_callback=refuse_buffers)
    except (_HasBuffers, *PLAIN_PICKLE_FAILS):
        return pack(obj, main_by_value=main_by_value)
    if len(data) < _SMALL and not (main_by_value and b"__main__" in data):
        return data
    return pack(obj, main_by_value=main_by_value)


def load(payload):
    """The object a received payload holds."""
    return loads(payload) if type(payload) is bytes else unpack(*payload)
