"""``shoal.Pipe``: two connected ends, as ``multiprocessing.Pipe``.

The ends are the two sides of a ``SOCK_SEQPACKET`` socketpair, so every
message arrives whole and in order. ``send`` pickles as Pool tasks do:
large arrays travel through shared memory (memfds passed with the message),
shared arrays, Locks, Values and Queues as handles. A message too big for
one packet travels in a memfd too. Either end can be passed to Pool tasks
and ``shoal.Process``es; ``recv`` raises ``EOFError`` once every copy of
the other end is closed and nothing is left to read.
"""

from __future__ import annotations

import errno

from .. import _shoal
from ..errors import QueueClosed
from ..wire.serialize import loads
from ..wire.transfer import pack, unpack

_RAW = -1


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 - multiprocessing's name
    """``(conn1, conn2)``: with ``duplex`` both ends send and receive;
    without, ``conn1`` only receives and ``conn2`` only sends."""
    tx, rx = _shoal.MessageQueue().fds()
    first = Connection._over(rx, readable=True, writable=duplex)
    second = Connection._over(tx, readable=duplex, writable=True)
    return first, second


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "the connection is closed")


class Connection:
    """One end of a Pipe: ``send(obj)``, ``recv()``, ``poll(timeout)``,
    ``send_bytes``, ``recv_bytes``, ``recv_bytes_into``, ``close()``,
    ``fileno()``, ``closed``, ``readable``, ``writable``, ``with``."""

    __slots__ = ("_fd", "_mq", "_readable", "_writable", "__weakref__")

    @classmethod
    def _over(cls, fd, readable: bool = True, writable: bool = True) -> Connection:
        conn = cls.__new__(cls)
        conn._fd = fd
        conn._mq = _shoal.MessageQueue(fd, fd)
        conn._readable = readable
        conn._writable = writable
        return conn

    # -- state

    @property
    def closed(self) -> bool:
        return self._mq is None

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def fileno(self) -> int:
        self._open()
        return self._fd.fileno()

    def close(self) -> None:
        """Closes this end (in this process: copies passed to other
        processes stay open until they close them)."""
        self._mq = None
        self._fd = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open(self):
        mq = self._mq
        if mq is None:
            raise _closed_error()
        return mq

    def _for_writing(self):
        mq = self._open()
        if not self._writable:
            raise OSError(errno.EBADF, "this end of the pipe only receives (duplex=False)")
        return mq

    def _for_reading(self):
        mq = self._open()
        if not self._readable:
            raise OSError(errno.EBADF, "this end of the pipe only sends (duplex=False)")
        return mq

    # -- sending

    def _put(self, body: bytes, fds) -> None:
        mq = self._for_writing()
        try:
            mq.put(body, fds, None)
        except QueueClosed:
            raise BrokenPipeError(
                errno.EPIPE, "the other end of the pipe is closed (in every process)"
            ) from None

    def send(self, obj) -> None:
        """Sends a picklable object (large arrays through shared memory)."""
        self._for_writing()
        packed = pack(obj)
        body, fds = (packed, ()) if type(packed) is bytes else packed
        self._put(body, fds)

    def send_bytes(self, buf, offset: int = 0, size: int | None = None) -> None:
        """Sends bytes from a bytes-like object, as one message."""
        self._for_writing()
        view = memoryview(buf).cast("B")
        n = len(view)
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._put(bytes(view[offset : offset + size]), ())

    # -- receiving

    def _get(self, timeout: float | None):
        mq = self._for_reading()
        try:
            return mq.get(timeout)
        except QueueClosed:
            raise EOFError("the other end of the pipe was closed") from None

    def recv(self):
        """Waits for an object and returns it; EOFError once the other end
        is closed and nothing is left."""
        body, fds = self._get(None)
        return unpack(body, fds) if fds else loads(body)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Waits for a message and returns its bytes."""
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        body, _fds = self._get(None)
        if maxlength is not None and len(body) > maxlength:
            self.close()
            raise OSError(f"bad message length: {len(body)} bytes, more than {maxlength}")
        return body

    def recv_bytes_into(self, buf, offset: int = 0) -> int:
        """Reads a message into ``buf`` at byte ``offset``; returns its
        length. ``multiprocessing.BufferTooShort`` (holding the message) if
        it does not fit."""
        view = memoryview(buf).cast("B")
        if offset < 0 or offset > len(view):
            raise ValueError("offset out of bounds")
        body, _fds = self._get(None)
        if len(body) > len(view) - offset:
            from multiprocessing import BufferTooShort

            raise BufferTooShort(body)
        view[offset : offset + len(body)] = body
        return len(body)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a ``recv`` would not wait (a message is there, or the
        other end is closed); waits at most ``timeout`` seconds for one
        (forever if None)."""
        mq = self._for_reading()
        if timeout is not None and timeout <= 0:
            timeout = 0.0
        return mq.poll(timeout)

    # -- travelling

    def _shoal_share_(self, attach):
        self._open()
        return (_rebuild_connection, attach(self._fd, _RAW), self._readable, self._writable)

    def __reduce__(self):
        raise TypeError(
            "a shoal Pipe's Connection can be passed to shoal Pool tasks and Processes, "
            "through a shoal Queue or Pipe and in a shoal Manager's dict or list, but not "
            "pickled otherwise"
        )

    def __repr__(self) -> str:
        if self.closed:
            return "<shoal.Connection closed>"
        kind = {(True, True): "duplex", (True, False): "receiving", (False, True): "sending"}
        return f"<shoal.Connection {kind[self._readable, self._writable]}, fd {self.fileno()}>"


def _rebuild_connection(attachments, index: int, readable: bool, writable: bool) -> Connection:
    return Connection._over(attachments[index], readable, writable)


def connect_fd(fileno: int) -> Connection:
    """A Connection over a connected ``SOCK_SEQPACKET`` socket (duplicated;
    the caller keeps its own descriptor)."""
    return Connection._over(_shoal.Fd.dup(fileno))
