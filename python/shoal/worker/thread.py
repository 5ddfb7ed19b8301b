"""A ThreadPool's worker: a daemon thread of the parent process that serves
its link with the loop a worker process runs (``worker.loop``), with nothing
pickled.

A task's function and arguments are taken from the pool's ``Handoff`` by
task id, and its result or exception is left there for the parent's result
thread; the frames carry only ids. Nothing process-wide is touched:
``sys.stdout``, ``sys.path`` and ``logging`` stay the parent's, so what a
task prints or logs goes where the parent's own output goes.
"""

from __future__ import annotations

import threading

from ..wire.serialize import dumps_exception
from . import identity
from .loop import serve


class ThreadSide:
    """How a worker thread gets its tasks and answers them: by reference,
    through the pool's hand-off table."""

    def __init__(self, link, handoff, workers: int, initializer, initargs: tuple) -> None:
        self._link = link
        self._handoff = handoff
        self._tasks, self._results = handoff.tasks, handoff.results
        self._workers = workers
        self._initializer, self._initargs = initializer, initargs

    def initialise(self, frame) -> None:
        identity.set_thread(frame.slot, self._workers)
        self._handoff.threads[frame.slot] = threading.current_thread()
        if self._initializer is not None:
            self._initializer(*self._initargs)

    exception_bytes = staticmethod(dumps_exception)

    def add_function(self, frame) -> None:
        pass  # functions come with each task, by reference

    def forget(self, fn_id: int) -> None:
        pass

    def load(self, frame):
        entry = self._tasks.get(frame.task_id)
        if entry is None:
            raise _Withdrawn
        return entry

    def done(self, task_id: int, result, mode: int, deser_ns: int) -> None:
        self._results[task_id] = result
        self._link.done(task_id, b"")

    def failed(self, task_id: int, exc: BaseException, retryable: bool, deser_ns: int) -> None:
        if type(exc) is not _Withdrawn:
            self._results[task_id] = exc
        self._link.failed(task_id, b"", retryable)

    def after_task(self, task_id: int) -> None:
        if task_id not in self._tasks:
            # The parent gave up on it meanwhile (cancelled, timed out):
            # nobody will collect the result.
            self._results.pop(task_id, None)

    @staticmethod
    def arrived() -> None:
        pass  # a thread's logging is the parent's own

    @staticmethod
    def idle_timeout() -> None:
        return None

    @staticmethod
    def idle() -> None:
        pass


class _Withdrawn(Exception):  # noqa: N818 - not an error: the task was cancelled
    """The task was withdrawn (cancelled) after it was sent."""


def start(handoff, workers: int, initializer, initargs: tuple, name: str, link, slot: int) -> None:
    """The engine's launcher for one worker (``Engine.with_threads``, with
    the first five arguments bound); the thread is called ``{name}{slot}``.
    A daemon thread: one abandoned by a timeout or ``terminate()`` never
    holds up the interpreter's exit."""
    side = ThreadSide(link, handoff, workers, initializer, initargs)
    threading.Thread(target=_serve, args=(link, side), name=f"{name}{slot}", daemon=True).start()


def _serve(link, side: ThreadSide) -> None:
    try:
        serve(link, side)
    finally:
        # A task's exception kept by the caller refers to this frame, and so
        # to the link: hang up now rather than when it is collected.
        link.close()
