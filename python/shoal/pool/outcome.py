"""Turns a ``Completion`` into a value or an exception, in one place for
every kind of result object and every set of workers."""

from __future__ import annotations

import io
import pickle
from concurrent.futures import CancelledError

# multiprocessing's own class: code that looks for it in an exception's
# cause (as CPython's tests do) finds it.
from multiprocessing.pool import RemoteTraceback

from .._shoal import Outcome
from ..errors import (
    SerializationError,
    ShoalError,
    TaskTimeoutError,
    WorkerInitError,
    WorkerLostError,
    WorkerStartError,
    describe_exit,
)
from ..wire.serialize import loads
from ..wire.transfer import loads_payload
from .memory import format_bytes

# Outcomes are singletons: compared by identity, the quickest test there is.
_DONE, _FAILED = Outcome.Done, Outcome.Failed

__all__ = ["RemoteTraceback", "decode", "remote_exception"]


def remote_exception(payload: bytes) -> BaseException:
    """A worker's pickled ``(exception, traceback text)``, as the exception
    with the traceback as its cause."""
    exc, tb = loads(payload)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


def decode(c, what: str, pickled: bool = True) -> tuple[bool, object]:
    """``(True, value)`` or ``(False, exception)`` for completion ``c``.
    ``what`` names the task in messages, e.g. ``"map(f)"``; ``pickled`` is
    False for workers that hand objects over as they are (threads)."""
    outcome = c.outcome
    if outcome is _DONE:
        if not pickled:
            return True, c.payload
        try:
            return True, loads_payload(c.payload)
        # SystemExit too: a result whose rebuilding calls sys.exit must not
        # end the program that asks for it.
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - this task fails, the pool goes on
            return False, _unreadable_result(c.payload, what, exc)
    if outcome is _FAILED:
        if not pickled:
            return False, c.payload
        try:
            return False, remote_exception(c.payload)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the exception did not unpickle
            return False, _unreadable_result(c.payload, f"the exception raised by {what}", exc)
    if outcome == Outcome.Lost:
        if c.pid is None:
            return False, WorkerLostError(
                f"the worker thread running {what} ended unexpectedly; the pool replaced it",
                pid=None,
                exitcode=None,
                signal=None,
            )
        return False, WorkerLostError(
            f"worker process {c.pid} {describe_exit(c.exitcode, c.signal)} while running "
            f"{what}; the pool replaced it (pass retries=N to re-run such tasks)",
            pid=c.pid,
            exitcode=c.exitcode,
            signal=c.signal,
        )
    if outcome == Outcome.OverMemory:
        return False, WorkerLostError(
            f"worker process {c.pid} was killed by shoal while running {what}: its own memory "
            f"({format_bytes(c.rss)} resident, shared memory not counted) went over "
            f"max_memory={format_bytes(c.limit)}; "
            "the pool replaced it (raise max_memory, or use less memory per task)",
            pid=c.pid,
            exitcode=None,
            signal=9,
            reason="memory",
        )
    if outcome == Outcome.TimedOut:
        if not c.started:
            replaced = (
                "so it was abandoned and a new thread took its place"
                if c.pid is None
                else f"so it (pid {c.pid}) was killed and replaced"
            )
            return False, TaskTimeoutError(
                f"{what} did not start within its timeout of {c.timeout:g} s: its worker spent "
                f"that long starting (the pool's initializer) or loading the function, {replaced}"
            )
        if c.pid is None:
            return False, TaskTimeoutError(
                f"{what} ran longer than its timeout of {c.timeout:g} s; a thread cannot be "
                "stopped, so its worker thread was abandoned (it runs on until the function "
                "returns, and its result is dropped) and a new thread took its place"
            )
        return False, TaskTimeoutError(
            f"{what} ran longer than its timeout of {c.timeout:g} s; "
            f"its worker (pid {c.pid}) was killed and replaced"
        )
    if outcome == Outcome.Error:
        return False, ShoalError(f"{what} could not run: {c.payload}")
    if outcome == Outcome.Cancelled:
        return False, CancelledError(f"{what} was cancelled (pool.cancel() or terminate())")
    if outcome == Outcome.InitFailed:
        try:
            cause = remote_exception(c.payload)
        except Exception as exc:  # noqa: BLE001
            cause = exc
        err = WorkerInitError(
            f"the pool's initializer raised {type(cause).__name__}: {cause}; "
            "no task can run in this pool"
        )
        err.__cause__ = cause
        return False, err
    if outcome == Outcome.CannotStart:
        if c.pid is None:
            return False, WorkerStartError(
                "worker threads end before they are ready; see the error printed above"
            )
        return False, WorkerStartError(
            f"worker processes exit before they are ready (the last, pid {c.pid}, "
            f"{describe_exit(c.exitcode, c.signal)}); see its error output above"
        )
    return False, RuntimeError(f"shoal internal error: unknown outcome {outcome!r}")


class _Recorder(pickle.Unpickler):
    """Unpickles as usual, noting each class or function the pickle names."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.named: list[str] = []

    def find_class(self, module: str, name: str):
        self.named.append(f"{module}.{name}")
        return super().find_class(module, name)


def _unreadable_result(payload, what: str, exc: Exception) -> SerializationError:
    """What a result that pickled in the worker but can't be rebuilt here
    failed on: the last class or function its pickle named before the error
    (what ``__reduce__`` told pickle to call) is the likely culprit."""
    culprit = ""
    body = payload if isinstance(payload, bytes) else payload[0]
    recorder = _Recorder(body)
    try:
        recorder.load()
    except (Exception, SystemExit):  # noqa: BLE001 - the failure is known; only names matter
        pass
    if recorder.named:
        culprit = f" while calling {recorder.named[-1]}"
    error = SerializationError(
        f"the result of {what} was pickled by the worker but can't be rebuilt in the parent"
        f"{culprit}: {type(exc).__name__}: {exc} (check the type's __reduce__ or "
        "__setstate__, or return plain data)"
    )
    error.__cause__ = exc
    return error
