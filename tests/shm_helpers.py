"""Task functions for the shared-memory tests (importable by workers, so
they pickle by reference)."""

from __future__ import annotations

import os
import time

import numpy as np
from shoal import _shoal


def segment_of(obj):
    """``(inode, access)`` of the shoal segment holding ``obj``'s bytes in
    this process, or None if they are ordinary memory."""
    _, _, segment, _ = _shoal.locate(obj)
    if segment is None:
        return None
    return os.fstat(segment.fd().fileno()).st_ino, segment.access


def describe(a):
    """What a task sees of an array argument."""
    return {
        "dtype": str(a.dtype),
        "shape": a.shape,
        "writeable": a.flags.writeable,
        "segment": segment_of(a) if a.flags.forc else None,
        "sum": float(np.asarray(a, dtype=np.float64).sum()) if a.dtype.kind in "biufc" else None,
    }


def try_write(a):
    """Writes into ``a``; returns the error text, or None if it worked."""
    try:
        a.flat[0] = 1
    except ValueError as exc:
        return str(exc)
    return None


def total(a):
    return float(a.sum())


def scale(a, factor=2.0):
    return a * factor


def scale_in_place(a, factor=2.0):
    a *= factor
    return a


def fill_row(out, i):
    out[i] = i
    return os.getpid()


def add_at(out, index, value):
    out[index] += value


def increment(value, times, use_lock, gate=None):
    """``times`` unprotected (or locked) ``value.value += 1``, with a short
    pause between the read and the write (as real work would make). With a
    ``gate`` (a Value counting arrivals), waits until two tasks have
    arrived, so their loops overlap."""
    if gate is not None:
        with gate.get_lock():
            gate.value += 1
        deadline = time.monotonic() + 10
        while gate.value < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
    for _ in range(times):
        if use_lock:
            with value.get_lock():
                current = value.value
                time.sleep(0.00001)
                value.value = current + 1
        else:
            current = value.value
            time.sleep(0.00001)
            value.value = current + 1


def hold_lock(lock, seconds, log=None):
    with lock:
        if log is not None:
            log.put(("in", os.getpid(), time.monotonic()))
        time.sleep(seconds)
        if log is not None:
            log.put(("out", os.getpid(), time.monotonic()))
    return os.getpid()


def produce(queue, start, count):
    for i in range(start, start + count):
        queue.put(i)
    return count


def consume(queue, count, timeout=10):
    return [queue.get(timeout=timeout) for _ in range(count)]


def put_array(queue, n):
    queue.put(np.arange(n, dtype=np.float64))


def echo_through(inbox, outbox):
    outbox.put(inbox.get(timeout=10))


def set_value(value, new):
    value.value = new


def sleep_forever():
    time.sleep(3600)


def hold_array_then_die(a, marker):
    """Touches the segment, says so in ``marker``, then dies hard."""
    float(a.sum())
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    os.kill(os.getpid(), 9)


STORED = None


def store(value):
    """An initializer: keeps ``value`` for ``stored()``."""
    global STORED
    STORED = value


def stored(_=None):
    return STORED


def mapped_at(a):
    """Address of the segment mapping ``a`` lives in, in this process."""
    return _shoal.locate(a)[2].address


def shoal_mappings(pid="self"):
    """How many shoal segments a process has mapped."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return sum("memfd:shoal-shm" in line for line in f)
    except FileNotFoundError:
        return 0


def shoal_fds(pid="self"):
    """How many descriptors of shoal segments a process holds."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return 0
    count = 0
    for name in names:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("/memfd:shoal-shm")
        except OSError:
            pass  # closed meanwhile
    return count


def identity_flags(a):
    """Whether the array a task received is writable, and its shape."""
    return a.flags.writeable, a.shape


class Flaky(Exception):
    """Raised by the first run of ``bump_fail_first``."""


def bump_fail_first(a, marker):
    """Adds 1 to its argument in place; the first run then fails."""
    a += 1
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise Flaky("first run")
    return float(a[0])
