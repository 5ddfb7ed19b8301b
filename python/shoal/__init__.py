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
    "AsyncResult": "_results",
    "IMapIterator": "_results",
    "MapResult": "_results",
    "TimeoutError": "_results",
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
    "Lock": "_sync",
    "Value": "_sync",
    "Queue": "_queue",
    "Process": "_process",
}

__all__ = [
    "AsyncResult",
    "CpuReport",
    "IMapIterator",
    "Lock",
    "MapResult",
    "Pool",
    "Process",
    "Queue",
    "RemoteTraceback",
    "SerializationError",
    "ShoalError",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerInitError",
    "WorkerLostError",
    "WorkerStartError",
    "cpu_count",
    "cpu_report",
    "shared",
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
    from ._cpus import CpuReport, cpu_count, cpu_report
    from ._errors import (
        RemoteTraceback,
        SerializationError,
        ShoalError,
        TaskTimeoutError,
        WorkerInitError,
        WorkerLostError,
        WorkerStartError,
    )
    from ._pool import Pool
    from ._process import Process
    from ._queue import Queue
    from ._results import AsyncResult, IMapIterator, MapResult, TimeoutError  # noqa: A004
    from ._sync import Lock, Value
