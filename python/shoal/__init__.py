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
    "ProcessPoolExecutor",
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


# ------------------------------------------------------------------- joblib
# joblib's backend "shoal" is registered once joblib is imported: now if it
# already is, else when it is (without importing it: a worker, and a program
# that never uses joblib, must not pay for it).


def _joblib_backend(**kwargs):
    """joblib's factory for the backend "shoal" (imported on first use, as
    ``__getattr__`` imports the public names)."""
    module = __import__(f"{__name__}.integrations.joblib", fromlist=["ShoalBackend"])
    return module.ShoalBackend(**kwargs)


def _register_with_joblib() -> None:
    try:
        from joblib import register_parallel_backend

        register_parallel_backend("shoal", _joblib_backend)
    except Exception as exc:  # noqa: BLE001 - an odd joblib must not break an import
        import warnings

        warnings.warn(f"shoal could not register its joblib backend: {exc!r}", stacklevel=2)


class _JoblibWatcher:
    """An import hook that finds nothing itself: when joblib is imported, it
    lets the other finders find it and registers the backend once joblib's
    module has run. It removes itself on first use."""

    def find_spec(self, name, path=None, target=None):
        if name != "joblib":
            return None
        import sys

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec

        def run_then_register(module) -> None:
            run(module)
            _register_with_joblib()

        try:
            loader.exec_module = run_then_register
        except AttributeError:  # a loader that can't be wrapped: register() by hand
            pass
        return spec


def _watch_for_joblib() -> None:
    import sys

    if getattr(sys.modules.get("joblib"), "register_parallel_backend", None) is not None:
        _register_with_joblib()
    elif not any(type(f).__name__ == "_JoblibWatcher" for f in sys.meta_path):
        sys.meta_path.insert(0, _JoblibWatcher())


_watch_for_joblib()


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
    from .pool.executor import ProcessPoolExecutor, ThreadPoolExecutor
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
