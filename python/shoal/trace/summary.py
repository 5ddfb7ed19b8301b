"""The numbers behind a trace report: where the workers' time went.

Worker time is ``workers x wall`` worker-seconds. Each worker slot's share is
busy (a task ran on it: the function, unpickling its arguments, pickling
its result), hand-over, or idle (before its first task, between tasks,
after its last task). Hand-over is the gap between a worker's tasks that is
not waiting for work: from the later of the previous task's end and the next
task's hand-over to the engine, to the next task's start (the result going
back, the next task coming in, the worker's loop around them). The rest of a
gap, waiting for the parent to hand over the next task, is idle. Speed-up is
the summed run time of the function over the wall time: how much faster than
running every task one after the other in one process, pool start-up
included.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trace import CallRecord, TaskRecord, Trace


@dataclass(frozen=True)
class Interval:
    """When a task occupied its worker slot (seconds from the pool's start)."""

    start: float
    end: float
    task: TaskRecord


@dataclass(frozen=True)
class WorkerUse:
    """One worker slot over the whole trace (a replacement keeps the slot)."""

    worker: int
    pids: tuple[int, ...]
    tasks: int
    busy: float  # union of its tasks' start..end
    utilisation: float  # busy / wall
    run: float
    deser: float
    result_ser: float
    handover: float  # gaps between tasks spent handing work over (see the module)
    before_first: float  # idle before its first task (start-up, or no work yet)
    between: float  # idle between tasks (no work handed over yet)
    after_last: float  # idle after its last task (others still working, or done)
    cpu: float | None  # CPU seconds of its processes; None if not recorded


@dataclass(frozen=True)
class TimeBreakdown:
    """Worker-seconds by what they were spent on; they add up to workers x wall
    (up to clock rounding between parent and worker)."""

    run: float
    deser: float
    result_ser: float
    other: float  # hand-over: transport, framing, bookkeeping around the tasks
    before_first: float
    between: float
    after_last: float
    parent_ser: float  # not worker time: the parent pickling arguments


@dataclass(frozen=True)
class CallStats:
    """One call's tasks."""

    call: CallRecord
    ran: int  # tasks with a start, end and run time
    run_total: float
    median_run: float | None
    max_run: float | None
    items_per_task: float  # median
    handoff: float | None  # median per-task cost besides the function itself
    # (parent pickling, hand-over, worker unpickling and result pickling)
    workers_used: int
    window: float  # its first task's start to its last task's end
    idle_at_end: float  # share of workers x window idle after a worker's last task


@dataclass(frozen=True)
class TraceSummary:
    wall: float
    workers: int
    kind: str
    tasks: int
    outcomes: dict[str, int]
    run_total: float  # summed run time of the function
    speedup: float  # run_total / wall
    efficiency: float  # speedup / workers
    utilisation: float  # busy worker-seconds / (workers x wall)
    imbalance: float  # busiest worker's busy time over the mean, minus 1
    median_run: float | None
    mean_run: float | None
    bytes_in: int
    bytes_out: int
    cpu_total: float | None
    time: TimeBreakdown
    lanes: tuple[WorkerUse, ...]
    calls: tuple[CallStats, ...]


def summarize(trace: Trace) -> TraceSummary:
    wall = horizon(trace)
    by_slot = lanes(trace, wall)
    handover = {}
    for intervals in by_slot.values():
        handover.update(handover_gaps(intervals))
    uses = tuple(
        _worker_use(trace, slot, by_slot[slot], wall, handover) for slot in sorted(by_slot)
    )
    runs = [t.run for t in trace.tasks if t.run is not None]
    run_total = sum(runs)
    busy = [use.busy for use in uses]
    mean_busy = sum(busy) / len(busy)
    speedup = run_total / wall if wall > 0 else 0.0
    cpus = [w.cpu for w in trace.workers if w.cpu is not None]
    return TraceSummary(
        wall=wall,
        workers=trace.pool.workers,
        kind=trace.pool.kind,
        tasks=len(trace.tasks),
        outcomes=dict(Counter(t.outcome for t in trace.tasks)),
        run_total=run_total,
        speedup=speedup,
        efficiency=speedup / trace.pool.workers,
        utilisation=sum(busy) / (len(busy) * wall) if wall > 0 else 0.0,
        imbalance=max(busy) / mean_busy - 1 if mean_busy > 0 else 0.0,
        median_run=statistics.median(runs) if runs else None,
        mean_run=run_total / len(runs) if runs else None,
        bytes_in=sum(t.bytes_in for t in trace.tasks),
        bytes_out=sum(t.bytes_out or 0 for t in trace.tasks),
        cpu_total=sum(cpus) if cpus else None,
        time=_breakdown(trace, uses),
        lanes=uses,
        calls=_all_call_stats(trace, by_slot, handover),
    )


def horizon(trace: Trace) -> float:
    """The trace's wall time, stretched to cover every recorded moment."""
    moments = [trace.wall]
    moments += [t.end or t.start or 0.0 for t in trace.tasks]
    moments += [c.end or c.start for c in trace.calls]
    return max(moments)


def lanes(trace: Trace, wall: float) -> dict[int, list[Interval]]:
    """Each worker slot's tasks as intervals, by start. A task that started
    but has no end (lost with its worker) lasts until the slot's next task
    or the end of the trace; tasks that never started are not on a lane."""
    started: dict[int, list[tuple[float, TaskRecord]]] = {s: [] for s in range(trace.pool.workers)}
    for task in trace.tasks:
        if task.worker is not None and task.start is not None:
            started[task.worker].append((task.start, task))
    result = {}
    for slot, tasks in started.items():
        tasks.sort(key=lambda pair: pair[0])
        intervals = []
        for i, (start, task) in enumerate(tasks):
            end = task.end
            if end is None:
                end = tasks[i + 1][0] if i + 1 < len(tasks) else wall
            intervals.append(Interval(start, max(start, min(end, wall)), task))
        result[slot] = intervals
    return result


def handover_gaps(intervals: list[Interval]) -> dict[int, float]:
    """Task id -> the hand-over time just before it on its lane: the gap
    from the later of the previous task's end and this task's hand-over
    to the engine, to its start. (A lane's first task has none: what comes
    before it is start-up.)"""
    gaps = {}
    for previous, task in zip(intervals, intervals[1:], strict=False):
        ready = max(previous.end, task.task.queued)
        gaps[task.task.id] = max(0.0, task.start - ready)
    return gaps


def _worker_use(
    trace: Trace, slot: int, intervals: list[Interval], wall: float, handover: dict[int, float]
) -> WorkerUse:
    records = [w for w in trace.workers if w.worker == slot]
    pids = {w.pid for w in records} or {iv.task.pid for iv in intervals if iv.task.pid is not None}
    cpu = [w.cpu for w in records if w.cpu is not None]
    busy = _union_length(intervals)
    before = intervals[0].start if intervals else 0.0
    after = wall - max(iv.end for iv in intervals) if intervals else wall
    handed = sum(handover.get(iv.task.id, 0.0) for iv in intervals)
    return WorkerUse(
        worker=slot,
        pids=tuple(sorted(pids)),
        tasks=len(intervals),
        busy=busy,
        utilisation=busy / wall if wall > 0 else 0.0,
        run=sum(iv.task.run or 0.0 for iv in intervals),
        deser=sum(iv.task.deser or 0.0 for iv in intervals),
        result_ser=sum(iv.task.result_ser or 0.0 for iv in intervals),
        handover=handed,
        before_first=before,
        between=max(0.0, wall - busy - before - after - handed),
        after_last=after,
        cpu=sum(cpu) if records and len(cpu) == len(records) else None,
    )


def _union_length(intervals: list[Interval]) -> float:
    """Total time covered; intervals sorted by start (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for iv in intervals:
        if iv.end > reach:
            total += iv.end - max(iv.start, reach)
            reach = iv.end
    return total


def _breakdown(trace: Trace, uses: tuple[WorkerUse, ...]) -> TimeBreakdown:
    run = sum(u.run for u in uses)
    deser = sum(u.deser for u in uses)
    result_ser = sum(u.result_ser for u in uses)
    return TimeBreakdown(
        run=run,
        deser=deser,
        result_ser=result_ser,
        other=max(0.0, sum(u.busy for u in uses) - run - deser - result_ser)
        + sum(u.handover for u in uses),
        before_first=sum(u.before_first for u in uses),
        between=sum(u.between for u in uses),
        after_last=sum(u.after_last for u in uses),
        parent_ser=sum(t.ser for t in trace.tasks),
    )


def _all_call_stats(
    trace: Trace, by_slot: dict[int, list[Interval]], handover: dict[int, float]
) -> tuple[CallStats, ...]:
    intervals: dict[int, list[tuple[int, Interval]]] = defaultdict(list)
    for slot, ivs in by_slot.items():
        for iv in ivs:
            intervals[iv.task.call].append((slot, iv))
    items: dict[int, list[int]] = defaultdict(list)
    for task in trace.tasks:
        items[task.call].append(task.items)
    return tuple(
        _call_stats(trace, call, intervals[call.id], items[call.id], handover)
        for call in trace.calls
    )


def _call_stats(
    trace: Trace,
    call: CallRecord,
    mine: list[tuple[int, Interval]],
    items: list[int],
    handover: dict[int, float],
) -> CallStats:
    runs, costs, after_another = [], [], []  # of the tasks that finished with a run time
    for _, iv in mine:
        if iv.task.end is not None and iv.task.run is not None:
            runs.append(iv.task.run)
            # Everything a task cost besides the function: the parent's
            # pickling, the worker's (un)pickling, and the hand-over before it.
            cost = max(0.0, iv.end - iv.start - iv.task.run) + iv.task.ser
            costs.append(cost + handover.get(iv.task.id, 0.0))
            if iv.task.id in handover:
                after_another.append(costs[-1])
    # A lane's first task has no hand-over of its own (start-up comes
    # before it): the median is of the others, when there are any.
    handoff = statistics.median(after_another or costs) if runs else None
    window, idle_at_end = 0.0, 0.0
    if mine:
        first = min(iv.start for _, iv in mine)
        last = max(iv.end for _, iv in mine)
        window = last - first
        last_by_slot: dict[int, float] = defaultdict(lambda: first)
        for slot, iv in mine:
            last_by_slot[slot] = max(last_by_slot[slot], iv.end)
        idle = sum(last - last_by_slot[slot] for slot in range(trace.pool.workers))
        idle_at_end = idle / (trace.pool.workers * window) if window > 0 else 0.0
    return CallStats(
        call=call,
        ran=len(runs),
        run_total=sum(runs),
        median_run=statistics.median(runs) if runs else None,
        max_run=max(runs) if runs else None,
        items_per_task=statistics.median(items) if items else 0,
        handoff=handoff,
        workers_used=len({slot for slot, _ in mine}),
        window=window,
        idle_at_end=idle_at_end,
    )
