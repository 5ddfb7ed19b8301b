"""MPI datatypes, as numpy dtypes: ``MPI.DOUBLE`` is float64, and so on.

An upper-case call takes a buffer alone (its numpy dtype says the type),
or ``[buffer, datatype]``; the datatype must match what the buffer holds
(``MPI.BYTE`` reads any buffer as bytes). Every message carries a code of
its dtype, so a receive into a buffer of another type is refused.
numpy is imported on first use only."""

from __future__ import annotations

import zlib

_PAIR = {  # MPI's C structs {value; int}, laid out as C lays them out
    "FLOAT_INT": "f4",
    "DOUBLE_INT": "f8",
    "LONG_INT": "i8",
    "TWOINT": "i4",
    "SHORT_INT": "i2",
    "LONG_DOUBLE_INT": "g",
}


class Datatype:
    """``Get_size()``, ``Get_extent()``, ``Get_name()``, ``size``,
    ``extent``; ``dtype`` is the numpy dtype."""

    __slots__ = ("_name", "_spec", "_dtype")

    def __init__(self, name: str, spec: str | None) -> None:
        self._name = name
        self._spec = spec
        self._dtype = None

    @property
    def dtype(self):
        if self._dtype is None:
            import numpy

            if self._spec is None:
                raise TypeError(f"MPI.{self._name} has no values")
            if self._name in _PAIR:
                fields = [("value", _PAIR[self._name]), ("index", "i4")]
                self._dtype = numpy.dtype(fields, align=True)
            else:
                self._dtype = numpy.dtype(self._spec)
        return self._dtype

    def Get_size(self) -> int:
        if self._name in _PAIR:
            d = self.dtype
            return d.fields["value"][0].itemsize + 4
        return self.dtype.itemsize

    def Get_extent(self) -> tuple[int, int]:
        return (0, self.dtype.itemsize)

    def Get_name(self) -> str:
        return f"MPI_{self._name}"

    @property
    def size(self) -> int:
        return self.Get_size()

    @property
    def extent(self) -> int:
        return self.dtype.itemsize

    @property
    def name(self) -> str:
        return self.Get_name()

    @property
    def is_bytes(self) -> bool:
        return self._name in ("BYTE", "PACKED")

    def Free(self) -> None:
        """Predefined datatypes are never freed."""

    def __repr__(self) -> str:
        return f"<shoal MPI.{self._name}>"

    def __reduce__(self):
        return self._name


def _make(name: str, spec: str | None) -> Datatype:
    return Datatype(name, spec)


DATATYPE_NULL = _make("DATATYPE_NULL", None)
BYTE = _make("BYTE", "u1")
PACKED = _make("PACKED", "u1")
CHAR = _make("CHAR", "S1")
WCHAR = _make("WCHAR", "U1")
SIGNED_CHAR = _make("SIGNED_CHAR", "i1")
UNSIGNED_CHAR = _make("UNSIGNED_CHAR", "u1")
SHORT = _make("SHORT", "i2")
UNSIGNED_SHORT = _make("UNSIGNED_SHORT", "u2")
INT = _make("INT", "i4")
UNSIGNED = _make("UNSIGNED", "u4")
UNSIGNED_INT = UNSIGNED
LONG = _make("LONG", "i8")
UNSIGNED_LONG = _make("UNSIGNED_LONG", "u8")
LONG_LONG = _make("LONG_LONG", "i8")
UNSIGNED_LONG_LONG = _make("UNSIGNED_LONG_LONG", "u8")
FLOAT = _make("FLOAT", "f4")
DOUBLE = _make("DOUBLE", "f8")
LONG_DOUBLE = _make("LONG_DOUBLE", "g")
BOOL = _make("BOOL", "?")
C_BOOL = BOOL
INT8_T = _make("INT8_T", "i1")
INT16_T = _make("INT16_T", "i2")
INT32_T = _make("INT32_T", "i4")
INT64_T = _make("INT64_T", "i8")
UINT8_T = _make("UINT8_T", "u1")
UINT16_T = _make("UINT16_T", "u2")
UINT32_T = _make("UINT32_T", "u4")
UINT64_T = _make("UINT64_T", "u8")
C_FLOAT_COMPLEX = _make("C_FLOAT_COMPLEX", "c8")
C_DOUBLE_COMPLEX = _make("C_DOUBLE_COMPLEX", "c16")
C_COMPLEX = C_FLOAT_COMPLEX
COMPLEX = C_DOUBLE_COMPLEX
DOUBLE_COMPLEX = C_DOUBLE_COMPLEX
FLOAT_INT = _make("FLOAT_INT", "pair")
DOUBLE_INT = _make("DOUBLE_INT", "pair")
LONG_INT = _make("LONG_INT", "pair")
TWOINT = _make("TWOINT", "pair")
SHORT_INT = _make("SHORT_INT", "pair")
LONG_DOUBLE_INT = _make("LONG_DOUBLE_INT", "pair")

ALL = [v for v in list(globals().values()) if isinstance(v, Datatype)]

_codes: dict = {}
_names: dict[int, str] = {}


def code(dtype) -> int:
    """A nonzero 32-bit code of a numpy dtype, the same in every process."""
    c = _codes.get(dtype)
    if c is None:
        c = (zlib.crc32(repr(dtype.descr).encode()) & 0x7FFFFFFF) | 1
        _codes[dtype] = c
        _names[c] = describe(dtype)
    return c


def describe(dtype) -> str:
    """'float64', or for MPI's pair types 'DOUBLE_INT'."""
    if dtype.names == ("value", "index"):
        for name, spec in _PAIR.items():
            import numpy

            if dtype.fields["value"][0] == numpy.dtype(spec):
                return name
    return str(dtype)


def name_of(c: int) -> str:
    """The dtype behind a code, if any dtype seen here has it."""
    if c not in _names:
        for dt in ALL:
            if dt._spec is not None:
                code(dt.dtype)
    return _names.get(c, "another type")


def from_dtype(dtype) -> Datatype | None:
    """The predefined datatype of a numpy dtype, if there is one."""
    for dt in ALL:
        if dt._spec is not None and not dt.is_bytes and dt.dtype == dtype:
            return dt
    return None
