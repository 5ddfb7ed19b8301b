"""A ThreadPool's worker: a daemon thread of the parent process that serves
its link as a worker process does (``_worker``), with nothing pickled.

A task's function and arguments are taken from the pool's ``Handoff`` by
task id, and its result or exception is left there for the parent's result
thread; the frames carry only ids. Nothing process-wide is touched:
``sys.stdout``, ``sys.path`` and ``logging`` stay the parent's, so what a
task prints or logs goes where the parent's own output goes.
"""

from __future__ import annotations

import os
import threading
from time import perf_counter_ns

from .. import _shoal
from ..wire.serialize import MODE_MAP, MODE_STARMAP, dumps_exception
from . import identity as _identity

FLUSH_EVERY_NS = 2_000_000


def start(handoff, workers: int, initializer, initargs: tuple, link, slot: int) -> None:
    """The engine's launcher for one worker (``Engine.with_threads``, with
    the first four arguments bound). A daemon thread: one abandoned by a
    timeout or ``terminate()`` never holds up the interpreter's exit."""
    threading.Thread(
        target=serve,
        args=(link, handoff, workers, initializer, initargs),
        name=f"shoal-thread-{slot}",
        daemon=True,
    ).start()


def serve(link, handoff, workers: int, initializer, initargs: tuple) -> None:
    try:
        _serve(link, handoff, workers, initializer, initargs)
    except EOFError:
        pass  # the engine hung up: this thread was stopped (timeout, cancel, terminate)
    finally:
        # A task's exception kept by the caller refers to this frame, and so
        # to the link: hang up now rather than when it is collected.
        link.close()


def _serve(link, handoff, workers: int, initializer, initargs: tuple) -> None:
    tasks, results = handoff.tasks, handoff.results
    begin, done, failed, flush = link.begin, link.done, link.failed, link.flush
    kind_task = _shoal.KIND_TASK
    last_flush = perf_counter_ns()
    while True:
        for kind, a, b, _body, _fds in link.recv():
            if kind == kind_task:
                if not begin(a):
                    continue  # withdrawn (cancelled) after it was sent: no answer
                entry = tasks.get(a)
                if entry is None:
                    failed(a, b"")  # withdrawn (cancelled) after it was sent
                    continue
                (mode, fn, retry_on), args = entry
                try:
                    if mode == MODE_MAP:
                        value = [fn(x) for x in args]
                    elif mode == MODE_STARMAP:
                        value = [fn(*x) for x in args]
                    else:
                        value = fn(*args[0], **args[1])
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    results[a] = exc
                    failed(a, b"", isinstance(exc, retry_on))
                else:
                    results[a] = value
                    done(a, b"")
                if a not in tasks:
                    # The parent gave up on it meanwhile (cancelled, timed
                    # out): nobody will collect the result.
                    results.pop(a, None)
                now = perf_counter_ns()
                if now - last_flush > FLUSH_EVERY_NS:
                    flush()
                    last_flush = now
            elif kind == _shoal.KIND_INIT:
                _identity.set_thread(b, workers)
                handoff.threads[b] = threading.current_thread()
                if not _initialise(link, initializer, initargs):
                    return
            elif kind == _shoal.KIND_EXIT:
                flush()
                return
            # Func and Forget need nothing: functions come with each task.
        flush()
        last_flush = perf_counter_ns()


def _initialise(link, initializer, initargs: tuple) -> bool:
    """Runs the pool's initializer in this thread; False if it raised."""
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        link.send(_shoal.KIND_INIT_FAILED, 0, 0, dumps_exception(exc))
        link.flush()
        return False
    link.send(_shoal.KIND_READY, os.getpid(), 0, b"")
    link.flush()
    return True
