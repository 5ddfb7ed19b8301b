"""The worker process: ``python -m shoal.worker``, started by the engine.

It runs tasks in the order they arrive and answers in batches: replies are
flushed when no more work is buffered or every few milliseconds, so tiny
tasks cost no system call each while long tasks report promptly. Its
``print`` output and ``logging`` records go to the parent (``_output``).
"""

from __future__ import annotations

import os
import sys
from time import perf_counter_ns

from .. import _shoal
from ..wire import transfer as _transfer
from ..wire.serialize import (
    MODE_MAP,
    MODE_STARMAP,
    dumps_exception,
    loads,
    unpicklable_result_error,
)
from ..wire.transfer import pack, unpack

# Keep imports light: every worker pays for them at start.
from . import identity as _identity
from .output import capture_output, check_log_level, forward_logging

FLUSH_EVERY_NS = 2_000_000
#: Seconds idle after which a worker unmaps the segments it kept between
#: tasks of one call (see ``_transfer.keep_recent``).
RELEASE_AFTER = 0.05


def _run(mode: int, fn, args):
    if mode == MODE_STARMAP:
        return [fn(*a) for a in args]
    a, kw = args
    return fn(*a, **kw)


def _initialise(link, slot: int, body: bytes, fds) -> int | None:
    """Runs the pool's set-up; returns the memory limit (0 for none), or
    None if the initializer raised."""
    try:
        init = loads(body) if fds is None else unpack(body, fds)
        sys_path, initializer, initargs, max_memory, log_level, workers = init
        _identity.set_process(slot, workers)
        sys.path[:] = sys_path
        if log_level is not None:
            forward_logging(link, log_level)  # a ParentLogLevel
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        link.send(_shoal.KIND_INIT_FAILED, 0, 0, dumps_exception(exc))
        link.flush()
        return None
    link.send(_shoal.KIND_READY, os.getpid(), 0, b"")
    link.flush()
    return max_memory or 0


def serve(link, stdout, stderr) -> int:
    functions: dict[int, tuple[int, object, tuple] | BaseException] = {}
    begin, done, failed = link.begin, link.done, link.failed
    kind_task = _shoal.KIND_TASK
    max_memory = 0
    last_flush = perf_counter_ns()
    _transfer.keep_recent = True
    while True:
        try:
            frames = link.recv(RELEASE_AFTER if _transfer._recent else None)
        except EOFError:
            return 0  # the parent is gone
        if not frames:
            _transfer.forget_recent()
            continue
        for kind, a, b, body, fds in frames:
            if kind == kind_task:
                entry = functions.get(b)
                begin(a)
                check_log_level()  # the parent's logging level, as of its latest call
                t0 = t1 = perf_counter_ns()
                try:
                    mode, fn, _retry_on = entry  # TypeError if unknown or failed to load
                    # Arguments in shared memory come with descriptors.
                    if fds is None:
                        if _transfer._recent:
                            _transfer.forget_recent()
                        args = loads(body)
                    else:
                        args = unpack(body, fds)
                    fds = body = None  # the mappings live only as long as the arguments
                    t1 = perf_counter_ns()
                    if mode == MODE_MAP:  # the common case, without a call
                        result = [fn(x) for x in args]
                    else:
                        result = _run(mode, fn, args)
                    args = None
                except BaseException as raised:  # noqa: BLE001 - sent to the parent
                    error = raised
                    if entry is None:
                        error = LookupError(f"shoal internal error: unknown function id {b}")
                    elif isinstance(entry, BaseException):
                        error = entry  # the function itself failed to unpickle
                    retryable = isinstance(entry, tuple) and isinstance(error, entry[2])
                    args = None
                    failed(a, dumps_exception(error), retryable, t1 - t0)
                else:
                    t2 = perf_counter_ns()
                    try:
                        out = pack(result)
                    except Exception as why:  # noqa: BLE001
                        error = unpicklable_result_error(result, mode, why)
                        failed(a, dumps_exception(error), False, t1 - t0)
                    else:
                        done(a, out, t1 - t0, perf_counter_ns() - t2)
                    result = out = None
                if stdout._partial or stderr._partial:  # attributes: cheaper than a property
                    stdout.end_line()
                    stderr.end_line()
                if max_memory and (link.rss() or 0) > max_memory:
                    # Over the limit after this task: leave, and let a fresh
                    # worker run the rest of what this one holds.
                    link.send(_shoal.KIND_RETIRE, 0, 0, b"")
                    link.flush()
                    return 0
                now = perf_counter_ns()
                if now - last_flush > FLUSH_EVERY_NS:
                    link.flush()
                    last_flush = now
            elif kind == _shoal.KIND_FUNC:
                try:
                    functions[a] = loads(body) if fds is None else unpack(body, fds)
                except BaseException as exc:  # noqa: BLE001 - fails its tasks
                    functions[a] = exc
            elif kind == _shoal.KIND_FORGET:
                functions.pop(a, None)
            elif kind == _shoal.KIND_INIT:
                max_memory = _initialise(link, b, body, fds)
                if max_memory is None:
                    return 1
            elif kind == _shoal.KIND_EXIT:
                link.flush()
                return 0
        link.flush()
        last_flush = perf_counter_ns()


def main() -> int:
    # SIGINT is already ignored: the engine set it before exec, and Python
    # keeps an inherited SIG_IGN (importing `signal` here would cost ~10 ms).
    try:
        link = _shoal.Link()
    except _shoal.ShoalError as exc:
        print(
            f"shoal.worker: {exc}. This module is started by shoal's engine, not by hand.",
            file=sys.stderr,
        )
        return 2
    stdout, stderr = capture_output(link)
    try:
        return serve(link, stdout, stderr)
    finally:
        stdout.end_line()
        stderr.end_line()
