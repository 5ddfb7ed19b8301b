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
    "RLock": "sync.rlock",
    "Semaphore": "sync.semaphore",
    "BoundedSemaphore": "sync.semaphore",
    "Event": "sync.event",
    "Condition": "sync.condition",
    "Barrier": "sync.barrier",
    "BrokenBarrierError": "sync.barrier",
    "Value": "sync.sharedctypes",
    "Array": "sync.sharedctypes",
    "RawValue": "sync.sharedctypes",
    "RawArray": "sync.sharedctypes",
    "Queue": "sync.queue",
    "JoinableQueue": "sync.queue",
    "SimpleQueue": "sync.queue",
    "Pipe": "sync.pipe",
    "Process": "sync.process",
    "Manager": "sync.manager",
    "ManagerError": "errors",
    "get_context": "sync.context",
    "spmd": "mpi.launcher",
    "RankLostError": "errors",
    "DeadlockError": "errors",
    "CollectiveMismatchError": "errors",
}

# `map` and `io` are left out: `from shoal import *` must not replace the
# builtin or the standard library's module; `MPI` too: under mpiexec it
# imports mpi4py.
__all__ = [
    "Array",
    "AsyncResult",
    "BackendChoice",
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "CheckpointError",
    "CheckpointKeyWarning",
    "CollectiveMismatchError",
    "Condition",
    "CpuReport",
    "DeadlockError",
    "Event",
    "IMapIterator",
    "JoinableQueue",
    "Lock",
    "LoopResult",
    "Manager",
    "ManagerError",
    "MapResult",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "RankLostError",
    "RawArray",
    "RawValue",
    "RemoteTraceback",
    "Semaphore",
    "SerializationError",
    "ShoalError",
    "SimpleQueue",
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
    "get_context",
    "last_choice",
    "num_workers",
    "parallel_for",
    "parallel_reduce",
    "report",
    "shared",
    "spmd",
    "worker_id",
]


def __getattr__(name: str):
    if name in ("shared", "io"):  # submodules: shared arrays, chunk references
        return __import__(f"{__name__}.{name}", fromlist=["_"])
    if name == "MPI":  # mpi4py's under mpiexec/srun, shoal's own otherwise
        value = __import__(f"{__name__}.mpi.detect", fromlist=["mpi_module"]).mpi_module()
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    # __import__ rather than importlib, which a worker would pay to import.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The public names, and the module's own dunders; not helpers such as
    # TYPE_CHECKING or the `annotations` future import.
    dunders = {n for n in globals() if n.startswith("__") and n.endswith("__")}
    return sorted(dunders | set(_EXPORTS) | {"shared", "io", "MPI"})


if TYPE_CHECKING:
    from . import io as io  # shoal.io, not in __all__
    from . import shared
    from .checkpoint.cached import cached
    from .cpus import CpuReport, cpu_count, cpu_report
    from .errors import (
        CheckpointError,
        CheckpointKeyWarning,
        CollectiveMismatchError,
        DeadlockError,
        ManagerError,
        RankLostError,
        SerializationError,
        ShoalError,
        TaskTimeoutError,
        WorkerInitError,
        WorkerLostError,
        WorkerStartError,
    )
    from .mpi import MPI as MPI  # not in __all__ (see above)
    from .mpi.launcher import spmd
    from .parallel.auto import BackendChoice, last_choice
    from .parallel.auto import map as map  # noqa: A004 - re-exported, not in __all__
    from .parallel.loops import LoopResult, parallel_for, parallel_reduce
    from .pool.outcome import RemoteTraceback
    from .pool.pool import Pool
    from .pool.results import AsyncResult, IMapIterator, MapResult, TimeoutError  # noqa: A004
    from .pool.threadpool import ThreadPool
    from .sync.barrier import Barrier, BrokenBarrierError
    from .sync.condition import Condition
    from .sync.context import get_context
    from .sync.event import Event
    from .sync.manager import Manager
    from .sync.pipe import Pipe
    from .sync.primitives import Lock
    from .sync.process import Process
    from .sync.queue import JoinableQueue, Queue, SimpleQueue
    from .sync.rlock import RLock
    from .sync.semaphore import BoundedSemaphore, Semaphore
    from .sync.sharedctypes import Array, RawArray, RawValue, Value
    from .trace.report import report
    from .trace.trace import Trace, TraceFormatError
    from .worker.identity import num_workers, worker_id
