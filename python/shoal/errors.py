"""shoal's exception hierarchy, rooted at ``ShoalError`` (declared in the
native module so engine errors and these share one base)."""

from __future__ import annotations

from ._shoal import CheckpointError as CheckpointError  # re-exported as shoal.CheckpointError
from ._shoal import ShoalError


class RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of an
    exception re-raised in the parent."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


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
