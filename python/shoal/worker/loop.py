"""The loop every worker runs, in a process of its own or on a thread of the
pool's process: take the frames the engine sends, run tasks in the order
they arrive, and answer in batches. Replies are flushed when no more work
is buffered, after a task that ran long enough for a system call to be
cheap beside it, or every few milliseconds, so tiny tasks cost no system
call each while longer ones report promptly (the engine refills a worker's
queue from its answers: a late answer leaves it idle).

What differs between the two kinds of worker -- where a task's function and
arguments come from, where its result goes, how the worker is set up -- is
a ``Side`` (``worker.process.ProcessSide``, ``worker.thread.ThreadSide``).
"""

from __future__ import annotations

from time import perf_counter_ns

from .._shoal import ExitFrame, ForgetFrame, FunctionFrame, InitFrame, TaskFrame
from ..wire.serialize import MODE_MAP, MODE_STARMAP

FLUSH_EVERY_NS = 2_000_000
#: A task that ran this long is answered at once: a flush costs a few
#: microseconds, under 1% of it.
ANSWER_AT_ONCE_NS = 500_000


class Retire(Exception):  # noqa: N818 - a signal to the loop, not an error
    """Raised by a side after a task: the worker leaves now (over its memory
    limit); the engine gives what it holds to a fresh worker."""


def run(mode: int, fn, args):
    """``fn`` on a task's arguments: a chunk of items (``map``), a chunk of
    argument tuples (``starmap``), or ``(args, kwargs)`` (a call)."""
    if mode == MODE_MAP:
        return [fn(x) for x in args]
    if mode == MODE_STARMAP:
        return [fn(*a) for a in args]
    a, kw = args
    return fn(*a, **kw)


def serve(link, side) -> int:
    """Serves ``link`` until the engine says exit or hangs up; returns the
    process exit status a worker process should end with."""
    try:
        return _serve(link, side)
    except EOFError:
        return 0  # the parent is gone, or stopped this worker


def _serve(link, side) -> int:
    begin, flush = link.begin, link.flush
    load, done, failed, after_task = side.load, side.done, side.failed, side.after_task
    last_flush = perf_counter_ns()
    while True:
        frames = link.recv(side.idle_timeout())
        if not frames:
            side.idle()
            continue
        side.arrived()
        for frame in frames:
            kind = type(frame)
            if kind is TaskFrame:
                task_id = frame.task_id
                if not begin(task_id):
                    continue  # withdrawn (cancelled) after it was sent: no answer
                t0 = t1 = perf_counter_ns()
                retry_on = ()
                try:
                    (mode, fn, retry_on), args = load(frame)
                    frame = None  # arguments in shared memory live as long as `args`
                    t1 = perf_counter_ns()
                    result = [fn(x) for x in args] if mode == MODE_MAP else run(mode, fn, args)
                    # A thread worker shares the caller's objects: hold none
                    # of them (a bound method's object) past the task.
                    args = fn = None
                except BaseException as raised:  # noqa: BLE001 - answered to the parent
                    args = fn = None
                    failed(task_id, raised, isinstance(raised, retry_on), t1 - t0)
                else:
                    done(task_id, result, mode, t1 - t0)
                    result = None
                try:
                    after_task(task_id)
                except Retire:
                    link.retire()
                    flush()
                    return 0
                now = perf_counter_ns()
                if now - last_flush > FLUSH_EVERY_NS or now - t0 > ANSWER_AT_ONCE_NS:
                    flush()
                    last_flush = now
            elif kind is FunctionFrame:
                side.add_function(frame)
            elif kind is ForgetFrame:
                side.forget(frame.fn_id)
            elif kind is InitFrame:
                try:
                    side.initialise(frame)
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    link.init_failed(side.exception_bytes(exc))
                    flush()
                    return 1
                link.ready()
                flush()
            elif kind is ExitFrame:
                flush()
                return 0
        flush()
        last_flush = perf_counter_ns()
