"""What upper-case calls accept as a buffer, checked: a numpy array (or
any object with the buffer protocol) alone, ``[buf, datatype]``,
``[buf, count, datatype]`` or ``[buf, (count, displacement), datatype]``.

The result is a :class:`Buf`: a 1-D numpy view of exactly the elements the
message covers, in memory order, with the dtype's wire code. Bad buffers
get an ``MPI.Exception`` (or ``TypeError``) that says what was wrong and
what to do.
"""

from __future__ import annotations

from . import datatypes
from .constants import ERR_BUFFER, ERR_COUNT, ERR_TYPE
from .exception import MPIError

#: Wire codes of the dtypes seen here that may travel (not object arrays):
#: a numpy array whose dtype is in it goes to the engine as it is.
fast_codes: dict = {}
#: numpy's ndarray, once a buffer has been checked here (numpy is imported
#: on first use only).
ndarray: type | None = None


class Buf:
    __slots__ = ("array", "count", "dtype", "code")

    def __init__(self, array, dtype) -> None:
        self.array = array
        self.count = array.shape[0]
        self.dtype = dtype
        self.code = datatypes.code(dtype)

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def describe(self) -> str:
        return f"{self.count} x {datatypes.describe(self.dtype)} ({self.nbytes} bytes)"


def _as_array(obj, call: str, writable: bool):
    global ndarray
    import numpy

    ndarray = numpy.ndarray
    if isinstance(obj, numpy.ndarray):
        array = obj
    else:
        try:
            view = memoryview(obj)
        except TypeError:
            raise TypeError(
                f"{call} needs a buffer (a numpy array, bytearray, ...), not "
                f"{type(obj).__name__}; for Python objects use the lower-case "
                f"{call.lower()}"
            ) from None
        array = numpy.asarray(view)
        if array.dtype.kind == "V" and array.dtype.names is None:  # format numpy can't read
            array = numpy.frombuffer(view.cast("B"), numpy.uint8)
    if array.dtype.hasobject:
        raise TypeError(
            f"{call}: an array of Python objects is not a buffer; use the lower-case {call.lower()}"
        )
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        raise MPIError(
            ERR_BUFFER,
            f"{call}: the buffer is not contiguous (a strided view); pass "
            "numpy.ascontiguousarray(a), and copy a received one back",
        )
    if writable and not array.flags.writeable:
        raise MPIError(ERR_BUFFER, f"{call}: the buffer to receive into is read-only")
    return array.reshape(-1, order="A") if array.ndim != 1 else array


def _datatype(spec, call: str):
    if isinstance(spec, datatypes.Datatype):
        return spec
    import numpy

    try:
        return numpy.dtype(spec)
    except TypeError:
        raise TypeError(f"{call}: {spec!r} is not an MPI datatype (such as MPI.DOUBLE)") from None


def message(spec, call: str, writable: bool = False) -> Buf:
    """The buffer `spec` describes, checked."""
    count = displ = None
    datatype = None
    if isinstance(spec, (list, tuple)):
        if len(spec) == 2:
            obj, datatype = spec
        elif len(spec) == 3:
            obj, counts, datatype = spec
            if isinstance(counts, (list, tuple)):
                if len(counts) != 2:
                    raise TypeError(f"{call}: give (count, displacement), not {counts!r}")
                count, displ = counts
            else:
                count = counts
        else:
            raise TypeError(
                f"{call}: a buffer is buf, [buf, datatype] or [buf, count, datatype], "
                f"not a sequence of {len(spec)} items"
            )
    else:
        obj = spec
    array = _as_array(obj, call, writable)
    if datatype is not None:
        dt = _datatype(datatype, call)
        if isinstance(dt, datatypes.Datatype) and dt.is_bytes:
            array = array.view("u1")
        else:
            want = dt.dtype if isinstance(dt, datatypes.Datatype) else dt
            if array.dtype != want:
                name = dt.Get_name() if isinstance(dt, datatypes.Datatype) else str(want)
                raise MPIError(
                    ERR_TYPE,
                    f"{call}: the buffer holds {datatypes.describe(array.dtype)} values but "
                    f"the datatype given is {name} ({datatypes.describe(want)}); give the "
                    "buffer's own type, or MPI.BYTE to send its bytes",
                )
    if not array.dtype.hasobject:
        fast_codes.setdefault(array.dtype, datatypes.code(array.dtype))
    n = array.shape[0]
    start = 0
    if displ is not None:
        start = int(displ)
        if not 0 <= start <= n:
            raise MPIError(ERR_COUNT, f"{call}: displacement {start} is outside the buffer of {n}")
    if count is not None:
        count = int(count)
        if count < 0 or start + count > n:
            raise MPIError(
                ERR_COUNT,
                f"{call}: count {count} (from element {start}) does not fit the buffer of "
                f"{n} elements",
            )
        array = array[start : start + count]
    elif start:
        array = array[start:]
    return Buf(array, array.dtype)
