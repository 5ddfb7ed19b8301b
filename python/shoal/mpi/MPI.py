"""shoal's ``MPI``: mpi4py's names on shoal's own transport.

    from shoal import MPI          # mpi4py's MPI under mpiexec/srun, this otherwise
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

Under ``shoal run -n N prog.py`` (or ``shoal.spmd``) the ranks are
processes on this machine that pass messages through shared memory. A
program started on its own (``python prog.py``) is a world of one rank.
"""

from __future__ import annotations

import socket as _socket
import time as _time

from . import runtime as _runtime
from .comm import COMM_NULL, Comm, Intracomm
from .constants import (
    ANY_SOURCE,
    ANY_TAG,
    CONGRUENT,
    ERR_ARG,
    ERR_BUFFER,
    ERR_COMM,
    ERR_COUNT,
    ERR_GROUP,
    ERR_INTERN,
    ERR_OP,
    ERR_OTHER,
    ERR_RANK,
    ERR_REQUEST,
    ERR_ROOT,
    ERR_TAG,
    ERR_TRUNCATE,
    ERR_TYPE,
    ERR_UNKNOWN,
    IDENT,
    IN_PLACE,
    PROC_NULL,
    ROOT,
    SIMILAR,
    SUCCESS,
    TAG_UB,
    THREAD_FUNNELED,
    THREAD_MULTIPLE,
    THREAD_SERIALIZED,
    THREAD_SINGLE,
    UNDEFINED,
    UNEQUAL,
)
from .datatypes import (
    BOOL,
    BYTE,
    C_BOOL,
    C_COMPLEX,
    C_DOUBLE_COMPLEX,
    C_FLOAT_COMPLEX,
    CHAR,
    COMPLEX,
    DATATYPE_NULL,
    DOUBLE,
    DOUBLE_COMPLEX,
    DOUBLE_INT,
    FLOAT,
    FLOAT_INT,
    INT,
    INT8_T,
    INT16_T,
    INT32_T,
    INT64_T,
    LONG,
    LONG_DOUBLE,
    LONG_DOUBLE_INT,
    LONG_INT,
    LONG_LONG,
    PACKED,
    SHORT,
    SHORT_INT,
    SIGNED_CHAR,
    TWOINT,
    UINT8_T,
    UINT16_T,
    UINT32_T,
    UINT64_T,
    UNSIGNED,
    UNSIGNED_CHAR,
    UNSIGNED_INT,
    UNSIGNED_LONG,
    UNSIGNED_LONG_LONG,
    UNSIGNED_SHORT,
    WCHAR,
    Datatype,
)
from .exception import Get_error_string
from .exception import MPIError as Exception  # noqa: A004 - mpi4py's name
from .ops import (
    BAND,
    BOR,
    BXOR,
    LAND,
    LOR,
    LXOR,
    MAX,
    MAXLOC,
    MIN,
    MINLOC,
    NO_OP,
    OP_NULL,
    PROD,
    REPLACE,
    SUM,
    Op,
)
from .request import Request
from .status import Status

#: A request that is always complete.
REQUEST_NULL = None

_world: Comm | None = None
_self: Comm | None = None


def __getattr__(name: str):
    global _world, _self
    if name == "COMM_WORLD":
        if _world is None:
            ep = _runtime.endpoint()
            _world = Comm(ep, 0, range(ep.size), "MPI_COMM_WORLD")
        return _world
    if name == "COMM_SELF":
        if _self is None:
            ep = _runtime.endpoint()
            _self = Comm(ep, 2, [ep.rank], "MPI_COMM_SELF")
        return _self
    raise AttributeError(f"shoal's MPI has no attribute {name!r}")


def Wtime() -> float:
    """Seconds since an arbitrary moment (for timing)."""
    return _time.perf_counter()


def Wtick() -> float:
    """The resolution of ``Wtime``, in seconds."""
    return _time.get_clock_info("perf_counter").resolution


def Get_processor_name() -> str:
    return _socket.gethostname()


def Get_version() -> tuple[int, int]:
    """The MPI standard whose calls shoal follows (in part)."""
    return (3, 1)


def Get_library_version() -> str:
    from .. import __version__

    return f"shoal {__version__} (shared memory, one machine)"


def Init() -> None:
    """Nothing to do: shoal's MPI is ready when imported."""


def Init_thread(required: int = THREAD_MULTIPLE) -> int:
    return THREAD_MULTIPLE


def Query_thread() -> int:
    return THREAD_MULTIPLE


def Is_thread_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def Is_initialized() -> bool:
    return True


def Is_finalized() -> bool:
    return _runtime.is_finalized()


def Finalize() -> None:
    """The exit barrier, now (it also runs at exit)."""
    _runtime.finalize()


def Get_error_class(errorcode: int) -> int:
    return errorcode


__all__ = [  # noqa: F822 - COMM_WORLD and COMM_SELF come from __getattr__
    "ANY_SOURCE",
    "ANY_TAG",
    "BAND",
    "BOOL",
    "BOR",
    "BXOR",
    "BYTE",
    "CHAR",
    "COMM_NULL",
    "COMM_SELF",
    "COMM_WORLD",
    "COMPLEX",
    "CONGRUENT",
    "C_BOOL",
    "C_COMPLEX",
    "C_DOUBLE_COMPLEX",
    "C_FLOAT_COMPLEX",
    "Comm",
    "DATATYPE_NULL",
    "DOUBLE",
    "DOUBLE_COMPLEX",
    "DOUBLE_INT",
    "Datatype",
    "ERR_ARG",
    "ERR_BUFFER",
    "ERR_COMM",
    "ERR_COUNT",
    "ERR_GROUP",
    "ERR_INTERN",
    "ERR_OP",
    "ERR_OTHER",
    "ERR_RANK",
    "ERR_REQUEST",
    "ERR_ROOT",
    "ERR_TAG",
    "ERR_TRUNCATE",
    "ERR_TYPE",
    "ERR_UNKNOWN",
    "Exception",
    "FLOAT",
    "FLOAT_INT",
    "Finalize",
    "Get_error_class",
    "Get_error_string",
    "Get_library_version",
    "Get_processor_name",
    "Get_version",
    "IDENT",
    "INT",
    "INT16_T",
    "INT32_T",
    "INT64_T",
    "INT8_T",
    "IN_PLACE",
    "Init",
    "Init_thread",
    "Intracomm",
    "Is_finalized",
    "Is_initialized",
    "Is_thread_main",
    "LAND",
    "LONG",
    "LONG_DOUBLE",
    "LONG_DOUBLE_INT",
    "LONG_INT",
    "LONG_LONG",
    "LOR",
    "LXOR",
    "MAX",
    "MAXLOC",
    "MIN",
    "MINLOC",
    "NO_OP",
    "OP_NULL",
    "Op",
    "PACKED",
    "PROC_NULL",
    "PROD",
    "Query_thread",
    "REPLACE",
    "REQUEST_NULL",
    "ROOT",
    "Request",
    "SHORT",
    "SHORT_INT",
    "SIGNED_CHAR",
    "SIMILAR",
    "SUCCESS",
    "SUM",
    "Status",
    "TAG_UB",
    "THREAD_FUNNELED",
    "THREAD_MULTIPLE",
    "THREAD_SERIALIZED",
    "THREAD_SINGLE",
    "TWOINT",
    "UINT16_T",
    "UINT32_T",
    "UINT64_T",
    "UINT8_T",
    "UNDEFINED",
    "UNEQUAL",
    "UNSIGNED",
    "UNSIGNED_CHAR",
    "UNSIGNED_INT",
    "UNSIGNED_LONG",
    "UNSIGNED_LONG_LONG",
    "UNSIGNED_SHORT",
    "WCHAR",
    "Wtick",
    "Wtime",
]
