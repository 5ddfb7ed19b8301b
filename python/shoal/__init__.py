"""shoal: parallel computing for Python, with a Rust engine.

    import shoal
    with shoal.Pool() as pool:
        pool.map(f, xs)
"""

from ._cpus import CpuReport, cpu_count, cpu_report
from ._errors import (
    RemoteTraceback,
    SerializationError,
    ShoalError,
    TaskTimeoutError,
    TimeoutError,
    WorkerInitError,
    WorkerLostError,
    WorkerStartError,
)
from ._pool import Pool
from ._results import AsyncResult, IMapIterator, MapResult

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "CpuReport",
    "IMapIterator",
    "MapResult",
    "Pool",
    "RemoteTraceback",
    "SerializationError",
    "ShoalError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerInitError",
    "WorkerLostError",
    "WorkerStartError",
    "cpu_count",
    "cpu_report",
]
