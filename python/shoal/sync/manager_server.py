"""The process behind a ``shoal.Manager``: holds the objects its proxies
stand for (dicts, lists, Namespaces, Values, Arrays) and runs the methods
the proxies call, one request at a time, so every single call is atomic.

It is started like a ``shoal.Process`` (a fresh interpreter that the kernel
kills when its parent dies) with a listening ``SOCK_SEQPACKET`` socket in
the abstract namespace (nothing on disk, gone when the process is). Each
client process connects once per thread, proves it knows the manager's
token, then sends ``(op, object id, name, args, kwargs)`` and gets
``("ok", value)``, ``("proxy", typeid, id)`` or ``("err", exception,
traceback text)``. Requests and replies travel as shoal's queues do, so
large arrays go through shared memory and shoal's Locks, Queues and Values
can be stored in a Manager's containers.
"""

from __future__ import annotations

import array
import hmac
import os
import selectors
import socket
import struct
import sys
import traceback

from ..errors import ManagerError
from .pipe import connect_fd

#: Reply kinds.
OK, PROXY, ERR = "ok", "proxy", "err"


class Namespace:
    """What ``Manager().Namespace()`` holds: attributes."""

    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"Namespace({items})"


class Value:
    """What ``Manager().Value(typecode, value)`` holds (any object, as
    multiprocessing's manager Value)."""

    def __init__(self, typecode, value) -> None:
        self._typecode = typecode
        self._value = value

    def get(self):
        return self._value

    def set(self, value) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"


def _make_array(typecode, sequence):
    return array.array(typecode, sequence)


#: What each typeid makes.
FACTORIES = {
    "dict": dict,
    "list": list,
    "Namespace": Namespace,
    "Value": Value,
    "Array": _make_array,
}


class Server:
    def __init__(self, listener: socket.socket, token: bytes) -> None:
        self._listener = listener
        self._token = token
        self._objects: dict[int, object] = {}
        self._next_id = 1
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._running = True

    def serve(self) -> None:
        while self._running:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._accept()
                else:
                    self._serve_one(key.data)

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        with sock:
            # Only processes of this user may ask; the token says which
            # manager they mean.
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                return
            conn = connect_fd(sock.fileno())
        self._selector.register(conn.fileno(), selectors.EVENT_READ, _Client(conn))

    def _drop(self, client: _Client) -> None:
        self._selector.unregister(client.conn.fileno())
        client.conn.close()

    def _serve_one(self, client: _Client) -> None:
        try:
            request = client.conn.recv()
        except (EOFError, OSError):
            self._drop(client)
            return
        except Exception as exc:  # noqa: BLE001 - a request that cannot be unpickled
            self._reply(client, (ERR, exc, traceback.format_exc()))
            return
        if not client.trusted:
            if isinstance(request, bytes) and hmac.compare_digest(request, self._token):
                client.trusted = True
                self._reply(client, (OK, os.getpid()))
            else:
                self._drop(client)
            return
        try:
            reply = self._handle(*request)
        except BaseException as exc:  # noqa: BLE001 - the caller's error, sent back
            reply = (ERR, exc, traceback.format_exc())
        self._reply(client, reply)

    def _reply(self, client: _Client, reply) -> None:
        try:
            client.conn.send(reply)
        except (BrokenPipeError, OSError):
            self._drop(client)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be pickled
            why = ManagerError(
                f"the result of the call could not be sent back: {type(exc).__name__}: {exc}"
            )
            try:
                client.conn.send((ERR, why, ""))
            except Exception:  # noqa: BLE001
                self._drop(client)

    def _handle(self, op: str, obj_id: int, name: str, args: tuple, kwargs: dict):
        if op == "call":
            obj = self._objects.get(obj_id)
            if obj is None:
                raise ManagerError(f"the manager holds no object {obj_id}")
            if name.startswith("_") and name not in _DUNDERS:
                raise AttributeError(f"{name!r} cannot be called through a proxy")
            result = getattr(obj, name)(*args, **kwargs)
            # In-place operators return the object itself: not sent back.
            return (OK, None if result is obj else result)
        if op == "getattr":
            return (OK, getattr(self._objects[obj_id], name))
        if op == "setattr":
            setattr(self._objects[obj_id], name, args[0])
            return (OK, None)
        if op == "delattr":
            delattr(self._objects[obj_id], name)
            return (OK, None)
        if op == "create":
            factory = FACTORIES.get(name)
            if factory is None:
                raise ManagerError(f"a shoal Manager makes no {name!r}")
            new_id = self._next_id
            self._next_id += 1
            self._objects[new_id] = factory(*args, **kwargs)
            return (PROXY, name, new_id)
        if op == "shutdown":
            self._running = False
            return (OK, None)
        raise ManagerError(f"unknown request {op!r}")


#: Special methods a proxy may call on its object.
_DUNDERS = frozenset(
    {
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__len__",
        "__contains__",
        "__iadd__",
        "__imul__",
        "__add__",
        "__mul__",
        "__rmul__",
        "__reversed__",
        "__repr__",
        "__str__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
    }
)


class _Client:
    __slots__ = ("conn", "trusted")

    def __init__(self, conn) -> None:
        self.conn = conn
        self.trusted = False


def serve(listening, token: bytes) -> None:
    """The Manager process's target: serves until told to shut down."""
    listener = socket.socket(fileno=os.dup(listening.fd.fileno()))
    del listening
    listener.setblocking(False)
    try:
        Server(listener, token).serve()
    finally:
        listener.close()
        sys.stdout.flush()
