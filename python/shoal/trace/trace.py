"""``shoal.Trace``: what a pool recorded with ``trace=True``.

The JSON format is docs/trace-format.md (version 1). Loading checks every
field, so a report never has to wonder whether a number is there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from typing import Any, TypeGuard

from .. import __version__
from ..errors import ShoalError
from .format import plural
from .summary import TraceSummary, summarize

FORMAT = "shoal-trace"
VERSION = 1
#: "pending": not finished when the trace was taken (pool.trace() mid-run).
OUTCOMES = ("ok", "error", "lost", "timeout", "cancelled", "pending")
POOL_KINDS = ("process", "thread")


class TraceFormatError(ShoalError, ValueError):
    """A file or dict that is not a shoal trace this version can read."""


# Field types are read from the annotations below: "int", "float" or "str",
# with "| None" where the format allows null (and a missing key means null).


@dataclass(frozen=True)
class PoolInfo:
    kind: str  # "process" | "thread"
    workers: int


@dataclass(frozen=True)
class CallRecord:
    """One map/starmap/imap/apply/submit call."""

    id: int
    method: str
    function: str
    tasks: int
    items: int
    chunksize: int | None
    start: float
    end: float | None  # None: still running when the trace was taken

    @property
    def label(self) -> str:
        """'map(mymod.work)'."""
        return f"{self.method}({self.function})"


@dataclass(frozen=True)
class TaskRecord:
    """One task (a chunk is one task). Times are seconds from the pool's start."""

    id: int
    call: int
    items: int
    worker: int | None  # slot 0..workers-1; None: never reached a worker
    pid: int | None
    queued: float
    start: float | None
    end: float | None
    bytes_in: int
    bytes_out: int | None
    ser: float  # parent pickling of the arguments
    deser: float | None  # worker unpickling of the arguments
    run: float | None  # the function itself
    result_ser: float | None  # worker pickling of the result
    outcome: str  # one of OUTCOMES


@dataclass(frozen=True)
class WorkerRecord:
    """One worker process (a replacement keeps its slot, with a new pid)."""

    worker: int
    pid: int
    start: float
    end: float | None  # None: still running when the trace was taken
    cpu: float | None  # CPU seconds, user + sys; None for thread workers


@dataclass(frozen=True)
class Trace:
    """A pool's timeline: ``calls``, ``tasks`` and ``workers`` records.

    ``Trace.load(path)`` / ``Trace.from_dict(d)`` check the content and raise
    :class:`TraceFormatError` naming the file and field; ``save(path)``
    writes it back. ``shoal.report(trace, "run.html")`` draws it.
    """

    created: str
    host: str
    python: str
    shoal: str
    cpus: int
    pool: PoolInfo
    wall: float
    calls: tuple[CallRecord, ...]
    tasks: tuple[TaskRecord, ...]
    workers: tuple[WorkerRecord, ...]

    @classmethod
    def from_dict(cls, data: Any, source: str = "trace") -> Trace:
        """Checks ``data`` against the format; ``source`` names it in errors."""
        return _Reader(source).trace(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        source = os.fspath(path)
        with open(source, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            raise TraceFormatError(f"{source}: not a JSON file: {e}") from e
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            **{f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)},
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the JSON, one record per line so a diff or ``grep`` reads it."""
        lines = []
        for key, value in self.to_dict().items():
            if isinstance(value, list):
                rows = ",\n    ".join(json.dumps(row) for row in value)
                text = f"[\n    {rows}\n  ]" if rows else "[]"
            else:
                text = json.dumps(value)
            lines.append(f"  {json.dumps(key)}: {text}")
        with open(path, "w", encoding="utf-8") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")

    def summary(self) -> TraceSummary:
        """The numbers a report needs: speed-up, utilisation, where the time went."""
        return summarize(self)

    def __repr__(self) -> str:
        return (
            f"<shoal.Trace: {plural(len(self.tasks), 'task')} in "
            f"{plural(len(self.calls), 'call')} on "
            f"{plural(self.pool.workers, self.pool.kind + ' worker')}, {self.wall:.3f} s>"
        )


def _plain(value: Any) -> Any:
    """A record (or tuple of them) as JSON-ready dicts and lists."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


class _Reader:
    """Turns parsed JSON into a Trace, or raises saying what is wrong and where."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, message: str) -> TraceFormatError:
        return TraceFormatError(f"{self.source}: {where}{': ' if where else ''}{message}")

    def trace(self, data: Any) -> Trace:
        if not isinstance(data, dict):
            raise self.error("", f"expected a JSON object, got {type(data).__name__}")
        self.check_format(data)
        header = {
            name: self.value(data, name, annotation, "")
            for name, annotation in _annotations(Trace).items()
            if name not in ("pool", "calls", "tasks", "workers")
        }
        pool = self.record(PoolInfo, data.get("pool"), "pool")
        if pool.kind not in POOL_KINDS:
            raise self.error("pool.kind", f"expected one of {POOL_KINDS}, got {pool.kind!r}")
        if pool.workers < 1:
            raise self.error("pool.workers", f"expected at least 1, got {pool.workers}")
        calls = self.records(CallRecord, data, "calls")
        tasks = self.records(TaskRecord, data, "tasks")
        workers = self.records(WorkerRecord, data, "workers")
        self.check_references(pool, calls, tasks, workers)
        return Trace(pool=pool, calls=calls, tasks=tasks, workers=workers, **header)

    def check_format(self, data: dict) -> None:
        if data.get("format") != FORMAT:
            found = f"format is {data['format']!r}" if "format" in data else "no 'format' field"
            raise self.error("", f"not a shoal trace ({found}, expected {FORMAT!r})")
        version = data.get("version")
        if not _is_int(version) or version < 1:
            raise self.error("version", f"expected a positive integer, got {version!r}")
        if version > VERSION:
            raise self.error(
                "",
                f"trace format version {version} is newer than this shoal ({__version__}) "
                f"reads (up to version {VERSION}); upgrade shoal to read it",
            )

    def records(self, cls: type, data: dict, key: str) -> tuple:
        rows = data.get(key)
        if not isinstance(rows, list):
            raise self.error(key, f"expected a list, got {_show(rows)}")
        return tuple(self.record(cls, row, f"{key}[{i}]") for i, row in enumerate(rows))

    def record(self, cls: type, row: Any, where: str):
        if not isinstance(row, dict):
            raise self.error(where, f"expected an object, got {_show(row)}")
        return cls(
            **{
                name: self.value(row, name, annotation, where)
                for name, annotation in _annotations(cls).items()
            }
        )

    def value(self, row: dict, name: str, annotation: str, parent: str) -> Any:
        """``row[name]`` checked against its annotation; ``parent`` locates
        the row in errors (only built then: traces have many fields)."""
        kind, _, nullable = annotation.partition(" | ")
        value = row.get(name)
        if value is None:
            if nullable:
                return None
            problem = "missing" if name not in row else "must not be null"
        else:
            expected, valid = _KINDS[kind]
            if valid(value):
                return float(value) if kind == "float" else value
            or_null = " or null" if nullable else ""
            problem = f"expected {expected}{or_null}, got {_show(value)}"
        raise self.error(f"{parent}.{name}" if parent else name, problem)

    def check_references(self, pool: PoolInfo, calls, tasks, workers) -> None:
        call_ids = {call.id for call in calls}
        for i, task in enumerate(tasks):
            if task.call not in call_ids:
                raise self.error(f"tasks[{i}].call", f"no call has id {task.call}")
            if task.worker is not None and task.worker >= pool.workers:
                raise self.error(
                    f"tasks[{i}].worker",
                    f"slot {task.worker} but the pool has {pool.workers} workers",
                )
            if task.outcome not in OUTCOMES:
                raise self.error(
                    f"tasks[{i}].outcome", f"expected one of {OUTCOMES}, got {task.outcome!r}"
                )
        for i, worker in enumerate(workers):
            if worker.worker >= pool.workers:
                raise self.error(
                    f"workers[{i}].worker",
                    f"slot {worker.worker} but the pool has {pool.workers} workers",
                )


@functools.cache
def _annotations(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


#: annotation -> (what the error says was expected, check)
_KINDS = {
    "int": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "float": ("a non-negative number", lambda v: _is_number(v) and v >= 0),
    "str": ("a string", lambda v: isinstance(v, str)),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
