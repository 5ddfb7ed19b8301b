"""Plain-language advice from a trace's numbers.

Each rule looks at one way parallel work loses time, fires only past a
threshold, and says the number that made it fire next to what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .format import percent, plural, seconds, size
from .summary import CallStats, TraceSummary

#: Below about a millisecond, handing a task to a worker (pickling, sending,
#: scheduling, returning the result) is a large share of its cost.
SMALL_TASK = 1e-3
#: The run time a suggested chunksize aims at (as imap's automatic chunks do).
TARGET_TASK = 5e-3
#: Tasks per worker a suggestion keeps, so that chunks still balance.
TASKS_PER_WORKER = 4
#: Chunks per worker that let a dynamic schedule even out tasks of uneven cost.
BALANCING_TASKS_PER_WORKER = 16
#: A call shorter than this is not worth tuning.
MIN_CALL = 0.02
#: Share of a call's worker time spent idle at its end that counts as imbalance.
IMBALANCE = 0.15
#: Pickling worth mentioning: this share of the function's run time, and at least MIN_PICKLING.
PICKLING_SHARE = 0.10
MIN_PICKLING = 0.01
#: Bytes per task (arguments and result) from which pickling is about data,
#: not about the number of objects.
LARGE_TASK_DATA = 64_000
#: Share of worker time spent before the first task that counts as slow start-up.
STARTUP_SHARE = 0.25
#: CPU seconds per busy second below which tasks are waiting, not computing.
CPU_SHARE = 0.5
MIN_BUSY_FOR_CPU = 0.2
#: Calls that each rule looks at: the longest, down to this share of the total.
CALL_SHARE = 0.05
MAX_CALLS = 3

_OUTCOME_WORDS = {
    "error": "raised an exception",
    "lost": "lost with a worker",
    "timeout": "timed out",
    "cancelled": "cancelled",
    "pending": "still running when the trace was taken",
}


@dataclass(frozen=True)
class Advice:
    topic: str  # failures, small-tasks, few-tasks, imbalance, pickling, start-up, waiting, ok
    text: str


def advise(summary: TraceSummary) -> list[Advice]:
    if summary.tasks == 0:
        return [Advice("ok", "The pool ran no tasks: there is nothing to measure yet.")]
    advice = [a for a in (_failures(summary),) if a]
    for stats in _main_calls(summary):
        advice += [
            a
            for a in (
                _small_tasks(stats, summary.workers),
                _few_tasks(stats, summary.workers),
                _imbalance(stats, summary.workers),
            )
            if a
        ]
    advice += [a for a in (_pickling(summary), _startup(summary), _waiting(summary)) if a]
    if all(a.topic == "failures" for a in advice):
        advice.append(
            Advice(
                "ok",
                f"Nothing to tune: workers were busy {percent(summary.utilisation)} of the run, "
                f"a speed-up of {summary.speedup:.2f}x on {plural(summary.workers, 'worker')} "
                f"({percent(summary.efficiency)} efficiency).",
            )
        )
    return advice


def _main_calls(summary: TraceSummary) -> list[CallStats]:
    """The calls that took most of the time; rules on tiny calls are noise."""
    total = sum(c.window for c in summary.calls)
    ranked = sorted(summary.calls, key=lambda c: c.window, reverse=True)
    return [c for c in ranked[:MAX_CALLS] if c.window >= max(MIN_CALL, CALL_SHARE * total)]


def _failures(summary: TraceSummary) -> Advice | None:
    failed = {o: n for o, n in summary.outcomes.items() if o != "ok"}
    if not failed:
        return None
    parts = ", ".join(f"{n} {_OUTCOME_WORDS[o]}" for o, n in sorted(failed.items()))
    return Advice(
        "failures",
        f"{sum(failed.values())} of {plural(summary.tasks, 'task')} did not complete: {parts}.",
    )


def _small_tasks(stats: CallStats, workers: int) -> Advice | None:
    if stats.median_run is None or stats.median_run >= SMALL_TASK or stats.median_run <= 0:
        return None
    per_task = max(1, round(stats.items_per_task))
    most = stats.call.items // (workers * TASKS_PER_WORKER)
    wanted = per_task * TARGET_TASK / stats.median_run
    chunksize = _power_of_two_at_most(min(wanted, most))
    if chunksize < 2 * per_task:
        return None
    handoff = ""
    if stats.handoff:
        handoff = f" and cost about {seconds(stats.handoff)} more to hand over and return"
    expected = stats.median_run * chunksize / per_task
    return Advice(
        "small-tasks",
        f"{stats.call.label}: the median task took {seconds(stats.median_run)}{handoff}; "
        f"tasks under ~{seconds(SMALL_TASK)} spend much of their time being handed to a "
        f"worker. Pass chunksize={chunksize} so that each task runs about {seconds(expected)}.",
    )


#: Calls that are one task by design: other calls keep the workers busy.
SINGLE_TASK_METHODS = ("apply", "submit")


def _few_tasks(stats: CallStats, workers: int) -> Advice | None:
    if stats.call.tasks >= workers or stats.window < MIN_CALL:
        return None
    if stats.call.method in SINGLE_TASK_METHODS:
        return None
    idle = workers - stats.call.tasks
    wanted = workers * TASKS_PER_WORKER
    if stats.items_per_task > 1:
        remedy = f"pass chunksize={max(1, stats.call.items // wanted)}"
    else:
        remedy = "split the inputs more finely"
    return Advice(
        "few-tasks",
        f"{stats.call.label} had {plural(stats.call.tasks, 'task')} for "
        f"{plural(workers, 'worker')}, so {idle} "
        f"of them had nothing to do: {remedy}, for at least {wanted} tasks "
        f"({TASKS_PER_WORKER} per worker).",
    )


def _imbalance(stats: CallStats, workers: int) -> Advice | None:
    if (
        workers < 2
        or stats.call.tasks < workers
        or stats.window < MIN_CALL
        or stats.idle_at_end < IMBALANCE
        or stats.max_run is None
        or stats.median_run is None
    ):
        return None
    facts = (
        f"{stats.call.label}: workers sat idle for {percent(stats.idle_at_end)} of the call "
        f"waiting for the last tasks ({stats.call.tasks / workers:.1f} tasks per worker; "
        f"the longest ran {seconds(stats.max_run)}, the median {seconds(stats.median_run)})."
    )
    if stats.items_per_task > 1:
        chunksize = max(1, stats.call.items // (workers * BALANCING_TASKS_PER_WORKER))
        remedy = (
            f" Smaller chunks balance better: pass chunksize={chunksize}, so that workers "
            "that finish early take the next chunk (a dynamic schedule)."
        )
    else:
        remedy = (
            " Each task is one item already: start the longest tasks first (sort the inputs "
            "by expected cost) or split them; imap_unordered hands out one task at a time "
            "(a dynamic schedule)."
        )
    return Advice("imbalance", facts + remedy)


def _pickling(summary: TraceSummary) -> Advice | None:
    t = summary.time
    pickling = t.parent_ser + t.deser + t.result_ser
    if pickling < MIN_PICKLING or pickling < PICKLING_SHARE * summary.run_total:
        return None
    share = pickling / summary.run_total if summary.run_total > 0 else math.inf
    against = f"{percent(share)} of" if math.isfinite(share) else "more than"
    facts = (
        f"Pickling took {seconds(pickling)}, {against} the {seconds(summary.run_total)} your "
        f"function ran ({seconds(t.parent_ser)} pickling arguments in the parent, "
        f"{seconds(t.deser)} unpickling them in workers, {seconds(t.result_ser)} pickling "
        f"results); tasks carried {size(summary.bytes_in)} of arguments and "
        f"{size(summary.bytes_out)} of results"
    )
    per_task = (summary.bytes_in + summary.bytes_out) / summary.tasks
    if per_task < LARGE_TASK_DATA:
        # Little data: the cost is per object (many tiny ones), not per byte.
        items = sum(c.call.items for c in summary.calls) or summary.tasks
        return Advice(
            "pickling",
            f"{facts}, {size(per_task)} per task: the cost is per object, not per byte, and "
            f"your function ran only {seconds(summary.run_total / items)} per item. Send "
            "fewer, larger objects (say (start, stop) ranges instead of every number, with "
            "the loop inside your function), or give it more work per item.",
        )
    return Advice(
        "pickling",
        f"{facts}. Send large data as numpy arrays, not Python objects (arrays travel in "
        "shared memory), or keep it in a shoal.shared array, which every worker sees, and "
        "send each task an index or a slice instead of the data.",
    )


def _startup(summary: TraceSummary) -> Advice | None:
    worker_time = summary.workers * summary.wall
    if worker_time <= 0 or summary.time.before_first < STARTUP_SHARE * worker_time:
        return None
    waited = summary.time.before_first / summary.workers
    return Advice(
        "start-up",
        f"Workers waited {seconds(waited)} on average before their first task, "
        f"{percent(summary.time.before_first / worker_time)} of the run: starting worker "
        "processes costs tens of milliseconds each, so create one Pool and reuse it for "
        "many calls, and give it enough work per call to pay for the start.",
    )


def _waiting(summary: TraceSummary) -> Advice | None:
    busy = sum(lane.busy for lane in summary.lanes)
    cpu = summary.cpu_total
    if summary.kind != "process" or cpu is None or busy < MIN_BUSY_FOR_CPU:
        return None
    if cpu >= CPU_SHARE * busy:
        return None
    return Advice(
        "waiting",
        f"Workers used {seconds(cpu)} of CPU in {seconds(busy)} of running tasks "
        f"({percent(cpu / busy)}): the tasks mostly wait (on I/O, sleep, locks, or "
        "other programs using the cores) rather than compute. If they wait on I/O, more "
        "workers than cores, or threads, would overlap the waiting.",
    )


def _power_of_two_at_most(x: float) -> int:
    return 2 ** int(math.log2(x)) if x >= 1 else 0
