"""``MPI.Request``: a non-blocking send or receive, completed by
``wait``/``test`` or by the class methods ``waitall``, ``waitany``,
``testall``, ``testany`` (and their upper-case forms).

Sends complete at once (shoal buffers every message, as MPI allows), so
an ``isend``'s request is done when it is returned. A receive request is
*posted*: it takes the first matching message before any receive posted
after it, as MPI requires, even when it is waited for later.
"""

from __future__ import annotations

from ..wire.serialize import loads
from ..wire.transfer import unpack
from . import runtime
from .constants import ANY_SOURCE, PROC_NULL, WAIT
from .status import Status

_DONE = 0  # nothing to wait for (a send; a receive from PROC_NULL)
_OBJECT = 1  # a lower-case irecv: its message is unpickled
_BUFFER = 2  # an upper-case Irecv: its message is copied into a buffer


class Request:
    """``wait(status)``, ``test(status)``, ``Wait``, ``Test``, ``cancel``,
    ``Cancel``, ``Free``, ``Get_status``; ``Request.waitall(requests)`` and
    friends."""

    __slots__ = ("_comm", "_id", "_kind", "_buf", "_deps", "_value", "_status", "_active")

    def __init__(self, comm, kind: int, ident: int = 0, buf=None, deps: int = -2) -> None:
        self._comm = comm
        self._kind = kind
        self._id = ident
        self._buf = buf
        self._deps = deps
        self._value = None
        self._status = Status()
        self._active = True

    @classmethod
    def _done(cls, comm, status_source: int = PROC_NULL, tag: int = -1) -> Request:
        req = cls(comm, _DONE)
        req._status._set(status_source, tag, 0)
        return req

    def _finish(self, msg) -> None:
        """Takes the received `msg` (a ``_shoal.Message``)."""
        comm = self._comm
        self._active = False
        try:
            if self._kind == _OBJECT:
                payload = msg.payload()
                self._value = loads(payload) if type(payload) is bytes else unpack(*payload)
                nbytes = msg.nbytes
            else:
                nbytes = msg.read_into(self._buf.array, self._buf.code)
        except runtime.Failure as exc:
            raise runtime.failure(exc, WAIT, comm._ctx, msg.src, msg.tag) from None
        self._status._set(comm._comm_rank(msg.src), msg.tag, nbytes)

    def _fill(self, status) -> None:
        if status is not None:
            status._set(self._status.source, self._status.tag, self._status._nbytes)

    def wait(self, status: Status | None = None):
        """Waits for it; a receive's object (None for the others)."""
        if self._active and self._kind != _DONE:
            ep = self._comm._ep
            try:
                _, msg = ep.wait_any([self._id], WAIT, self._deps)
            except runtime.Failure as exc:
                raise runtime.failure(exc, WAIT, self._comm._ctx) from None
            self._finish(msg)
        self._active = False
        self._fill(status)
        value, self._value = self._value, None
        return value

    def Wait(self, status: Status | None = None) -> bool:
        self.wait(status)
        return True

    def test(self, status: Status | None = None) -> tuple[bool, object]:
        """``(True, object)`` if it has completed, else ``(False, None)``."""
        if self._active and self._kind != _DONE:
            try:
                msg = self._comm._ep.test(self._id)
            except runtime.Failure as exc:
                raise runtime.failure(exc, WAIT, self._comm._ctx) from None
            if msg is None:
                return False, None
            self._finish(msg)
        self._active = False
        self._fill(status)
        value, self._value = self._value, None
        return True, value

    def Test(self, status: Status | None = None) -> bool:
        return self.test(status)[0]

    def Get_status(self, status: Status | None = None) -> bool:
        """Whether it has completed (without completing it)."""
        if not self._active or self._kind == _DONE:
            self._fill(status)
            return True
        return False

    def cancel(self) -> None:
        """Withdraws a pending receive (nothing happens to a completed one)."""
        if self._active and self._kind != _DONE and self._comm._ep.cancel(self._id):
            self._active = False
            self._status.cancelled = True
            self._status._set(ANY_SOURCE, -1, 0)

    Cancel = cancel

    def Free(self) -> None:
        self.cancel()

    def __bool__(self) -> bool:
        return self._active

    def __repr__(self) -> str:
        kind = {_DONE: "done", _OBJECT: "irecv", _BUFFER: "Irecv"}[self._kind]
        return f"<shoal MPI.Request {kind}{' pending' if self._active else ''}>"

    # ------------------------------------------------------------ many

    @classmethod
    def waitall(cls, requests, statuses=None) -> list:
        """Waits for every request; their objects, in order."""
        requests = list(requests)
        values = [r.wait() for r in requests]
        _statuses(requests, statuses)
        return values

    @classmethod
    def Waitall(cls, requests, statuses=None) -> bool:
        cls.waitall(requests, statuses)
        return True

    @classmethod
    def waitany(cls, requests, status: Status | None = None) -> tuple[int, object]:
        """Waits for one: ``(index, object)``; ``(UNDEFINED, None)`` if none
        is pending."""
        requests = list(requests)
        for i, r in enumerate(requests):
            if r._kind == _DONE and r._active:
                r._active = False
                r._fill(status)
                return i, None
        pending = [(i, r) for i, r in enumerate(requests) if r._active]  # receives only now
        if not pending:
            from .constants import UNDEFINED

            return UNDEFINED, None
        ep = pending[0][1]._comm._ep
        ids = [r._id for _, r in pending]
        try:
            k, msg = ep.wait_any(ids, WAIT, -2)
        except runtime.Failure as exc:
            raise runtime.failure(exc, WAIT, pending[0][1]._comm._ctx) from None
        i, r = pending[k]
        r._finish(msg)
        r._fill(status)
        value, r._value = r._value, None
        return i, value

    @classmethod
    def Waitany(cls, requests, status: Status | None = None) -> int:
        return cls.waitany(requests, status)[0]

    @classmethod
    def testall(cls, requests, statuses=None) -> tuple[bool, list | None]:
        """``(True, objects)`` if all have completed, else ``(False, None)``;
        completes those that can."""
        requests = list(requests)
        done = [r.Get_status() or r.test()[0] for r in requests]
        if not all(done):
            return False, None
        return True, cls.waitall(requests, statuses)

    @classmethod
    def Testall(cls, requests, statuses=None) -> bool:
        return cls.testall(requests, statuses)[0]

    @classmethod
    def testany(cls, requests, status: Status | None = None) -> tuple[int, bool, object]:
        """``(index, True, object)`` for one that has completed, else
        ``(UNDEFINED, False, None)``."""
        from .constants import UNDEFINED

        for i, r in enumerate(requests):
            if r._active:
                flag, value = r.test(status)
                if flag:
                    return i, True, value
        return UNDEFINED, False, None

    @classmethod
    def Testany(cls, requests, status: Status | None = None) -> tuple[int, bool]:
        i, flag, _ = cls.testany(requests, status)
        return i, flag


def _statuses(requests, statuses) -> None:
    if statuses is None:
        return
    for r, s in zip(requests, statuses, strict=False):
        r._fill(s)
