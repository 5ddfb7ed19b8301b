"""Reduction operations: ``MPI.SUM``, ``PROD``, ``MAX``, ``MIN``,
``LAND``, ``LOR``, ``LXOR``, ``BAND``, ``BOR``, ``BXOR``, ``MAXLOC``,
``MINLOC``, ``REPLACE``, ``NO_OP``, and ``Op.Create(function, commute)``.

Lower case, an op combines two Python objects: ``MPI.SUM(x, y)`` is
``x + y`` (numpy arrays combine element-wise), ``MAXLOC`` takes
``(value, index)`` pairs and keeps the larger value (the smaller index on
ties), and a created op calls ``function(x, y)``. Upper case, an op
combines two numpy arrays in place, ``inout = in op inout``, with a numpy
ufunc, or by calling ``function(inbuf, inoutbuf, datatype)`` as MPI does.
Values are always combined in rank order, so an op need not commute.
"""

from __future__ import annotations

import sys


def _is_array(x) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(x, numpy.ndarray)


def _max(x, y):
    if _is_array(x) or _is_array(y):
        import numpy

        return numpy.maximum(x, y)
    return y if y > x else x


def _min(x, y):
    if _is_array(x) or _is_array(y):
        import numpy

        return numpy.minimum(x, y)
    return y if y < x else x


def _logical(name: str, fn):
    def combine(x, y):
        if _is_array(x) or _is_array(y):
            import numpy

            return getattr(numpy, name)(x, y)
        return fn(x, y)

    return combine


def _maxloc(x, y):
    (xv, xi), (yv, yi) = x, y
    if yv > xv:
        return (yv, yi)
    if yv == xv:
        return (xv, min(xi, yi))
    return (xv, xi)


def _minloc(x, y):
    (xv, xi), (yv, yi) = x, y
    if yv < xv:
        return (yv, yi)
    if yv == xv:
        return (xv, min(xi, yi))
    return (xv, xi)


def _takes_three(function) -> bool:
    """Whether `function` can be called with three positional arguments."""
    import inspect

    try:
        sig = inspect.signature(function)
    except (TypeError, ValueError):
        return True  # a builtin: assume MPI's form
    try:
        sig.bind(None, None, None)
    except TypeError:
        return False
    return True


def _loc_arrays(left, right, better) -> None:
    """``right = left op right`` for arrays of (value, index) pairs."""
    lv, li = left[left.dtype.names[0]], left[left.dtype.names[1]]
    rv, ri = right[right.dtype.names[0]], right[right.dtype.names[1]]
    take = better(lv, rv) | ((lv == rv) & (li < ri))
    right[take] = left[take]


class Op:
    """A reduction operation. Call it on two values (lower case); give it
    to ``reduce``, ``allreduce``, ``Reduce``, ``Allreduce``, ``scan``."""

    #: _buffers: a user function that takes a third (datatype) argument.
    __slots__ = ("_name", "_fn", "_ufunc", "_commute", "_user", "_buffers")

    def __init__(self, name: str, fn, ufunc: str | None, commute: bool = True) -> None:
        self._name = name
        self._fn = fn
        self._ufunc = ufunc
        self._commute = commute
        self._user = None
        self._buffers = None

    @classmethod
    def Create(cls, function, commute: bool = False) -> Op:
        """A user operation. Lower case it is called ``function(x, y,
        None)`` as mpi4py calls it (or ``function(x, y)`` if it takes two
        arguments) and returns the result; upper case ``function(inbuf,
        inoutbuf, datatype)``, and must leave ``inbuf op inoutbuf`` in
        ``inoutbuf``."""
        if not callable(function):
            raise TypeError(f"Op.Create needs a function, not {type(function).__name__}")
        op = cls(getattr(function, "__name__", "user op"), None, None, bool(commute))
        op._user = function
        op._buffers = _takes_three(function)
        return op

    def __call__(self, x, y):
        if self._user is not None:
            return self._user(x, y, None) if self._buffers else self._user(x, y)
        return self._fn(x, y)

    def Is_commutative(self) -> bool:
        return self._commute

    @property
    def is_commutative(self) -> bool:
        return self._commute

    @property
    def is_predefined(self) -> bool:
        return self._user is None

    def Free(self) -> None:
        """Nothing to free."""

    def combine_into(self, left, right, datatype=None) -> None:
        """``right[:] = left op right`` for numpy arrays of one dtype."""
        if self._user is not None:
            from .datatypes import from_dtype

            dt = datatype if datatype is not None else from_dtype(right.dtype)
            self._user(memoryview(left), memoryview(right), dt)
            return
        import numpy

        if self._name in ("MAXLOC", "MINLOC"):
            if right.dtype.names is None or len(right.dtype.names) != 2:
                raise TypeError(
                    f"MPI.{self._name} upper case needs (value, index) pairs: a buffer of "
                    "MPI.DOUBLE_INT (or FLOAT_INT, LONG_INT, TWOINT) structures"
                )
            _loc_arrays(left, right, numpy.greater if self._name == "MAXLOC" else numpy.less)
        elif self._name == "REPLACE":  # y: the right operand stays
            return
        elif self._name == "NO_OP":  # x: the left operand
            right[...] = left
        else:
            try:
                getattr(numpy, self._ufunc)(left, right, out=right)
            except TypeError as exc:
                raise TypeError(
                    f"MPI.{self._name} cannot combine {right.dtype} values: {exc}"
                ) from None

    def __repr__(self) -> str:
        return f"<shoal MPI.{self._name}>" if self._user is None else f"<shoal Op {self._name}>"

    def __reduce__(self):
        if self._user is None:
            return self._name
        return (_rebuild_user, (self._user, self._commute))


def _rebuild_user(function, commute):
    return Op.Create(function, commute)


SUM = Op("SUM", lambda x, y: x + y, "add")
PROD = Op("PROD", lambda x, y: x * y, "multiply")
MAX = Op("MAX", _max, "maximum")
MIN = Op("MIN", _min, "minimum")
LAND = Op("LAND", _logical("logical_and", lambda x, y: x and y), "logical_and")
LOR = Op("LOR", _logical("logical_or", lambda x, y: x or y), "logical_or")
LXOR = Op("LXOR", _logical("logical_xor", lambda x, y: (x or y) and not (x and y)), "logical_xor")
BAND = Op("BAND", lambda x, y: x & y, "bitwise_and")
BOR = Op("BOR", lambda x, y: x | y, "bitwise_or")
BXOR = Op("BXOR", lambda x, y: x ^ y, "bitwise_xor")
MAXLOC = Op("MAXLOC", _maxloc, None)
MINLOC = Op("MINLOC", _minloc, None)
REPLACE = Op("REPLACE", lambda x, y: y, None, commute=False)
NO_OP = Op("NO_OP", lambda x, y: x, None, commute=False)
OP_NULL = Op("OP_NULL", None, None)
