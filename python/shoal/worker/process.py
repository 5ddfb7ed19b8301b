"""A worker process, started by the engine (see ``shoal.interpreter``).

Functions arrive once per call and are kept until the engine says to forget
them; arguments and results travel pickled, large buffers in shared memory
(``wire.transfer``). What tasks print, and their ``logging`` records, go to
the parent (``worker.output``).
"""

from __future__ import annotations

import sys
from time import perf_counter_ns

# Keep imports light: every worker pays for them at start.
from .. import _shoal
from ..errors import SerializationError, ShoalError
from ..wire import transfer
from ..wire.serialize import dumps_exception, loads, unpicklable_result_error
from ..wire.transfer import pack, unpack
from . import identity
from .loop import Retire, serve
from .output import capture_output, check_log_level, forward_logging

#: Seconds idle after which a worker unmaps the segments it kept between
#: tasks of one call (see ``wire.transfer.keep_recent``).
RELEASE_AFTER = 0.05


def _unpickle(frame):
    return loads(frame.body) if frame.fds is None else unpack(frame.body, frame.fds)


class ProcessSide:
    """How a worker process gets its tasks and answers them: everything is
    pickled."""

    def __init__(self, link, stdout, stderr) -> None:
        self._link = link
        self._answer, self._fail = link.done, link.failed  # bound once: per-task calls
        self._stdout, self._stderr = stdout, stderr
        self._functions: dict[int, tuple | BaseException] = {}
        self._max_memory = 0
        transfer.keep_recent = True

    # --- set-up
    def initialise(self, frame) -> None:
        sys_path, initializer, initargs, max_memory, log_level, workers = _unpickle(frame)
        identity.set_process(frame.slot, workers)
        sys.path[:] = sys_path
        if log_level is not None:
            forward_logging(self._link, log_level)
        self._max_memory = max_memory or 0
        if initializer is not None:
            initializer(*initargs)

    exception_bytes = staticmethod(dumps_exception)

    def add_function(self, frame) -> None:
        try:
            self._functions[frame.fn_id] = _unpickle(frame)
        except BaseException as exc:  # noqa: BLE001 - fails the tasks that use it
            self._functions[frame.fn_id] = exc

    def forget(self, fn_id: int) -> None:
        self._functions.pop(fn_id, None)

    # --- tasks
    # Frames arrived: the logging level is checked once per batch rather
    # than per task (the parent writes it before it sends a call's tasks).
    arrived = staticmethod(check_log_level)

    def load(self, frame):
        """A task's ``(mode, fn, retry_on)`` and its arguments."""
        entry = self._functions.get(frame.fn_id)
        if type(entry) is not tuple:
            if entry is None:
                raise LookupError(f"shoal internal error: unknown function id {frame.fn_id}")
            raise entry  # the function itself failed to unpickle
        fds = frame.fds
        if fds is None:
            if transfer._recent:
                transfer.forget_recent()
            return entry, loads(frame.body)
        return entry, unpack(frame.body, fds)

    def done(self, task_id: int, result, mode: int, deser_ns: int) -> None:
        started = perf_counter_ns()
        try:
            out = pack(result)
        except Exception as why:  # noqa: BLE001 - the result can't travel back
            error = unpicklable_result_error(result, mode, why)
            self._fail(task_id, dumps_exception(error), False, deser_ns)
            return
        try:
            self._answer(task_id, out, deser_ns, perf_counter_ns() - started)
        except ShoalError as why:  # too large for one message
            self._fail(task_id, dumps_exception(SerializationError(str(why))), False, deser_ns)

    def failed(self, task_id: int, exc: BaseException, retryable: bool, deser_ns: int) -> None:
        self._fail(task_id, dumps_exception(exc), retryable, deser_ns)

    def after_task(self, task_id: int) -> None:
        if self._stdout._partial or self._stderr._partial:  # attributes: cheaper than a property
            self._stdout.end_line()
            self._stderr.end_line()
        if self._max_memory and (self._link.rss() or 0) > self._max_memory:
            # Over the limit after this task: leave, and let a fresh worker
            # run the rest of what this one holds.
            raise Retire

    # --- idle
    @staticmethod
    def idle_timeout() -> float | None:
        return RELEASE_AFTER if transfer._recent else None

    @staticmethod
    def idle() -> None:
        transfer.forget_recent()


def main() -> int:
    # SIGINT is already ignored: the engine set it before exec, and Python
    # keeps an inherited SIG_IGN (importing `signal` here would cost ~10 ms).
    try:
        link = _shoal.Link()
    except ShoalError as exc:
        print(
            f"shoal.worker: {exc}. This module is started by shoal's engine, not by hand.",
            file=sys.stderr,
        )
        return 2
    stdout, stderr = capture_output(link)
    try:
        return serve(link, ProcessSide(link, stdout, stderr))
    finally:
        stdout.end_line()
        stderr.end_line()
