"""What rank 0 and the serving ranks say to each other.

Every message is a tuple ``(KIND, ...)`` sent with mpi4py's ``isend`` on tag
``CONTROL``. A message that announces buffers (``BLOB``, and ``DONE`` with
large results) is followed, on tag ``DATA``, by one raw message per buffer,
in order: the buffer's bytes as they are, not pickled. MPI keeps messages
between two ranks on one tag in order, so a receiver reads each announced
buffer right after its announcement.

Payloads travel in the local engine's own format (``wire.transfer``):
``bytes``, or ``(body, attachments)`` where each attachment is a shared
memory segment. Between ranks an attachment becomes a *blob*: its bytes
are sent once to each serving rank that needs it, which keeps them in a
segment of its own for as long as rank 0 says (``DROP``); a payload names
its blobs by id. So an array given to many tasks of a call crosses the
network once per serving rank, and the workers on that rank map it from
shared memory as they would locally.
"""

from __future__ import annotations

import io
import os
import pickle

from .. import _shoal

#: Tags: pickled messages, and the raw buffers some of them announce.
CONTROL, DATA = 1, 2

# rank 0 -> a serving rank
OPEN = 1  # (OPEN, pool, workers, init payload, maxtasksperchild, max_memory, trace)
FUNCTION = 2  # (FUNCTION, pool, fn_id, payload)
RELEASE = 3  # (RELEASE, pool, fn_id)
TASKS = 4  # (TASKS, pool, fn_id, timeout, retries, first_id, [payload, ...])
CANCEL = 5  # (CANCEL, pool, [task_id, ...], stop_running)
CLOSE = 6  # (CLOSE, pool)
TERMINATE = 7  # (TERMINATE, pool)
RECORDS = 8  # (RECORDS, pool, request)
BLOB = 9  # (BLOB, blob_id, nbytes), then the bytes on DATA
DROP = 10  # (DROP, [blob_id, ...])
SYNC = 11  # (SYNC, rank 0's clock): answered with (SYNC, that clock, this rank's)
STOP = 12  # (STOP,): the program ended; end every pool and leave

# a serving rank -> rank 0
HELLO = 20  # (HELLO, host, pid, cpus, machine())
OPENED = 21  # (OPENED, pool, error text or None, [worker pid, ...])
DONE = 22  # (DONE, pool, [completion, ...], [output, ...]), then result buffers on DATA
ENDED = 23  # (ENDED, pool, [worker record, ...])
RECORDS_OF = 24  # (RECORDS_OF, request, [worker record, ...])
BYE = 25  # (BYE,): every pool ended; this rank leaves
FAILED = 26  # (FAILED, text): this rank hit an error it cannot serve past

# either way
ALIVE = 30  # (ALIVE,): nothing to say for a while, but still here

#: Seconds without a message after which a rank says ALIVE.
HEARTBEAT = 1.0

#: How a segment may be mapped by the task that receives it, in the header
#: of a payload (``wire.transfer``): only these can go to another machine.
_PORTABLE = (_shoal.ACCESS_READ_ONLY, _shoal.ACCESS_OWNED)


def accesses(body: bytes) -> list[int]:
    """The access of each attachment of a packed payload's ``body``."""
    return pickle.load(io.BytesIO(body))[0]


def check_portable(payload, what: str) -> None:
    """Refuses a payload that holds something only this machine can use:
    a ``shoal.shared`` array, a ``shoal.Lock``, ``Value`` or ``Queue``."""
    if type(payload) is bytes:
        return
    if all(a in _PORTABLE for a in accesses(payload[0])):
        return
    raise TypeError(
        f"cannot send {what} to the ranks of this MPI launch (shoal run --pool), which may "
        "be other machines: it holds a shoal.shared array, Lock, Value or Queue, and these "
        "live in the memory of one machine. Send plain data (a numpy array: np.array(a)) and "
        "return what the tasks compute, or use a local Pool"
    )


def machine() -> tuple:
    """What tells this machine and process namespace from others: its boot
    id and its pid namespace. Two ranks that share it share one monotonic
    clock, and one's pid is the other's to check (a host name says neither:
    containers on two machines may share one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return boot, os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return (None, os.getpid())  # unknown: never equal to another rank's


def nbytes(attachment) -> int:
    """The size of a payload's attachment (an ``Fd`` or a ``Segment``)."""
    return attachment.size() if type(attachment) is _shoal.Fd else len(attachment)


def readable(attachment) -> memoryview:
    """An attachment's bytes, to send (mapped read-only if it is an ``Fd``)."""
    if type(attachment) is _shoal.Fd:
        attachment = _shoal.Segment.map(attachment, _shoal.ACCESS_READ_ONLY)
    return memoryview(attachment)
