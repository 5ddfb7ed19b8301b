"""Turns an engine completion ``(code, payload)`` into a value or an
exception, in one place for every kind of result object."""

from __future__ import annotations

from concurrent.futures import CancelledError

from .. import _shoal
from ..errors import (
    RemoteTraceback,
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

_DONE = _shoal.OUTCOME_DONE
_FAILED = _shoal.OUTCOME_FAILED

#: A thread worker's answers: the payload is the value itself, or the
#: exception itself (nothing was pickled; see ``_threadpool``).
VALUE = -1
RAISED = -2


def _remote_exception(payload: bytes) -> BaseException:
    exc, tb = loads(payload)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


def decode(code: int, payload, what: str) -> tuple[bool, object]:
    """``(True, value)`` or ``(False, exception)``. ``what`` names the task
    in messages, e.g. ``"items 0-99 of map(f)"``."""
    if code == _DONE:
        return True, loads_payload(payload)
    if code == VALUE:
        return True, payload
    if code == RAISED:
        return False, payload
    if code == _FAILED:
        try:
            return False, _remote_exception(payload)
        except Exception as exc:  # noqa: BLE001 - the exception itself did not unpickle
            return False, exc
    if code == _shoal.OUTCOME_LOST:
        pid, exitcode, signum = payload
        if pid is None:
            return False, WorkerLostError(
                f"the worker thread running {what} ended unexpectedly; the pool replaced it",
                pid=None,
                exitcode=None,
                signal=None,
            )
        how = describe_exit(exitcode, signum)
        return False, WorkerLostError(
            f"worker process {pid} {how} while running {what}; "
            "the pool replaced it (pass retries=N to re-run such tasks)",
            pid=pid,
            exitcode=exitcode,
            signal=signum,
        )
    if code == _shoal.OUTCOME_OVER_MEMORY:
        pid, rss, limit = payload
        return False, WorkerLostError(
            f"worker process {pid} was killed by shoal while running {what}: its own memory "
            f"({format_bytes(rss)} resident, shared memory not counted) went over "
            f"max_memory={format_bytes(limit)}; "
            "the pool replaced it (raise max_memory, or use less memory per task)",
            pid=pid,
            exitcode=None,
            signal=9,
            reason="memory",
        )
    if code == _shoal.OUTCOME_TIMED_OUT:
        pid, seconds, started = payload
        if not started:
            replaced = (
                "so it was abandoned and a new thread took its place"
                if pid is None
                else f"so it (pid {pid}) was killed and replaced"
            )
            return False, TaskTimeoutError(
                f"{what} did not start within its timeout of {seconds:g} s: its worker spent "
                f"that long starting (the pool's initializer) or loading the function, {replaced}"
            )
        if pid is None:
            return False, TaskTimeoutError(
                f"{what} ran longer than its timeout of {seconds:g} s; a thread cannot be "
                "stopped, so its worker thread was abandoned (it runs on until the function "
                "returns, and its result is dropped) and a new thread took its place"
            )
        return False, TaskTimeoutError(
            f"{what} ran longer than its timeout of {seconds:g} s; "
            f"its worker (pid {pid}) was killed and replaced"
        )
    if code == _shoal.OUTCOME_ERROR:
        return False, ShoalError(f"{what} could not run: {payload}")
    if code == _shoal.OUTCOME_CANCELLED:
        return False, CancelledError(f"{what} was cancelled (pool.cancel() or terminate())")
    if code == _shoal.OUTCOME_INIT_FAILED:
        try:
            cause = _remote_exception(payload)
        except Exception as exc:  # noqa: BLE001
            cause = exc
        err = WorkerInitError(
            f"the pool's initializer raised {type(cause).__name__}: {cause}; "
            "no task can run in this pool"
        )
        err.__cause__ = cause
        return False, err
    if code == _shoal.OUTCOME_CANNOT_START:
        pid, exitcode, signum = payload
        if pid is None:
            return False, WorkerStartError(
                "worker threads end before they are ready; see the error printed above"
            )
        return False, WorkerStartError(
            f"worker processes exit before they are ready (the last, pid {pid}, "
            f"{describe_exit(exitcode, signum)}); see its error output above"
        )
    return False, RuntimeError(f"shoal internal error: unknown outcome code {code}")
