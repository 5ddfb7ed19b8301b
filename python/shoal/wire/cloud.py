"""shoal's cloudpickle pickler: what travels by value (lambdas, closures,
functions and classes of ``__main__`` or a notebook), with two changes to
cloudpickle's own rules.

- **Tracebacks keep the script's file and line.** cloudpickle names every
  code object it sends ``<dynamic-code>``, so a task's traceback said
  ``File "<dynamic-code>", line 5``. Here a code object keeps its
  ``co_filename``; when that file is not on disk (a notebook cell), the
  function's source lines travel with it and are put in the worker's
  ``linecache``, so the traceback shows the source line as well.
- **Open files are refused.** cloudpickle sends an open text file as an
  ``io.StringIO`` snapshot of its contents (and a binary one not at all),
  which fails far from the cause. An open file is tied to its process:
  this pickler raises a ``TypeError`` that names it and says what to send
  instead.

Imported only when something travels by value (cloudpickle is slow to
import; a worker imports it anyway to rebuild such objects).
"""

from __future__ import annotations

import io
import linecache
import os
import sys
import types
from collections import ChainMap

import cloudpickle
from cloudpickle import cloudpickle as _cloudpickle

#: Open files (and their binary layers): tied to the process that opened them.
FILE_TYPES = (
    io.TextIOWrapper,
    io.BufferedReader,
    io.BufferedWriter,
    io.BufferedRandom,
    io.BufferedRWPair,
    io.FileIO,
)


def open_file_error(obj) -> TypeError:
    """What an open file sent to another process gets: which file, and
    what to send instead."""
    name = getattr(obj, "name", None)
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if name is not None:
        what += f" {name!r}"
    mode = getattr(obj, "mode", None)
    if mode:
        what += f" (mode {mode!r})"
    return TypeError(
        f"cannot send an open file ({what}) to another process: a file object belongs to "
        "the process that opened it. Send its path (f.name) and open the file on the other "
        "side, or send its contents (f.read())."
    )


def _refuse_file(obj):
    if obj is sys.stdout or obj is sys.stderr:
        # print(..., file=sys.stdout) in a task: the worker's own stream.
        return _cloudpickle._file_reduce(obj)
    raise open_file_error(obj)


def _source_lines(code: types.CodeType) -> list[str] | None:
    """The lines of ``code``'s function, at their line numbers, when its
    file is not on disk (a notebook cell: the kernel keeps its source in
    linecache); else None (the worker reads the file itself)."""
    filename = code.co_filename
    if not filename or os.path.exists(filename):
        return None
    lines = linecache.getlines(filename)
    if not lines:
        return None
    numbers = [line for _, _, line in code.co_lines() if line is not None]
    first = code.co_firstlineno
    last = max(numbers, default=first)
    return ["\n"] * (first - 1) + lines[first - 1 : last]


def _reduce_code(code: types.CodeType):
    _type, args = _cloudpickle._code_reduce(code)
    return _rebuild_code, (args, code.co_filename, _source_lines(code))


def _rebuild_code(args: tuple, filename: str, lines: list[str] | None) -> types.CodeType:
    code = types.CodeType(*args).replace(co_filename=filename)
    if lines:
        _remember_lines(filename, lines)
    return code


def _remember_lines(filename: str, lines: list[str]) -> None:
    """Puts a function's source lines in this process's linecache (merged
    with lines already there from other functions of the same cell)."""
    entry = linecache.cache.get(filename)
    if entry is not None and len(entry) == 4 and entry[1] is None:
        known = list(entry[2])
        if len(known) < len(lines):
            known.extend(["\n"] * (len(lines) - len(known)))
        for i, line in enumerate(lines):
            if line != "\n":
                known[i] = line
        lines = known
    elif entry is not None:
        return  # linecache knows this file already
    # mtime None: linecache.checkcache leaves the entry alone.
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, keeping file names in code and refusing
    open files."""

    dispatch_table = ChainMap(
        {types.CodeType: _reduce_code, **dict.fromkeys(FILE_TYPES, _refuse_file)},
        cloudpickle.Pickler.dispatch_table,
    )


def dumps(obj, protocol: int) -> bytes:
    out = io.BytesIO()
    Pickler(out, protocol).dump(obj)
    return out.getvalue()
