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
