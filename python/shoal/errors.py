"""shoal's exception hierarchy, in one place: every error shoal raises for its
own reasons is a ``ShoalError``. The engine's binding raises these classes
too (it looks them up here).

The executors' errors (``ExecutorWorkerLostError``, ``ExecutorInitError``,
``ExecutorStartError``) are also ``concurrent.futures``' own classes, so
code written for the standard executors catches them. They are defined on
first use: ``concurrent.futures`` would cost every worker 25 ms to import.
"""

from __future__ import annotations

import _thread  # threading's builtin core: free to import, unlike threading


class ShoalError(Exception):
    """Base class of every error shoal raises for its own reasons."""


class CheckpointError(ShoalError):
    """A checkpoint store could not be used: not a store, a newer format,
    damaged, unwritable, or not safe to load."""


class CheckpointKeyWarning(UserWarning):
    """A checkpointed function reads something its checkpoint key can't see
    (a global that is not plain data), so a stored result could be reused
    after it changed."""


class MissingDependencyError(ShoalError, ImportError):
    """An optional dependency is not installed; the message names the extra
    that installs it (``pip install "shoal[data]"``)."""


class QueueClosed(ValueError):
    """The queue was closed: no more puts, and every item has been taken."""


class SerializationError(ShoalError):
    """An argument, result or exception could not be pickled."""


class WorkerLostError(ShoalError):
    """The worker process running a task died (killed, crashed, exited).

    ``reason`` is ``"memory"`` when shoal killed it for going over
    ``max_memory``, else ``"died"``. ``pid`` is None for a thread worker."""

    def __init__(
        self,
        message: str,
        *,
        pid: int | None,
        exitcode: int | None,
        signal: int | None,
        reason: str = "died",
    ):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal
        self.reason = reason

    def __reduce__(self):
        return (_rebuild_lost, (str(self), self.pid, self.exitcode, self.signal, self.reason))


def _rebuild_lost(message, pid, exitcode, signal, reason="died"):
    return WorkerLostError(message, pid=pid, exitcode=exitcode, signal=signal, reason=reason)


class TaskTimeoutError(ShoalError, TimeoutError):  # the builtin TimeoutError
    """A task ran longer than its ``timeout``; its worker was replaced."""


class WorkerInitError(ShoalError):
    """The pool's ``initializer`` raised; the pool cannot run tasks."""


class WorkerStartError(ShoalError):
    """Worker processes exit before they are ready."""


class ManagerError(ShoalError):
    """A ``shoal.Manager``'s process is gone (shut down, killed, or its
    parent ended), so the objects it held are gone too; or it refused a
    request."""


def _executor_errors() -> dict[str, type]:
    """The executors' error classes, each a shoal error that is also the
    standard library's class for the same event."""
    from concurrent.futures.process import BrokenProcessPool
    from concurrent.futures.thread import BrokenThreadPool

    class ExecutorWorkerLostError(WorkerLostError, BrokenProcessPool):
        """A ``shoal.ProcessPoolExecutor``'s worker died while running the
        task: a ``WorkerLostError`` that is also ``BrokenProcessPool``, so
        code written for the standard executor catches it. Unlike there,
        only this task failed: the executor replaced the worker and goes on."""

        def __reduce__(self):
            return (_rebuild_executor_lost, (str(self), self.pid, self.exitcode, self.signal,
                                             self.reason))  # fmt: skip

    class ExecutorInitError(WorkerInitError, BrokenProcessPool, BrokenThreadPool):
        """An executor's ``initializer`` raised: the executor is broken (every
        pending task fails, and ``submit`` raises this), as the standard
        executors' ``BrokenProcessPool``/``BrokenThreadPool`` say."""

    class ExecutorStartError(WorkerStartError, BrokenProcessPool, BrokenThreadPool):
        """An executor's workers exit before they are ready: it is broken."""

    classes = {
        cls.__name__: cls
        for cls in (ExecutorWorkerLostError, ExecutorInitError, ExecutorStartError)
    }
    for cls in classes.values():
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return classes


_LAZY = ("ExecutorWorkerLostError", "ExecutorInitError", "ExecutorStartError")
_lazy_lock = _thread.allocate_lock()


def __getattr__(name: str) -> type:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lazy_lock:  # defined once: two threads must not make two classes
        if name not in globals():
            globals().update(_executor_errors())
    return globals()[name]


def _rebuild_executor_lost(message, pid, exitcode, signal, reason):
    cls = __getattr__("ExecutorWorkerLostError")
    return cls(message, pid=pid, exitcode=exitcode, signal=signal, reason=reason)


def describe_exit(exitcode: int | None, signum: int | None) -> str:
    """'killed by SIGKILL' / 'exited with code 3'."""
    if signum is not None:
        import signal

        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"killed by {name}"
    if exitcode is not None:
        return f"exited with code {exitcode}"
    return "ended for an unknown reason"


class RankLostError(ShoalError):
    """A rank this rank was waiting for ended (crashed, was killed, or
    exited) under ``shoal run``: what it waited for can never come.

    ``rank`` is the rank that ended (in ``MPI.COMM_WORLD``), ``exitcode``
    its exit code (None if killed by a signal), ``signal`` the signal that
    killed it (None if it exited)."""

    def __init__(self, message: str, *, rank: int, exitcode: int | None, signal: int | None):
        super().__init__(message)
        self.rank = rank
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self):
        return (_rebuild_rank_lost, (str(self), self.rank, self.exitcode, self.signal))


def _rebuild_rank_lost(message, rank, exitcode, signal):
    return RankLostError(message, rank=rank, exitcode=exitcode, signal=signal)


class DeadlockError(ShoalError):
    """Every rank still running waits for another, with nothing in flight
    that could wake any of them. The message shows which rank waits for
    which, in which call, at which line; ``waits`` has one line per rank."""

    def __init__(self, message: str, waits: tuple[str, ...] = ()):
        super().__init__(message)
        self.waits = tuple(waits)

    def __reduce__(self):
        return (DeadlockError, (str(self), self.waits))


class CollectiveMismatchError(ShoalError):
    """Ranks of one communicator called different collectives (or the same
    one with different roots) at the same point of their programs."""
