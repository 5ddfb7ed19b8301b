"""``shoal.Process``: ``multiprocessing.Process``'s API on shoal's engine.

The child is a fresh interpreter (``shoal.sync.child``, see
``shoal.interpreter``) started like a pool worker: it gets the parent's ``sys.path``, and the
kernel kills it if the parent dies (so none is ever orphaned). Its target
and arguments are pickled as Pool tasks are: lambdas and ``__main__``
functions by value, large arrays through shared memory, shared arrays,
Locks, Values and Queues as handles.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import sys

from .. import _shoal, interpreter
from ..wire.transfer import pack

_counter = itertools.count(1)
#: Started and not yet reaped: joined (or, if daemonic, terminated) at exit.
_children: set = set()


def _reap_finished() -> None:
    """Forgets children that have ended (reaping them), as multiprocessing
    does on each start."""
    for p in list(_children):
        if p._child is not None and p._child.poll() is not None:
            _children.discard(p)


class Process:
    """``Process(target=f, args=(...), kwargs={...}, name=None,
    daemon=None)``; ``start()``, ``join(timeout)``, ``is_alive()``,
    ``exitcode`` (0 when the target returned, 1 when it raised, the code
    of ``sys.exit(n)``, ``-N`` when killed by signal N), ``pid``,
    ``terminate()``, ``kill()``. Subclasses may override ``run()``."""

    def __init__(
        self,
        group=None,
        target=None,
        name: str | None = None,
        args=(),
        kwargs=None,
        *,
        daemon: bool | None = None,
    ) -> None:
        if group is not None:
            raise ValueError("group must be None (it is reserved, as in multiprocessing)")
        if target is not None and not callable(target):
            raise TypeError(f"target must be callable, got {target!r}")
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.name = name if name is not None else f"Process-{next(_counter)}"
        self.daemon = bool(daemon)
        self._child = None
        self._closed = False

    def run(self) -> None:
        """What the child runs: the target, by default."""
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        self._check_open()
        if self._child is not None:
            raise RuntimeError(f"{self.name} was already started; a process starts once")
        if type(self).run is Process.run:
            work = (self.name, self._target, self._args, self._kwargs)
        else:  # a subclass: send it whole, and call its run()
            work = (self.name, self.run, (), {})
        _reap_finished()
        packed = pack(work)
        body, fds = (packed, ()) if type(packed) is bytes else packed
        args = interpreter.command("shoal.sync.child")
        self._child = _shoal.Child(sys.executable, args, [], body, fds)
        _children.add(self)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.name} is closed")

    def _check_started(self, what: str):
        self._check_open()
        if self._child is None:
            raise ValueError(f"can only {what} a started process; call start() first")
        return self._child

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    ident = pid

    @property
    def exitcode(self) -> int | None:
        return None if self._child is None else self._child.poll()

    def is_alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Waits for the child to end, at most ``timeout`` seconds."""
        if timeout is not None and timeout < 0:
            timeout = 0
        if self._check_started("join").wait(timeout) is not None:
            _children.discard(self)

    def terminate(self) -> None:
        """SIGTERM."""
        self._check_started("terminate").signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self._check_started("kill").signal(signal.SIGKILL)

    def close(self) -> None:
        """Releases the handle on a finished process."""
        if self.is_alive():
            raise ValueError(f"cannot close {self.name}: it is still running")
        if self._child is not None:
            self._child.wait(0)  # reaps it (it has ended)
        _children.discard(self)
        self._child = None
        self._closed = True

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_child"] = None  # the handle stays with the parent
        return state

    def __repr__(self) -> str:
        if self._closed:
            status = "closed"
        elif self._child is None:
            status = "initial"
        else:
            code = self.exitcode
            status = "started" if code is None else f"stopped exitcode={code}"
        daemon = " daemon" if self.daemon else ""
        return f"<shoal.Process name={self.name!r} {status}{daemon}>"


def _at_exit() -> None:
    # As multiprocessing: daemonic children are terminated, the others
    # waited for.
    children = list(_children)
    for p in children:
        if p.daemon and p.is_alive():
            p.terminate()
    for p in children:
        if p._child is not None:
            p._child.wait(None)


atexit.register(_at_exit)
# A child made by os.fork() did not start these processes: it neither waits
# for them nor terminates them at its exit.
os.register_at_fork(after_in_child=_children.clear)
