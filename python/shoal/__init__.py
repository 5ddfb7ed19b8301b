"""shoal: parallel computing for Python, with a Rust engine.

    import shoal
    with shoal.Pool() as pool:
        pool.map(f, xs)

Submodules load on first use, so a worker process (which imports this
package) starts without paying for the parent-side API.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`'s: importing typing costs a worker ~20 ms

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "Pool": "_pool",
    "ThreadPool": "_threadpool",
    "worker_id": "_identity",
    "num_workers": "_identity",
    "parallel_for": "_loops",
    "parallel_reduce": "_loops",
    "LoopResult": "_loops",
    "map": "_backend",
    "BackendChoice": "_backend",
    "last_choice": "_backend",
    "AsyncResult": "_results",
    "IMapIterator": "_results",
    "MapResult": "_results",
    "TimeoutError": "_results",
    "cached": "_checkpoint",
    "CheckpointError": "_errors",
    "CpuReport": "_cpus",
    "cpu_count": "_cpus",
    "cpu_report": "_cpus",
    "RemoteTraceback": "_errors",
    "SerializationError": "_errors",
    "ShoalError": "_errors",
    "TaskTimeoutError": "_errors",
    "WorkerInitError": "_errors",
    "WorkerLostError": "_errors",
    "WorkerStartError": "_errors",
    "Trace": "_trace",
    "TraceFormatError": "_trace",
    "report": "_report",
    "Lock": "_sync",
    "Value": "_sync",
    "Queue": "_queue",
    "Process": "_process",
}

# `map` is left out: `from shoal import *` must not replace the builtin.
__all__ = [
    "AsyncResult",
    "BackendChoice",
    "CheckpointError",
    "CpuReport",
    "IMapIterator",
    "Lock",
    "LoopResult",
    "MapResult",
    "Pool",
    "Process",
    "Queue",
    "RemoteTraceback",
    "SerializationError",
    "ShoalError",
    "TaskTimeoutError",
    "ThreadPool",
    "TimeoutError",
    "Trace",
    "TraceFormatError",
    "Value",
    "WorkerInitError",
    "WorkerLostError",
    "WorkerStartError",
    "cached",
    "cpu_count",
    "cpu_report",
    "last_choice",
    "num_workers",
    "parallel_for",
    "parallel_reduce",
    "report",
    "shared",
    "worker_id",
]


def __getattr__(name: str):
    if name == "shared":  # the submodule of shared arrays
        return __import__(f"{__name__}.shared", fromlist=["zeros"])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    # __import__ rather than importlib, which a worker would pay to import.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | {"shared"})


if TYPE_CHECKING:
    from . import shared
    from ._backend import BackendChoice, last_choice
    from ._backend import map as map  # noqa: A004 - re-exported, not in __all__
    from ._checkpoint import cached
    from ._cpus import CpuReport, cpu_count, cpu_report
    from ._errors import (
        CheckpointError,
        RemoteTraceback,
        SerializationError,
        ShoalError,
        TaskTimeoutError,
        WorkerInitError,
        WorkerLostError,
        WorkerStartError,
    )
    from ._identity import num_workers, worker_id
    from ._loops import LoopResult, parallel_for, parallel_reduce
    from ._pool import Pool
    from ._process import Process
    from ._queue import Queue
    from ._report import report
    from ._results import AsyncResult, IMapIterator, MapResult, TimeoutError  # noqa: A004
    from ._sync import Lock, Value
    from ._threadpool import ThreadPool
    from ._trace import Trace, TraceFormatError
