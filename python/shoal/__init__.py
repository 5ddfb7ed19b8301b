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
    "Pool": "pool.pool",
    "ThreadPool": "pool.threadpool",
    "ProcessPoolExecutor": "pool.executor",
    "ThreadPoolExecutor": "pool.executor",
    "worker_id": "worker.identity",
    "num_workers": "worker.identity",
    "parallel_for": "parallel.loops",
    "parallel_reduce": "parallel.loops",
    "LoopResult": "parallel.loops",
    "map": "parallel.auto",
    "BackendChoice": "parallel.auto",
    "last_choice": "parallel.auto",
    "AsyncResult": "pool.results",
    "IMapIterator": "pool.results",
    "MapResult": "pool.results",
    "TimeoutError": "pool.results",
    "cached": "checkpoint.cached",
    "CheckpointError": "errors",
    "CheckpointKeyWarning": "errors",
    "CpuReport": "cpus",
    "cpu_count": "cpus",
    "cpu_report": "cpus",
    "RemoteTraceback": "pool.outcome",
    "SerializationError": "errors",
    "ShoalError": "errors",
    "TaskTimeoutError": "errors",
    "WorkerInitError": "errors",
    "WorkerLostError": "errors",
    "WorkerStartError": "errors",
    "Trace": "trace.trace",
    "TraceFormatError": "trace.trace",
    "report": "trace.report",
    "Lock": "sync.primitives",
    "Value": "sync.primitives",
    "Queue": "sync.queue",
    "Process": "sync.process",
}

# `map` is left out: `from shoal import *` must not replace the builtin.
__all__ = [
    "AsyncResult",
    "BackendChoice",
    "CheckpointError",
    "CheckpointKeyWarning",
    "CpuReport",
    "IMapIterator",
    "Lock",
    "LoopResult",
    "MapResult",
    "Pool",
    "Process",
    "ProcessPoolExecutor",
    "Queue",
    "RemoteTraceback",
    "SerializationError",
    "ShoalError",
    "TaskTimeoutError",
    "ThreadPool",
    "ThreadPoolExecutor",
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
    from .checkpoint.cached import cached
    from .cpus import CpuReport, cpu_count, cpu_report
    from .errors import (
        CheckpointError,
        CheckpointKeyWarning,
        SerializationError,
        ShoalError,
        TaskTimeoutError,
        WorkerInitError,
        WorkerLostError,
        WorkerStartError,
    )
    from .parallel.auto import BackendChoice, last_choice
    from .parallel.auto import map as map  # noqa: A004 - re-exported, not in __all__
    from .parallel.loops import LoopResult, parallel_for, parallel_reduce
    from .pool.executor import ProcessPoolExecutor, ThreadPoolExecutor
    from .pool.outcome import RemoteTraceback
    from .pool.pool import Pool
    from .pool.results import AsyncResult, IMapIterator, MapResult, TimeoutError  # noqa: A004
    from .pool.threadpool import ThreadPool
    from .sync.primitives import Lock, Value
    from .sync.process import Process
    from .sync.queue import Queue
    from .trace.report import report
    from .trace.trace import Trace, TraceFormatError
    from .worker.identity import num_workers, worker_id
