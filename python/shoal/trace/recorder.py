"""Records a pool's run for ``trace=True``: every call, every task (where and
when it ran, its sizes, where its time went) and every worker. The result
is the trace format of ``docs/trace-format.md``.

Times are kept as ``CLOCK_MONOTONIC`` nanoseconds (the clock workers stamp
their answers with) and turned into seconds since the pool started only
when the trace is built.
"""

from __future__ import annotations

import datetime
import platform
import threading
import time

from .. import __version__
from .._shoal import Outcome
from ..cpus import cpu_count
from ..wire.transfer import payload_nbytes

_OUTCOMES = {
    Outcome.Done: "ok",
    Outcome.Failed: "error",
    Outcome.Lost: "lost",
    Outcome.TimedOut: "timeout",
    Outcome.Cancelled: "cancelled",
    Outcome.InitFailed: "error",
    Outcome.CannotStart: "lost",
    Outcome.OverMemory: "lost",
}


def _seconds(ns: int) -> float:
    return ns / 1e9


class TraceRecorder:
    """Filled in by the pool (calls and tasks sent) and its result thread
    (tasks completed)."""

    def __init__(self, kind: str, workers: int) -> None:
        self._origin = time.monotonic_ns()
        self._created = datetime.datetime.now(datetime.UTC)
        self._kind, self._workers = kind, workers
        self._lock = threading.Lock()
        self._calls: list[dict] = []
        self._tasks: dict[int, dict] = {}

    def call(self, method: str, function: str, chunksize: int | None) -> int:
        """Starts a call's record; returns its id."""
        with self._lock:
            call_id = len(self._calls)
            self._calls.append(
                {
                    "id": call_id,
                    "method": method,
                    "function": function,
                    "tasks": 0,
                    "items": 0,
                    "chunksize": chunksize,
                    "start_ns": time.monotonic_ns(),
                    "end_ns": None,
                }
            )
        return call_id

    def sent(
        self, call_id: int, first_id: int, items: list[int], sizes: list[int], ser_ns: int
    ) -> None:
        """Tasks ``first_id, first_id + 1, ...`` of a call were handed to the
        engine; ``items`` and ``sizes`` per task, ``ser_ns`` for them all."""
        now = time.monotonic_ns()
        per_task = ser_ns // max(1, len(items))
        with self._lock:
            call = self._calls[call_id]
            call["tasks"] += len(items)
            call["items"] += sum(items)
            for k, (n, size) in enumerate(zip(items, sizes, strict=True)):
                self._tasks[first_id + k] = {
                    "id": first_id + k,
                    "call": call_id,
                    "items": n,
                    "queued_ns": now,
                    "bytes_in": size,
                    "ser_ns": per_task,
                }

    def completed(self, batch: list) -> None:
        """The result thread's batch of ``Completion``s."""
        now = time.monotonic_ns()
        with self._lock:
            for c in batch:
                task = self._tasks.get(c.task_id)
                if task is None:
                    continue
                outcome, payload = c.outcome, c.payload
                task["outcome"] = _OUTCOMES.get(outcome, "error")
                # A result (maybe in shared memory) or a pickled exception.
                answered = outcome == Outcome.Done or type(payload) is bytes
                task["bytes_out"] = payload_nbytes(payload) if answered else 0
                task["done_ns"] = now
                run = c.run
                if run is not None:
                    task.update(
                        worker=run.slot,
                        pid=run.pid,
                        start_ns=run.start_ns,
                        duration_ns=c.duration_ns,
                        deser_ns=run.deser_ns,
                        result_ser_ns=run.result_ser_ns,
                    )
                call = self._calls[task["call"]]
                call["end_ns"] = max(call["end_ns"] or 0, now)

    def build(self, workers: list) -> dict:
        """The trace as a dict; ``workers``: the ``WorkerRecord``s of
        ``Engine.workers()``."""
        origin = self._origin

        def rel(ns: int | None) -> float | None:
            return None if ns is None else _seconds(ns - origin)

        with self._lock:
            calls = [
                {
                    "id": c["id"],
                    "method": c["method"],
                    "function": c["function"],
                    "tasks": c["tasks"],
                    "items": c["items"],
                    "chunksize": c["chunksize"],
                    "start": rel(c["start_ns"]),
                    "end": rel(c["end_ns"]),
                }
                for c in self._calls
            ]
            tasks = [self._task_entry(t, rel) for t in self._tasks.values()]
        tasks.sort(key=lambda t: t["id"])
        worker_entries = [
            {
                "worker": w.slot,
                "pid": w.pid,
                "start": rel(w.started_ns),
                "end": rel(w.ended_ns),
                # Threads share the process's CPU clock: no per-worker figure.
                "cpu": _seconds(w.cpu_ns) if self._kind == "process" else None,
            }
            for w in workers
        ]
        ends = [t["end"] for t in tasks if t["end"] is not None]
        ends += [c["end"] for c in calls if c["end"] is not None]
        return {
            "format": "shoal-trace",
            "version": 1,
            "created": self._created.isoformat(timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "shoal": __version__,
            "cpus": cpu_count(),
            "pool": {"kind": self._kind, "workers": self._workers},
            "wall": max(ends, default=0.0),
            "calls": calls,
            "tasks": tasks,
            "workers": worker_entries,
        }

    @staticmethod
    def _task_entry(t: dict, rel) -> dict:
        ran = "start_ns" in t
        duration = _seconds(t["duration_ns"]) if ran else None
        deser = _seconds(t["deser_ns"]) if ran else None
        result_ser = _seconds(t["result_ser_ns"]) if ran else None
        start = rel(t["start_ns"]) if ran else None
        return {
            "id": t["id"],
            "call": t["call"],
            "items": t["items"],
            "worker": t.get("worker"),
            "pid": t.get("pid"),
            "queued": rel(t["queued_ns"]),
            "start": start,
            "end": None if start is None else start + duration,
            "bytes_in": t["bytes_in"],
            "bytes_out": t.get("bytes_out", 0),
            "ser": _seconds(t["ser_ns"]),
            "deser": deser,
            "run": None if not ran else max(0.0, duration - deser - result_ser),
            "result_ser": result_ser,
            "outcome": t.get("outcome", "pending"),
        }
