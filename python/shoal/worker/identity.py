"""Which worker is running this code: ``shoal.worker_id()`` and
``shoal.num_workers()``, as OpenMP's ``omp_get_thread_num()`` /
``omp_get_num_threads()`` and pymp's ``thread_num`` / ``num_threads``.

A worker process learns its slot and the pool's size from its Init frame; a
thread worker keeps them thread-local (its process is the parent's, and may
run several pools). Outside any worker the answers are 0 and 1, as OpenMP's
outside a parallel region.
"""

from __future__ import annotations

# `_thread`, not `threading`: worker processes import this at start.
import _thread

from .after_import import when_imported

_process = (0, 1)  # (slot, workers) of this worker process
_local = _thread._local()


def worker_id() -> int:
    """This worker's number, ``0 .. num_workers() - 1`` (a replacement
    worker takes the number of the one it replaces); 0 outside a pool."""
    return getattr(_local, "slot", _process[0])


def num_workers() -> int:
    """How many workers the pool running this code has; 1 outside a pool."""
    return getattr(_local, "workers", _process[1])


def set_process(slot: int, workers: int) -> None:
    global _process
    _process = (slot, workers)
    name_process(f"shoal-worker-{slot}")


def name_process(name: str) -> None:
    """What ``multiprocessing.current_process().name`` says in this
    process (as the ``[worker N]`` tags and log records' ``processName``),
    set when the user's code first imports multiprocessing."""

    def rename(module) -> None:
        module.current_process().name = name

    when_imported("multiprocessing.process", rename)


def set_thread(slot: int, workers: int) -> None:
    _local.slot, _local.workers = slot, workers
