"""Objects as messages: pickled as shoal pickles Pool tasks (protocol 5,
large buffers in shared memory), and loaded back."""

from __future__ import annotations

from ..wire.serialize import loads
from ..wire.transfer import pack, unpack

#: Objects of ``__main__`` travel by reference between ranks that run the
#: same program (``shoal run``: as mpi4py sends them), by value between
#: ranks that run a function of another process's ``__main__``
#: (``shoal.spmd`` from a notebook).
main_by_value = True


def dumps(obj):
    """``bytes``, or ``(bytes, [Fd])`` with the segments of large buffers."""
    return pack(obj, main_by_value=main_by_value)


def load(payload):
    """The object a received payload holds."""
    return loads(payload) if type(payload) is bytes else unpack(*payload)
