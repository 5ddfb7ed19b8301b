"""``shoal.Value``, ``shoal.Array``, ``shoal.RawValue`` and
``shoal.RawArray``: numbers and arrays in shared memory, as
``multiprocessing``'s.

- ``RawValue(typecode_or_type, *args)`` and ``RawArray(typecode_or_type,
  size_or_initializer)`` are real ``ctypes`` objects laid over a memfd
  (``np.frombuffer(raw)`` sees the same memory), with no lock.
- ``Value(typecode_or_type, *args, lock=True)`` is a number with a lock:
  each read and each write of ``.value`` holds the lock (one atomic load
  or store in Rust), as multiprocessing's synchronized wrapper does. So
  ``v.value += 1`` is a locked read, then a locked write: another process
  can slip in between and an update is lost; ``with v.get_lock():
  v.value += 1`` cannot lose one. The lock is a ``shoal.RLock`` (re-entrant,
  so ``.value`` inside ``with v.get_lock():`` does not wait for itself);
  ``lock=`` may give a ``shoal.Lock`` or ``RLock`` instead, and
  ``lock=False`` returns a ``RawValue``.
- ``Array(typecode_or_type, size_or_initializer, lock=True)``: the same
  for an array: ``len``, indexing and slicing hold the lock; ``get_obj()``
  is the ctypes array; ``'c'`` arrays have ``.value`` and ``.raw``.

All of them travel to Pool tasks, ``shoal.Process``, queues, pipes and a
Manager's containers as handles to the same memory.
"""

from __future__ import annotations

from .. import _shoal
from .primitives import Lock
from .rlock import RLock
from .sharing import SHARED, SharedObject, new_segment, not_picklable

#: Typecodes of ``Value`` (and, with ``u``, of the raw kinds).
_TYPECODES = "bBhHiIlLqQfd?c"
_CTYPE_NAMES = {
    "b": "c_byte",
    "B": "c_ubyte",
    "h": "c_short",
    "H": "c_ushort",
    "i": "c_int",
    "I": "c_uint",
    "l": "c_long",
    "L": "c_ulong",
    "q": "c_longlong",
    "Q": "c_ulonglong",
    "f": "c_float",
    "d": "c_double",
    "?": "c_bool",
    "c": "c_char",
    "u": "c_wchar",
}
#: Where a Value's number lies in its segment: after its RLock, 8-aligned.
_VALUE_AT = 16


def _bad_typecode(what, kinds: str) -> TypeError:
    return TypeError(
        f"bad typecode {what!r}: use one of {', '.join(kinds)} or the matching ctypes type "
        "(e.g. ctypes.c_double)"
    )


def _ctypes():
    # Imported on first use: a worker that only unpickles a Value never pays for it.
    import ctypes

    return ctypes


def _ctype_of(typecode_or_type):
    """The ctypes type for a typecode or a ctypes type."""
    if isinstance(typecode_or_type, str):
        name = _CTYPE_NAMES.get(typecode_or_type) if len(typecode_or_type) == 1 else None
        if name is None:
            raise _bad_typecode(typecode_or_type, _CTYPE_NAMES)
        return getattr(_ctypes(), name)
    ctypes = _ctypes()
    if isinstance(typecode_or_type, type) and issubclass(
        typecode_or_type, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)
    ):
        return typecode_or_type
    raise _bad_typecode(typecode_or_type, _CTYPE_NAMES)


def _value_code(typecode_or_type) -> str:
    """The typecode a ``Value`` holds natively."""
    code = getattr(typecode_or_type, "_type_", typecode_or_type)
    if not isinstance(code, str) or len(code) != 1 or code not in _TYPECODES:
        raise _bad_typecode(typecode_or_type, _TYPECODES)
    return code


# ------------------------------------------------------------ raw ctypes


_shareable_types: dict = {}


def _shareable(ctype):
    """A subclass of ``ctype`` whose instances travel as handles to their
    shared memory (and refuse plain pickle), with ``ctype``'s name."""
    cls = _shareable_types.get(ctype)
    if cls is None:
        cls = type(
            ctype.__name__,
            (ctype,),
            {
                "_shoal_share_": _share_ctypes,
                "__reduce__": _refuse_raw,
                "__module__": __name__,
                "_shoal_base_": ctype,
            },
        )
        _shareable_types[ctype] = cls
    return cls


def _refuse_raw(self):
    raise not_picklable("RawValue or RawArray")


def _describe(ctype):
    """A picklable description of a ctypes type (array types are made on
    the fly, so they are described by their element type and length)."""
    ctypes = _ctypes()
    if issubclass(ctype, ctypes.Array):
        return ("array", _describe(ctype._type_), ctype._length_)
    return ("type", ctype)


def _undescribe(description):
    if description[0] == "array":
        return _undescribe(description[1]) * description[2]
    return description[1]


def _share_ctypes(obj, attach):
    _address, _nbytes, segment, offset = _shoal.locate(memoryview(obj).cast("B"))
    if segment is None:
        raise not_picklable("RawValue or RawArray")
    return (_rebuild_ctypes, attach(segment, SHARED), offset, _describe(obj._shoal_base_))


def _rebuild_ctypes(attachments, index: int, offset: int, description):
    return _shareable(_undescribe(description)).from_buffer(attachments[index], offset)


def _new_raw(ctype, segment=None, offset: int = 0):
    ctypes = _ctypes()
    if segment is None:
        segment = new_segment(max(1, ctypes.sizeof(ctype)))
    return _shareable(ctype).from_buffer(segment, offset)


def RawValue(typecode_or_type, *args):  # noqa: N802 - multiprocessing's name
    """A ctypes object in shared memory, without a lock."""
    obj = _new_raw(_ctype_of(typecode_or_type))
    if args:
        obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):  # noqa: N802 - multiprocessing's name
    """A ctypes array in shared memory, without a lock: of that many zeros
    (an int) or holding a copy of a sequence."""
    ctype = _ctype_of(typecode_or_type)
    if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
        if size_or_initializer < 0:
            raise ValueError(f"an array's size must be >= 0, got {size_or_initializer}")
        return _new_raw(ctype * size_or_initializer)
    items = list(size_or_initializer)
    array = _new_raw(ctype * len(items))
    array.__init__(*items)
    return array


# ------------------------------------------------------------ with a lock


def _lock_for(lock, segment) -> Lock | RLock:
    """The lock a Value or Array uses: a new RLock in ``segment`` for
    ``True``/``None``, or the shoal lock given."""
    if lock is True or lock is None:
        rlock = RLock.__new__(RLock)
        rlock._place(segment, 0)
        return rlock
    if isinstance(lock, (Lock, RLock)):
        return lock
    raise TypeError(f"lock must be True, False, None or a shoal.Lock or shoal.RLock, got {lock!r}")


def _lock_kind(lock) -> str:
    return "rlock" if isinstance(lock, RLock) else "lock"


class _Synchronized:
    """What a Value and an Array do with their lock (``self._lock``), as
    multiprocessing's synchronized wrappers: ``get_lock()``, ``acquire``,
    ``release``, ``with obj:``."""

    __slots__ = ()
    _lock: Lock | RLock

    def get_lock(self) -> Lock | RLock:
        return self._lock

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info) -> None:
        self._lock.__exit__(*exc_info)


class Value(_Synchronized, SharedObject):
    """``Value('i', 0)`` or ``Value(ctypes.c_double, 1.5)``: ``.value``,
    ``get_lock()``, ``get_obj()``, ``with v:`` (holds the lock)."""

    __slots__ = ("_code", "_lock", "_native")
    _what = "Value"

    def __new__(cls, *args, lock=True, **kwargs):
        if lock is False:
            return RawValue(*args)
        return super().__new__(cls)

    def __init__(self, typecode_or_type, *args, lock: bool | Lock | RLock | None = True) -> None:
        code = _value_code(typecode_or_type)
        segment = new_segment(_VALUE_AT + 8)
        self._restore(code, _lock_for(lock, segment))
        self._place(segment)
        if args:
            (self.value,) = args

    def _state(self) -> tuple:
        return (self._code, self._lock)

    def _restore(self, code: str, lock) -> None:
        self._code = code
        self._lock = lock

    def _bind(self) -> None:
        lock = self._lock
        self._native = _shoal.SharedValue(
            self._segment, self._offset + _VALUE_AT, self._code,
            lock._segment, lock._offset, _lock_kind(lock),
        )  # fmt: skip

    @property
    def value(self):
        return self._native.get()

    @value.setter
    def value(self, new) -> None:
        self._native.set(new)

    def get_obj(self):
        """The number as a ctypes object on the same memory (no lock)."""
        return _new_raw(_ctype_of(self._code), self._segment, self._offset + _VALUE_AT)

    def __repr__(self) -> str:
        return f"<shoal.Value({self._code!r}, {self.value!r})>"


class Array(_Synchronized):
    """``Array('d', 10)`` or ``Array('i', [1, 2, 3])``: ``len``, indexing
    and slicing (each under the lock), ``get_lock()``, ``get_obj()`` (the
    ctypes array: ``np.frombuffer(a.get_obj())`` shares its memory), ``with
    a:``; ``.value``/``.raw`` for ``'c'`` arrays."""

    __slots__ = ("_obj", "_lock")

    def __new__(cls, *args, lock=True, **kwargs):
        if lock is False:
            return RawArray(*args)
        return super().__new__(cls)

    def __init__(
        self, typecode_or_type, size_or_initializer, lock: bool | Lock | RLock | None = True
    ) -> None:
        ctype = _ctype_of(typecode_or_type)
        if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
            if size_or_initializer < 0:
                raise ValueError(f"an array's size must be >= 0, got {size_or_initializer}")
            items, n = None, size_or_initializer
        else:
            items = list(size_or_initializer)
            n = len(items)
        array_type = ctype * n
        segment = new_segment(_VALUE_AT + max(1, _ctypes().sizeof(array_type)))
        self._lock = _lock_for(lock, segment)
        self._obj = _new_raw(array_type, segment, _VALUE_AT)
        if items:
            self._obj.__init__(*items)

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index):
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index, value) -> None:
        with self._lock:
            self._obj[index] = value

    def __iter__(self):
        for i in range(len(self._obj)):
            yield self[i]

    @property
    def value(self):
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, new) -> None:
        with self._lock:
            self._obj.value = new

    @property
    def raw(self):
        with self._lock:
            return self._obj.raw

    @raw.setter
    def raw(self, new) -> None:
        with self._lock:
            self._obj.raw = new

    def get_obj(self):
        return self._obj

    def _shoal_share_(self, attach):
        return (_rebuild_array, self._obj, self._lock)

    def __reduce__(self):
        raise not_picklable("Array")

    def __repr__(self) -> str:
        return f"<shoal.Array({self._obj._type_.__name__}, {list(self._obj)!r})>"


def _rebuild_array(attachments, obj, lock) -> Array:
    array = Array.__new__(Array)
    array._obj = obj
    array._lock = lock
    return array
