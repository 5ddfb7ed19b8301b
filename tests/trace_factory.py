"""Synthetic shoal traces (format version 1) for the report's tests.

``make_trace`` plays calls out the way the pool runs them: calls one after
the other, each task on the worker slot that frees up first, so a test knows
exactly what a report should find (busy times, speed-up, idle workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Call:
    """A call to simulate: one task per entry of ``runs`` (seconds)."""

    runs: list[float]
    function: str = "mymod.work"
    method: str = "map"
    items_per_task: int = 1
    bytes_in: int = 200  # per task
    bytes_out: int = 100
    ser: float = 0.0  # per task, parent
    deser: float = 0.0  # per task, worker
    result_ser: float = 0.0
    transport: float = 0.0  # per task: the hand-over, just before it starts on its worker
    gap: float = 0.0  # idle on a worker before each task: it is handed over that late
    outcomes: dict[int, str] = field(default_factory=dict)  # task index -> outcome


def make_trace(
    calls: list[Call],
    workers: int = 2,
    *,
    kind: str = "process",
    start_up: float = 0.05,
    tail: float = 0.0,
    cpu_share: float = 1.0,
) -> dict:
    """A trace dict: workers are ready at ``start_up``; the trace ends
    ``tail`` seconds after the last task; each worker's CPU time is
    ``cpu_share`` of its busy time (None for a thread pool)."""
    free = [start_up] * workers
    busy = [0.0] * workers
    call_rows, task_rows = [], []
    now, task_id = start_up, 0
    for call_id, call in enumerate(calls):
        call_start = now
        for index, run in enumerate(call.runs):
            outcome = call.outcomes.get(index, "ok")
            task = {
                "id": task_id,
                "call": call_id,
                "items": call.items_per_task,
                "queued": call_start,
                "bytes_in": call.bytes_in,
                "ser": call.ser,
                "outcome": outcome,
            }
            task_id += 1
            if outcome == "cancelled":
                task.update(
                    worker=None,
                    pid=None,
                    start=None,
                    end=None,
                    bytes_out=None,
                    deser=None,
                    run=None,
                    result_ser=None,
                )
                task_rows.append(task)
                continue
            slot = min(range(workers), key=lambda w: free[w])
            if call.gap:  # handed to the engine only once its worker had waited
                task["queued"] = max(free[slot], call_start) + call.gap
            start = max(free[slot], task["queued"]) + call.transport
            length = call.deser + run + call.result_ser
            free[slot] = start + length
            busy[slot] += length
            task.update(
                worker=slot,
                pid=1000 + slot,
                start=start,
                end=start + length,
                bytes_out=call.bytes_out if outcome == "ok" else None,
                deser=call.deser,
                run=run,
                result_ser=call.result_ser if outcome == "ok" else None,
            )
            task_rows.append(task)
        now = max([call_start, *free])
        call_rows.append(
            {
                "id": call_id,
                "method": call.method,
                "function": call.function,
                "tasks": len(call.runs),
                "items": len(call.runs) * call.items_per_task,
                "chunksize": call.items_per_task,
                "start": call_start,
                "end": now,
            }
        )
    wall = now + tail
    return {
        "format": "shoal-trace",
        "version": 1,
        "created": "2026-11-23T16:20:00+00:00",
        "host": "testhost",
        "python": "3.11.7",
        "shoal": "0.1.0",
        "cpus": workers,
        "pool": {"kind": kind, "workers": workers},
        "wall": wall,
        "calls": call_rows,
        "tasks": task_rows,
        "workers": [
            {
                "worker": slot,
                "pid": 1000 + slot,
                "start": 0.001,
                "end": wall,
                "cpu": None if kind == "thread" else busy[slot] * cpu_share,
            }
            for slot in range(workers)
        ],
    }
