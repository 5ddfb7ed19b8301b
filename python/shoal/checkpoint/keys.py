"""Checkpoint keys: what identifies a task's function (its code and what it
closes over) and its arguments (their pickle, arrays hashed in place)."""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable

from .. import _shoal
from ..errors import CheckpointKeyWarning, SerializationError
from ..wire.serialize import pickle as _pickle

KEY_LEN = _shoal.KEY_LEN

# Salts that keep map(f, [(1,)]) (f((1,))) and starmap(f, [(1,)]) (f(1))
# apart, and a cached call apart from both.
MAP, STARMAP, CALL = b"map", b"starmap", b"call"
# A map's chunk: its key is hashed from the chunk's pickle.
MAP_CHUNK, STARMAP_CHUNK = b"map-chunk", b"starmap-chunk"

_PICKLE_FAILS = (_pickle.PicklingError, TypeError, AttributeError)


def _pickled(obj: object, what: str) -> list:
    """``[pickle, *out_of_band_buffers]`` of ``obj``: the parts its key is
    hashed from."""
    buffers: list = []
    try:
        data = _pickle.dumps(obj, 5, buffer_callback=buffers.append)
    except _PICKLE_FAILS:
        import cloudpickle

        buffers.clear()
        try:
            data = cloudpickle.dumps(obj, 5, buffer_callback=buffers.append)
        except Exception as exc:
            raise SerializationError(
                f"cannot make a checkpoint key of {what}: {type(obj).__qualname__} "
                f"can't be pickled ({exc}); pass checkpoint_key= to key tasks yourself"
            ) from exc
    return [data, *(b.raw() for b in buffers)]


def key_payloads(items: list) -> tuple[list[bytes], bool]:
    """Per item, the bytes its key is hashed from; and whether these are also
    the items' plain pickles, fit to send to a worker as they are (no
    out-of-band buffers, no cloudpickle, nothing from ``__main__``)."""
    buffers: list = []
    try:
        payloads = [_pickle.dumps(x, 5, buffer_callback=buffers.append) for x in items]
    except _PICKLE_FAILS:
        buffers.append(None)  # take the careful path below
    if not buffers:
        return payloads, b"__main__" not in b"".join(payloads)
    # Some item has out-of-band buffers or needs cloudpickle: hash its parts
    # in place. b"B" + digest cannot equal a pickle (b"\x80...").
    payloads = []
    for x in items:
        parts = _pickled(x, "a task's arguments")
        payloads.append(parts[0] if len(parts) == 1 else b"B" + _shoal.digest(parts))
    return payloads, False


def task_keys(salt: bytes, items: list, key: Callable | None = None) -> bytes:
    """The keys of ``items`` (arguments, or ``key(item)`` when given),
    concatenated ``KEY_LEN`` bytes each."""
    if key is not None:
        items = [key(x) for x in items]
    return _shoal.task_keys(salt, key_payloads(items)[0])


def keys_at(keys: bytes, positions) -> bytes:
    """The keys of the items at ``positions`` (a list or a range), concatenated."""
    first, last = positions[0], positions[-1]
    if last - first == len(positions) - 1:  # a run: one slice
        return keys[first * KEY_LEN : (last + 1) * KEY_LEN]
    return b"".join([keys[p * KEY_LEN : (p + 1) * KEY_LEN] for p in positions])


def _const_text(value: object) -> str:
    """A code constant as text that is the same in every interpreter run
    (a frozenset's order depends on the process's string hash seed)."""
    if isinstance(value, frozenset):
        return "frozenset({" + ", ".join(sorted(_const_text(v) for v in value)) + "})"
    if isinstance(value, tuple):
        return "(" + ", ".join(_const_text(v) for v in value) + ",)"
    return repr(value)


def _describe_code(code: types.CodeType, parts: list, names: set) -> None:
    """Appends what identifies ``code`` and adds the names it reads (of
    globals and attributes) to ``names``."""
    # Not the file name or line numbers: moving a function is not editing it.
    parts += [
        code.co_code,
        code.co_exceptiontable,
        repr((code.co_names, code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode(),
    ]
    names.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _describe_code(const, parts, names)
        else:
            parts.append(_const_text(const).encode())


#: Values of globals that are part of a function's identity: plain data.
_PLAIN = (int, float, complex, str, bytes, bool, type(None))
#: Globals that are code or namespaces, not data: they do not count.
_NOT_DATA = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
    type,
)
_warned: set[tuple[str, str]] = set()


def _is_plain(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _describe_globals(fn: types.FunctionType, names: set, parts: list) -> None:
    """Appends the values of the plain-data globals ``fn`` reads (``SCALE =
    100``), so changing one changes the function's identity. A global it
    reads that holds other data can't be part of it: say so, once."""
    namespace = fn.__globals__
    for name in sorted(names):
        if name not in namespace:
            continue  # an attribute name, a builtin, or not defined yet
        value = namespace[name]
        if _is_plain(value):
            parts.append(f"{name}={_const_text(value)}".encode())
        elif not isinstance(value, _NOT_DATA) and not callable(value):
            where = f"{fn.__module__}.{fn.__qualname__}"
            if (where, name) not in _warned:
                _warned.add((where, name))
                warnings.warn(
                    f"{where} reads the global {name!r}, a {type(value).__qualname__}: only "
                    "numbers, strings, bytes and tuples of them are part of its checkpoint "
                    f"key, so results stored before {name} changed would be reused after; "
                    "pass it as an argument (or bind it with functools.partial) instead",
                    CheckpointKeyWarning,
                    stacklevel=2,
                )


def _describe_class(cls: type, parts: list, seen: set) -> None:
    """A class (a task function that builds instances) by its code: what
    its own namespace defines, and its bases by name."""
    parts.append(f"class {cls.__module__}.{cls.__qualname__}".encode())
    parts += [f"{b.__module__}.{b.__qualname__}".encode() for b in cls.__bases__]
    for name, value in sorted(vars(cls).items()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            parts.append(name.encode())
            _describe(value, parts, seen)
        elif _is_plain(value) and not name.startswith("__"):
            parts.append(f"{name}={_const_text(value)}".encode())


def _describe(obj: object, parts: list, seen: set) -> None:
    """Appends what identifies callable ``obj`` (and what it closes over)."""
    if id(obj) in seen:
        parts.append(b"<recursion>")
        return
    seen.add(id(obj))
    if isinstance(obj, functools.partial):
        parts.append(b"partial")
        _describe(obj.func, parts, seen)
        parts += _pickled((obj.args, sorted(obj.keywords.items())), "a partial's arguments")
    elif isinstance(obj, types.MethodType):
        parts.append(b"method")
        _describe(obj.__func__, parts, seen)
        parts += _pickled(obj.__self__, "a method's object")
    elif isinstance(obj, types.FunctionType):
        parts.append(f"{obj.__module__}.{obj.__qualname__}".encode())
        names: set = set()
        _describe_code(obj.__code__, parts, names)
        _describe_globals(obj, names, parts)
        parts += _pickled((obj.__defaults__, obj.__kwdefaults__), "a function's defaults")
        for cell in obj.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                parts.append(b"<empty>")
                continue
            if callable(value) and not isinstance(value, type):
                _describe(value, parts, seen)
            else:
                parts += _pickled(value, f"a value {obj.__qualname__} closes over")
        wrapped = getattr(obj, "__wrapped__", None)  # functools.wraps
        if wrapped is not None:
            _describe(wrapped, parts, seen)
    elif isinstance(obj, type):
        _describe_class(obj, parts, seen)
    elif isinstance(obj, types.BuiltinFunctionType):
        parts.append(f"{obj.__module__}.{obj.__qualname__}".encode())
    elif getattr(obj, "__wrapped__", None) is not None:
        # A wrapper object (functools.cache, lru_cache): what it wraps.
        parts.append(f"wrapper {type(obj).__module__}.{type(obj).__qualname__}".encode())
        _describe(obj.__wrapped__, parts, seen)
    else:  # an instance with __call__: its class's method and its state
        call = type(obj).__call__
        parts.append(b"instance")
        if isinstance(call, types.FunctionType):
            _describe(call, parts, seen)
        else:
            parts.append(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        parts += _pickled(obj, "a callable object")


def function_identity(fn: Callable) -> tuple[bytes, str, str]:
    """``(digest, module, qualname)`` of the function a task runs."""
    parts: list = []
    _describe(fn, parts, set())
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return _shoal.digest(parts), module, qualname
