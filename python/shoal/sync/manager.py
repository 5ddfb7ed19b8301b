"""``shoal.Manager()``: multiprocessing's ``Manager()`` on shoal.

A Manager is a process of its own (started like ``shoal.Process``: a fresh
interpreter that dies with its parent) holding objects that every process
reaches through proxies:

- ``dict()``, ``list()``, ``Namespace()``, ``Value(typecode, value)`` and
  ``Array(typecode, sequence)`` live in the manager; their proxies send
  each method call there (a few tens of microseconds each) and can be
  passed anywhere, by any pickler: Pool tasks, ``shoal.Process``, queues,
  pipes, other managers' containers. Each call is atomic (the manager runs
  one request at a time), but ``d[k] += 1`` is two calls: hold a lock
  around it.
- ``Lock()``, ``RLock()``, ``Semaphore()``, ``BoundedSemaphore()``,
  ``Condition()``, ``Event()``, ``Barrier()``, ``Queue()`` and
  ``JoinableQueue()`` return shoal's own shared-memory objects: they need
  no manager to work across processes (so no round trip per call), and can
  be stored in the manager's containers.

The objects a manager holds live as long as it does: until ``shutdown()``,
the end of its ``with`` block, the Manager object being collected in the
process that made it, or that process's exit. If the manager's process is
gone, every call raises ``shoal.ManagerError`` at once (never a hang).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import weakref
from collections.abc import MutableMapping, MutableSequence

from .. import _shoal
from ..errors import ManagerError, describe_exit
from ..pool.outcome import RemoteTraceback
from .barrier import Barrier
from .condition import Condition
from .event import Event
from .manager_server import ERR, PROXY, serve
from .pipe import connect_fd
from .primitives import Lock
from .process import Process
from .queue import JoinableQueue, Queue
from .rlock import RLock
from .semaphore import BoundedSemaphore, Semaphore

_RAW = -1
#: Seconds a new connection waits for the manager to let it in.
HANDSHAKE_WAIT = 30.0
#: Seconds ``shutdown()`` waits for the manager to end before killing it.
SHUTDOWN_WAIT = 5.0

#: Managers made by this process, by address: their exit status makes
#: clearer errors.
_owned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
#: This process's connections to managers, one per thread and address.
_local = threading.local()


class _Listening:
    """A listening socket's descriptor, to hand to the manager process."""

    __slots__ = ("fd",)

    def __init__(self, fd) -> None:
        self.fd = fd

    def _shoal_share_(self, attach):
        return (_rebuild_listening, attach(self.fd, _RAW))


def _rebuild_listening(attachments, index: int) -> _Listening:
    return _Listening(attachments[index])


def _gone(address: bytes, why: str = "") -> ManagerError:
    manager = _owned.get(address)
    status = ""
    if manager is not None and manager._process is not None:
        code = manager._process.exitcode
        if code is not None:
            status = " (" + describe_exit(code if code >= 0 else None, -code if code < 0 else None)
            status += ")"
    detail = f": {why}" if why else ""
    return ManagerError(
        f"the shoal Manager process{status} is gone, and the objects it held with it"
        f"{detail}. A Manager lives until shutdown(), the end of its with block, or the "
        "exit of the process that made it."
    )


def _connection(address: bytes, token: bytes):
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    conn = conns.get(address)
    if conn is not None and not conn.closed:
        return conn
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(address)
        conn = connect_fd(sock.fileno())
    except OSError as exc:
        raise _gone(address, f"cannot connect ({exc.strerror or exc})") from None
    finally:
        sock.close()
    try:
        conn.send(token)
        if not conn.poll(HANDSHAKE_WAIT):
            conn.close()
            raise ManagerError(
                f"the shoal Manager at {address!r} did not answer within {HANDSHAKE_WAIT:.0f} s"
            )
        kind, *_ = conn.recv()
    except (EOFError, OSError) as exc:
        raise _gone(address, str(exc)) from None
    if kind == ERR:
        raise ManagerError("the shoal Manager refused this process's connection")
    conns[address] = conn
    return conn


def _request(address: bytes, token: bytes, request: tuple):
    conn = _connection(address, token)
    try:
        conn.send(request)
        reply = conn.recv()
    except (EOFError, BrokenPipeError, ConnectionError):
        conn.close()
        raise _gone(address) from None
    except OSError as exc:
        conn.close()
        raise _gone(address, str(exc)) from None
    kind = reply[0]
    if kind == ERR:
        _, exc, tb = reply
        if tb:
            exc.__cause__ = RemoteTraceback(tb)
        raise exc
    if kind == PROXY:
        _, typeid, obj_id = reply
        return _make_proxy(typeid, address, token, obj_id)
    return reply[1]


class BaseProxy:
    """A reference to an object held by a Manager."""

    __slots__ = ("_typeid", "_address", "_token", "_id", "_manager", "__weakref__")

    def __init__(self, typeid: str, address: bytes, token: bytes, obj_id: int, manager=None):
        object.__setattr__(self, "_typeid", typeid)
        object.__setattr__(self, "_address", address)
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_id", obj_id)
        # The process that made the manager keeps it alive while proxies are.
        object.__setattr__(self, "_manager", manager)

    def _callmethod(self, name: str, args: tuple = (), kwds: dict | None = None):
        """Calls ``name(*args, **kwds)`` on the object in the manager."""
        return _request(self._address, self._token, ("call", self._id, name, args, kwds or {}))

    def _getvalue(self):
        """A copy of the object (multiprocessing's name)."""
        return self._callmethod("copy") if self._typeid in ("dict", "list") else None

    def __reduce__(self):
        return (_make_proxy, (self._typeid, self._address, self._token, self._id))

    def __str__(self) -> str:
        return self._callmethod("__repr__")

    def __repr__(self) -> str:
        return f"<shoal {type(self).__name__} of a manager's {self._typeid} (id {self._id})>"


def _make_proxy(typeid: str, address: bytes, token: bytes, obj_id: int, manager=None):
    if manager is None:
        manager = _owned.get(address)
    return _PROXIES[typeid](typeid, address, token, obj_id, manager)


class DictProxy(BaseProxy, MutableMapping):
    """A manager's dict. Iterating goes over a snapshot of the keys."""

    __slots__ = ()

    def __getitem__(self, key):
        return self._callmethod("__getitem__", (key,))

    def __setitem__(self, key, value) -> None:
        self._callmethod("__setitem__", (key, value))

    def __delitem__(self, key) -> None:
        self._callmethod("__delitem__", (key,))

    def __len__(self) -> int:
        return self._callmethod("__len__")

    def __contains__(self, key) -> bool:
        return self._callmethod("__contains__", (key,))

    def __iter__(self):
        return iter(self._callmethod("keys"))

    def keys(self):
        return list(self._callmethod("keys"))

    def values(self):
        return list(self._callmethod("values"))

    def items(self):
        return list(self._callmethod("items"))

    def get(self, key, default=None):
        return self._callmethod("get", (key, default))

    def pop(self, key, *default):
        return self._callmethod("pop", (key, *default))

    def popitem(self):
        return self._callmethod("popitem")

    def setdefault(self, key, default=None):
        return self._callmethod("setdefault", (key, default))

    def update(self, *args, **kwargs) -> None:
        self._callmethod("update", args, kwargs)

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> dict:
        return self._callmethod("copy")

    def __eq__(self, other) -> bool:
        return self.copy() == (other.copy() if isinstance(other, DictProxy) else other)

    __hash__ = None  # type: ignore[assignment]


class ListProxy(BaseProxy, MutableSequence):
    """A manager's list. Iterating reads one item per call (so it sees
    changes made meanwhile); ``l[:]`` copies it in one call."""

    __slots__ = ()

    def __getitem__(self, index):
        return self._callmethod("__getitem__", (index,))

    def __setitem__(self, index, value) -> None:
        self._callmethod("__setitem__", (index, value))

    def __delitem__(self, index) -> None:
        self._callmethod("__delitem__", (index,))

    def __len__(self) -> int:
        return self._callmethod("__len__")

    def __contains__(self, value) -> bool:
        return self._callmethod("__contains__", (value,))

    def insert(self, index, value) -> None:
        self._callmethod("insert", (index, value))

    def append(self, value) -> None:
        self._callmethod("append", (value,))

    def extend(self, values) -> None:
        self._callmethod("extend", (list(values),))

    def pop(self, index=-1):
        return self._callmethod("pop", (index,))

    def remove(self, value) -> None:
        self._callmethod("remove", (value,))

    def index(self, value, *args) -> int:
        return self._callmethod("index", (value, *args))

    def count(self, value) -> int:
        return self._callmethod("count", (value,))

    def reverse(self) -> None:
        self._callmethod("reverse")

    def sort(self, **kwargs) -> None:
        self._callmethod("sort", (), kwargs)

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> list:
        return self._callmethod("copy")

    def __iadd__(self, values):
        self.extend(values)
        return self

    def __imul__(self, n):
        self._callmethod("__imul__", (n,))
        return self

    def __add__(self, other):
        return self._callmethod("__add__", (list(other),))

    def __mul__(self, n):
        return self._callmethod("__mul__", (n,))

    def __eq__(self, other) -> bool:
        return self.copy() == (other.copy() if isinstance(other, ListProxy) else other)

    __hash__ = None  # type: ignore[assignment]


class NamespaceProxy(BaseProxy):
    """A manager's Namespace: attributes live in the manager (names that
    start with ``_`` stay on this proxy, as in multiprocessing)."""

    __slots__ = ("__dict__",)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _request(self._address, self._token, ("getattr", self._id, name, (), {}))

    def __setattr__(self, name, value) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            _request(self._address, self._token, ("setattr", self._id, name, (value,), {}))

    def __delattr__(self, name) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
        else:
            _request(self._address, self._token, ("delattr", self._id, name, (), {}))


class ValueProxy(BaseProxy):
    """A manager's Value: ``.value``, ``get()``, ``set(value)``. It has no
    lock: ``v.value += 1`` from several processes needs one (a
    ``manager.Lock()``), or use ``shoal.Value``, in shared memory."""

    __slots__ = ()

    def get(self):
        return self._callmethod("get")

    def set(self, value) -> None:
        self._callmethod("set", (value,))

    @property
    def value(self):
        return self.get()

    @value.setter
    def value(self, value) -> None:
        self.set(value)


class ArrayProxy(BaseProxy):
    """A manager's ``array.array``: ``len``, indexing and slicing."""

    __slots__ = ()

    def __len__(self) -> int:
        return self._callmethod("__len__")

    def __getitem__(self, index):
        return self._callmethod("__getitem__", (index,))

    def __setitem__(self, index, value) -> None:
        self._callmethod("__setitem__", (index, value))

    def tolist(self) -> list:
        return self._callmethod("tolist")


_PROXIES = {
    "dict": DictProxy,
    "list": ListProxy,
    "Namespace": NamespaceProxy,
    "Value": ValueProxy,
    "Array": ArrayProxy,
}


class Manager:
    """``Manager()`` starts the manager process at once (as
    ``multiprocessing.Manager()``); ``with shoal.Manager() as m:`` shuts it
    down at the end of the block."""

    def __init__(self) -> None:
        self._token = secrets.token_bytes(32)
        self._address = f"\0shoal-manager-{os.getpid()}-{secrets.token_hex(8)}".encode()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(self._address)
            listener.listen(128)
            listening = _Listening(_shoal.Fd.dup(listener.fileno()))
        finally:
            # Only the manager process keeps it: once that is gone, a
            # connection is refused at once instead of waiting.
            listener.close()
        self._process = Process(
            target=serve, args=(listening, self._token), name="shoal-manager", daemon=True
        )
        self._process.start()
        # The child has its copy; ours (kept by the Process's arguments)
        # must go, or connections would queue up here with nobody to accept.
        listening.fd = None
        _owned[self._address] = self
        self._finalizer = weakref.finalize(self, _stop, self._process, self._address, self._token)

    # -- proxied objects

    def _create(self, typeid: str, *args, **kwargs):
        if not self._finalizer.alive:
            raise ManagerError("this shoal Manager was shut down")
        proxy = _request(self._address, self._token, ("create", 0, typeid, args, kwargs))
        object.__setattr__(proxy, "_manager", self)
        return proxy

    def dict(self, *args, **kwargs) -> DictProxy:  # noqa: A003 - multiprocessing's name
        return self._create("dict", *args, **kwargs)

    def list(self, sequence=()) -> ListProxy:  # noqa: A003 - multiprocessing's name
        return self._create("list", list(sequence))

    def Namespace(self, **kwargs) -> NamespaceProxy:  # noqa: N802 - multiprocessing's name
        return self._create("Namespace", **kwargs)

    def Value(self, typecode, value, lock: bool = True) -> ValueProxy:  # noqa: N802
        """A value held by the manager (any picklable object; no lock, as
        multiprocessing's manager Value)."""
        return self._create("Value", typecode, value)

    def Array(self, typecode: str, sequence, lock: bool = True) -> ArrayProxy:  # noqa: N802
        return self._create("Array", typecode, list(sequence))

    # -- shoal's own shared-memory objects

    Lock = staticmethod(Lock)
    RLock = staticmethod(RLock)
    Semaphore = staticmethod(Semaphore)
    BoundedSemaphore = staticmethod(BoundedSemaphore)
    Condition = staticmethod(Condition)
    Event = staticmethod(Event)
    Barrier = staticmethod(Barrier)
    Queue = staticmethod(Queue)
    JoinableQueue = staticmethod(JoinableQueue)

    # -- the process

    @property
    def address(self) -> bytes:
        return self._address

    def start(self) -> None:
        raise ManagerError("this shoal Manager is already running: Manager() starts it")

    def shutdown(self) -> None:
        """Stops the manager process; its objects are gone."""
        self._finalizer()

    def join(self, timeout: float | None = None) -> None:
        self._process.join(timeout)

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "running" if self._process.is_alive() else "stopped"
        return f"<shoal.Manager pid {self._process.pid} {state}>"


def _stop(process: Process, address: bytes, token: bytes) -> None:
    """Asks the manager to stop; kills it if it does not in time."""
    if process.is_alive():
        try:
            _request(address, token, ("shutdown", 0, "", (), {}))
        except (ManagerError, OSError):
            pass
        process.join(SHUTDOWN_WAIT)
        if process.is_alive():
            process.kill()
            process.join(SHUTDOWN_WAIT)
    conns = getattr(_local, "conns", None)
    if conns is not None:
        conn = conns.pop(address, None)
        if conn is not None:
            conn.close()
