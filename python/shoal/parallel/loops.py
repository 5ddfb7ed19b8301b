"""OpenMP-style loops: ``shoal.parallel_for`` and ``shoal.parallel_reduce``.

The schedules are OpenMP's, as pure functions of the loop's length, the
number of workers and the chunk size:

- ``static``: without ``chunk``, one contiguous block per worker, sizes
  differing by at most one; with ``chunk``, chunks of that size dealt
  round-robin (chunk k to worker k mod workers). Each worker's share is
  one task, so no worker helps another: cheap, and unbalanced when
  iterations cost different amounts.
- ``dynamic``: chunks of ``chunk`` (default 1) handed to whichever worker
  is free.
- ``guided``: as dynamic, with chunks of the unassigned count divided by
  the number of workers, shrinking down to ``chunk`` (default 1).

The body is called as ``body(i)`` for every index, or as ``body(start,
stop)`` once per chunk if it takes two arguments, so the loop inside a
chunk stays in one call (and in compiled code, if the body is compiled).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import NamedTuple

from ..trace.format import plural
from ..worker.identity import worker_id
from .auto import BackendChoice, check_backend, check_workers, run

SCHEDULES = ("static", "dynamic", "guided")
#: Reductions by name: each folds an iterable of at least one value.
REDUCTIONS: dict[str, Callable] = {"sum": sum, "prod": math.prod, "min": min, "max": max}
#: The identity of each named reduction, for an empty loop.
_IDENTITIES = {"sum": 0, "prod": 1}
_NO_INITIAL = object()

Chunk = tuple[int, int]  # (start, stop) positions in the loop's range


# ----------------------------------------------------------------- schedules
def static_chunks(n: int, workers: int, chunk: int | None = None) -> list[list[Chunk]]:
    """Per worker, the chunks OpenMP's static schedule gives it."""
    if chunk is None:
        base, extra = divmod(n, workers)
        shares, start = [], 0
        for w in range(workers):
            stop = start + base + (w < extra)
            shares.append([(start, stop)] if stop > start else [])
            start = stop
        return shares
    shares = [[] for _ in range(workers)]
    for k, start in enumerate(range(0, n, chunk)):
        shares[k % workers].append((start, min(start + chunk, n)))
    return shares


def dynamic_chunks(n: int, chunk: int | None = None) -> list[Chunk]:
    """The chunks of OpenMP's dynamic schedule, in the order handed out."""
    size = chunk or 1
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def guided_chunks(n: int, workers: int, chunk: int | None = None) -> list[Chunk]:
    """The chunks of OpenMP's guided schedule, in the order handed out:
    each is the unassigned count divided by ``workers`` (rounded up), but
    not smaller than ``chunk`` (default 1), except the last."""
    smallest = chunk or 1
    chunks, start = [], 0
    while start < n:
        stop = min(start + max(-(-(n - start) // workers), smallest), n)
        chunks.append((start, stop))
        start = stop
    return chunks


def plan(schedule: str, n: int, workers: int, chunk: int | None = None) -> list[list[Chunk]]:
    """The tasks a loop of ``n`` iterations is sent as, each a list of
    chunks: one task per worker for ``static``, one per chunk otherwise."""
    if schedule == "static":
        return [share for share in static_chunks(n, workers, chunk) if share]
    if schedule == "dynamic":
        return [[c] for c in dynamic_chunks(n, chunk)]
    return [[c] for c in guided_chunks(n, workers, chunk)]


# -------------------------------------------------------------------- result
@dataclass(frozen=True)
class LoopResult:
    """What ``parallel_for`` did. ``values`` holds what the body returned:
    one per index for ``body(i)``, one per chunk (in index order) for
    ``body(start, stop)``."""

    values: list
    backend: str  # "processes" or "threads"
    schedule: str
    chunks: int
    #: Seconds each worker spent in the body, by worker slot.
    busy: tuple[float, ...]
    wall: float
    choice: BackendChoice

    @property
    def imbalance(self) -> float:
        """The busiest worker's time over the mean (1.0: perfectly even)."""
        mean = sum(self.busy) / len(self.busy) if self.busy else 0.0
        return max(self.busy) / mean if mean > 0 else 1.0

    def __repr__(self) -> str:
        busy = ", ".join(f"{b:.3g}" for b in self.busy)
        return (
            f"<LoopResult {plural(len(self.values), 'value')}, {plural(self.chunks, 'chunk')}, "
            f"{self.schedule} "
            f"on {self.backend}, {self.wall:.3g} s; busy per worker: [{busy}] s>"
        )


# ------------------------------------------------------------------- running
def _run_task(body: Callable, per_index: bool, fold: Callable | None, seq: range, chunks):
    """One task, in a worker: ``(worker slot, seconds, [(start, result)])``."""
    began = perf_counter()
    out = []
    for start, stop in chunks:
        if not per_index:
            out.append((start, body(seq.start + start, seq.start + stop)))
        elif fold is None:
            out.append((start, list(map(body, seq[start:stop]))))
        else:
            out.append((start, fold(map(body, seq[start:stop]))))
    return worker_id(), perf_counter() - began, out


def _as_range(range_or_len) -> range:
    if isinstance(range_or_len, range):
        return range_or_len
    if isinstance(range_or_len, int) and not isinstance(range_or_len, bool) and range_or_len >= 0:
        return range(range_or_len)
    raise TypeError(
        f"a loop runs over a range or a non-negative int (its length), got {range_or_len!r}; "
        "to apply a function to the items of a list, use shoal.map"
    )


def _takes_chunk(body: Callable) -> bool:
    """True for ``body(start, stop)``, False for ``body(i)``."""
    if not callable(body):
        raise TypeError(f"the loop body must be callable, got {body!r}")
    try:
        params = inspect.signature(body).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): one index
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(p.kind in positional and p.default is p.empty for p in params)
    takes_one = any(p.kind in positional or p.kind == p.VAR_POSITIONAL for p in params)
    if required == 2:
        return True
    if required == 1 or (required == 0 and takes_one):
        return False
    raise TypeError(
        f"the loop body must take one index, body(i), or a chunk, body(start, stop); "
        f"{body!r} needs {required} arguments"
    )


def _check(schedule, chunk) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(
            f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}"
        )
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")


class _Ran(NamedTuple):
    choice: BackendChoice
    per_index: bool
    chunks: list  # (start, result) of every chunk, in index order
    busy: tuple[float, ...]  # seconds in the body, by worker slot


def _loop(range_or_len, body, fold, schedule, chunk, workers, backend) -> _Ran:
    seq = _as_range(range_or_len)
    per_index = not _takes_chunk(body)
    _check(schedule, chunk)
    check_workers(workers)
    check_backend(backend)
    if not per_index and seq.step != 1:
        raise ValueError(
            f"body(start, stop) gets chunks of a range with step 1, got {seq!r}: loop over "
            f"range(start, stop, {seq.step}) inside the body, or take one index, body(i)"
        )
    n = len(seq)
    task = functools.partial(_run_task, body, per_index, fold, seq)

    def probe(start: int, stop: int):
        return task([(start, stop)])

    def rest(pool, start: int) -> list:
        shifted = [
            [(start + a, start + b) for a, b in chunks]
            for chunks in plan(schedule, n - start, pool.worker_count, chunk)
        ]
        return pool.map(task, shifted, chunksize=1)

    choice, head, tail = run(n, backend, workers, probe, rest)
    outputs = [value for _, _, value in head] + tail
    busy: dict[int, float] = {}
    chunks = []
    for slot, seconds, done in outputs:
        busy[slot] = busy.get(slot, 0.0) + seconds
        chunks.extend(done)
    chunks.sort(key=lambda c: c[0])
    slots = max(busy) + 1 if busy else 0
    return _Ran(choice, per_index, chunks, tuple(busy.get(s, 0.0) for s in range(slots)))


def parallel_for(
    range_or_len,
    body: Callable,
    *,
    schedule: str = "static",
    chunk: int | None = None,
    workers: int | None = None,
    backend="processes",
) -> LoopResult:
    """Calls ``body(i)`` for every index of ``range_or_len`` (a range, or
    an int n for ``range(n)``), each exactly once, in parallel -- or
    ``body(start, stop)`` once per chunk if the body takes two arguments.

    ``schedule`` is ``"static"``, ``"dynamic"`` or ``"guided"``, with chunk
    size ``chunk``, as OpenMP defines them (see ``shoal.parallel.loops``).
    ``backend`` is ``"processes"`` (default), ``"threads"``, ``"auto"``, or
    a ``shoal.Pool``/``shoal.ThreadPool`` to run on; ``workers`` defaults
    to :func:`shoal.cpu_count`. Inside the body, :func:`shoal.worker_id`
    and :func:`shoal.num_workers` say which worker runs it.

    On processes the body runs in other processes: what it writes to the
    parent's variables is not seen by the parent, so return results (they
    are in ``LoopResult.values``). On threads it shares the parent's memory.
    """
    began = perf_counter()
    ran = _loop(range_or_len, body, None, schedule, chunk, workers, backend)
    if ran.per_index:
        values = [x for _, result in ran.chunks for x in result]
    else:
        values = [result for _, result in ran.chunks]
    wall = perf_counter() - began
    backend_used = ran.choice.backend
    return LoopResult(values, backend_used, schedule, len(ran.chunks), ran.busy, wall, ran.choice)


def parallel_reduce(
    range_or_len,
    body: Callable,
    op="sum",
    *,
    initial=_NO_INITIAL,
    schedule: str = "static",
    chunk: int | None = None,
    workers: int | None = None,
    backend="processes",
):
    """Combines ``body(i)`` over every index of ``range_or_len`` with
    ``op``: ``"sum"``, ``"prod"``, ``"min"``, ``"max"``, or a function of
    two values that is associative, e.g. ``operator.or_``. A body taking
    ``(start, stop)`` returns its chunk's partial result instead.

    Each worker combines the indices of a chunk; the parent combines the
    chunks' partial results in index order. ``initial``, if given, is
    combined in once, first, and is the result of an empty loop (``sum``
    and ``prod`` of an empty loop are 0 and 1 without it). Other keywords
    as :func:`shoal.parallel_for`::

        pi = shoal.parallel_reduce(n, lambda i: 4 / (1 + ((i + 0.5) / n) ** 2)) / n
    """
    if isinstance(op, str):
        if op not in REDUCTIONS:
            raise ValueError(
                f"op must be one of {', '.join(map(repr, REDUCTIONS))} or a function of two "
                f"values, got {op!r}"
            )
        fold = REDUCTIONS[op]
    elif callable(op):
        fold = functools.partial(functools.reduce, op)
    else:
        raise TypeError(f"op must be a name such as 'sum' or a function of two values, got {op!r}")
    ran = _loop(range_or_len, body, fold, schedule, chunk, workers, backend)
    partials = [result for _, result in ran.chunks]
    if initial is not _NO_INITIAL:
        partials.insert(0, initial)
    if partials:
        return fold(partials)
    if isinstance(op, str) and op in _IDENTITIES:
        return _IDENTITIES[op]
    raise ValueError(
        f"parallel_reduce over an empty range with op={op!r} has no result; pass initial="
    )
