"""References to the chunks of a zarr array, which workers read themselves.

    def stats(chunk):
        block = chunk.read()
        return float(block.mean()), float(block.std())

    with shoal.Pool() as pool:
        results = pool.map(stats, shoal.io.zarr_chunks("big.zarr"))

A :class:`ZarrChunk` is the array's directory and a box of it (start and
stop per axis): a hundred bytes to pickle, however large the chunk. The
worker opens the array on its first read and keeps it open for the rest
(one open per process and array), so the parent never touches the data.
References follow the array's chunk grid (its shards, when it has them), so
a read decompresses whole chunks only, and :meth:`ZarrChunk.write` into an
output array with the same grid touches chunks no other reference touches:
workers write side by side with no lock.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence

from .common import ProcessCache, bound_allocator, fspath, need, stamp

_WHAT = "shoal.io.zarr_chunks"

#: Opened arrays in this process, by (path, mode, stamp of the metadata).
_opened = ProcessCache()


def _metadata_file(path: str) -> str:
    """The metadata file of the zarr array at ``path``, or a clear error
    when ``path`` is not one (missing, a file, a group, something else)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such file or directory; {_WHAT} needs the path of a zarr array "
            "(a directory holding zarr.json or .zarray)"
        )
    if not os.path.isdir(path):
        raise ValueError(
            f"{path} is a file, not a zarr array: {_WHAT} reads arrays stored in a "
            "directory (a local zarr store), one holding zarr.json (format 3) or .zarray (format 2)"
        )
    v3, v2 = os.path.join(path, "zarr.json"), os.path.join(path, ".zarray")
    if os.path.isfile(v3):
        try:
            with open(v3, encoding="utf-8") as f:
                node = json.load(f).get("node_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path} is not a readable zarr array: {v3}: {exc}") from exc
        if node == "array":
            return v3
        if node == "group":
            raise ValueError(_group_message(path))
        raise ValueError(f"{path} is not a zarr array: {v3} says node_type {node!r}")
    if os.path.isfile(v2):
        return v2
    if os.path.isfile(os.path.join(path, ".zgroup")):
        raise ValueError(_group_message(path))
    raise ValueError(
        f"{path} is not a zarr array: it holds neither zarr.json (zarr format 3) nor .zarray "
        "(format 2). Give the path of the array's own directory."
    )


def _group_message(path: str) -> str:
    arrays = sorted(
        name
        for name in os.listdir(path)
        if os.path.isfile(os.path.join(path, name, ".zarray"))
        or _is_v3_array(os.path.join(path, name, "zarr.json"))
    )
    inside = (
        f"; the arrays in it: {', '.join(arrays)} (e.g. {os.path.join(path, arrays[0])})"
        if arrays
        else " with no arrays directly in it"
    )
    return f"{path} is a zarr group, not an array: give the path of one of its arrays{inside}"


def _is_v3_array(meta: str) -> bool:
    try:
        with open(meta, encoding="utf-8") as f:
            return json.load(f).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


def _open(path: str, mode: str):
    """The zarr array at ``path``, opened once per process and mode (and
    again if its metadata is rewritten)."""
    return _open_keyed(path, mode)[0]


def _open_keyed(path: str, mode: str):
    """``(array, key)``: :func:`_open`'s array and its cache key."""
    key = (path, mode, stamp(_metadata_file(path)))
    zarr = need("zarr", _WHAT)

    def opener():
        try:
            return zarr.open_array(store=path, mode=mode)
        except (ValueError, KeyError, TypeError) as exc:  # metadata zarr cannot read
            raise ValueError(f"{path} is not a zarr array zarr can open: {exc}") from exc

    return _opened.get(key, opener), key


class _Direct:
    """Reads a chunk of an array whose chunks are plain bytes compressed by
    blosc (zarr format 3: codecs ``bytes`` then ``blosc``, no shards): the
    file's bytes, decompressed by numcodecs straight into the block. zarr's
    own read holds the compressed bytes, a decompressed copy and the block
    it assembles (about 3 chunks); this holds the compressed bytes and the
    block. Other layouts go through zarr. Blosc decompresses on the calling
    thread alone: zarr sets ``numcodecs.blosc.use_threads = False`` when it
    is imported, so workers do not oversubscribe the cores."""

    def __init__(self, array) -> None:
        import numpy as np
        from numcodecs import blosc

        self.decompress = blosc.decompress
        meta = array.metadata
        self.encode_key = meta.encode_chunk_key
        self.chunks = tuple(array.chunks)
        self.dtype = np.dtype(array.dtype)
        self.fill = meta.fill_value
        self.nbytes = math.prod(self.chunks) * self.dtype.itemsize

    @staticmethod
    def fits(array) -> bool:
        import sys

        import numpy as np

        try:
            from zarr.codecs import BloscCodec, BytesCodec
        except ImportError:
            return False
        meta = array.metadata
        codecs = tuple(getattr(meta, "codecs", ()))
        if getattr(meta, "zarr_format", None) != 3 or getattr(array, "shards", None):
            return False
        if len(codecs) != 2 or type(codecs[0]) is not BytesCodec:
            return False
        if type(codecs[1]) is not BloscCodec:
            return False
        dtype = np.dtype(array.dtype)
        if dtype.hasobject or dtype.kind not in "biufc" or not dtype.isnative:
            return False
        endian = codecs[0].endian
        return dtype.itemsize == 1 or (endian is not None and endian.value == sys.byteorder)

    def read(self, path: str, ref):
        """The block of ``ref``; None (zarr reads it) when ``ref`` is not one
        chunk, or its bytes are not a blosc buffer of one chunk."""
        import numpy as np

        coords = []
        for a, b, c in zip(ref.start, ref.stop, self.chunks, strict=True):
            if a % c or b - a > c:
                return None
            coords.append(a // c)
        try:
            with open(os.path.join(path, self.encode_key(tuple(coords))), "rb") as f:
                data = f.read()
        except FileNotFoundError:  # never written: the fill value
            return np.full(ref.shape, self.fill, dtype=self.dtype)
        # Blosc's 16-byte header holds the decompressed size in bytes 4-7.
        if len(data) < 16 or int.from_bytes(data[4:8], "little") != self.nbytes:
            return None  # not one chunk's blosc buffer: zarr reads it, or says what is wrong
        block = np.empty(self.chunks, dtype=self.dtype)
        self.decompress(data, block)
        del data
        if block.shape != ref.shape:  # an edge chunk: stored whole, cut to the array
            block = block[ref.selection_in_chunk(self.chunks)]
        return block


#: Per opened array (same keys as ``_opened``): its _Direct reader, or False.
_direct = ProcessCache()


def _reader(path: str):
    """``(array, direct)``: the opened array, and its :class:`_Direct`
    reader (False when its layout is not one)."""
    array, key = _open_keyed(path, "r")

    def make():
        return _Direct(array) if _Direct.fits(array) else False

    return array, _direct.get(key, make)


def _array_path(array) -> str:
    """The directory of a zarr array object, for workers to reopen it."""
    store_path = getattr(array, "store_path", None)  # zarr 3
    if store_path is not None:
        root, inner = getattr(store_path.store, "root", None), store_path.path
    else:  # zarr 2
        root, inner = getattr(getattr(array, "store", None), "path", None), array.path
    if root is None or not os.path.isdir(os.fspath(root)):
        store = getattr(store_path, "store", None) or getattr(array, "store", None)
        raise ValueError(
            f"{_WHAT} needs an array stored in a local directory, which every worker can open "
            f"by its path; this one is in {store!r}. Save it to a directory first "
            "(zarr.create_array(store='data.zarr', ...)) or pass that directory's path."
        )
    return os.path.abspath(os.path.join(os.fspath(root), inner))


def _grid(array) -> tuple[int, ...]:
    """The chunk shape references follow: the shards when the array has
    them (a shard is what one read or write touches as a whole)."""
    return tuple(getattr(array, "shards", None) or array.chunks)


class ZarrChunk:
    """One box of a zarr array: where it is stored (``path``), where the box
    starts and stops along each axis, and its place in the sequence
    (``index``). Cheap to pickle: no open store inside."""

    __slots__ = ("index", "path", "start", "stop")

    def __init__(self, path: str, start: tuple, stop: tuple, index: int = 0) -> None:
        self.path = path
        self.start = tuple(start)
        self.stop = tuple(stop)
        self.index = index

    def __reduce__(self):
        return (ZarrChunk, (self.path, self.start, self.stop, self.index))

    def __eq__(self, other) -> bool:
        return isinstance(other, ZarrChunk) and (
            self.path,
            self.start,
            self.stop,
            self.index,
        ) == (other.path, other.start, other.stop, other.index)

    def __hash__(self) -> int:
        return hash((self.path, self.start, self.stop, self.index))

    def __repr__(self) -> str:
        box = ", ".join(f"{a}:{b}" for a, b in zip(self.start, self.stop, strict=True))
        return f"ZarrChunk({self.path!r}, [{box}], index={self.index})"

    @property
    def selection(self) -> tuple[slice, ...]:
        """The box as slices: ``array[ref.selection]`` is the block."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    def read(self):
        """The block, as a numpy array (read and decompressed here, in the
        worker). The array is opened on the first read in this process and
        kept open."""
        import numpy as np

        bound_allocator()
        array, direct = _reader(self.path)
        if direct:
            block = direct.read(self.path, self)
            if block is not None:
                return block
        return np.asarray(array[self.selection])

    def selection_in_chunk(self, chunks: tuple) -> tuple[slice, ...]:
        """The box as slices of the chunk it lies in."""
        return tuple(
            slice(a % c, a % c + (b - a))
            for a, b, c in zip(self.start, self.stop, chunks, strict=True)
        )

    def write(self, block, out) -> None:
        """Writes ``block`` into the same box of ``out`` (a zarr array, or
        its path: opened once per process). ``block`` must have the box's
        shape and ``out``'s dtype, and the box must cover whole chunks of
        ``out`` (give ``out`` the same chunks as the array read), so that
        writers never share a chunk."""
        import numpy as np

        bound_allocator()
        if isinstance(out, str | os.PathLike):
            target = _open(fspath(out, "out"), "r+")
            where = os.fspath(out)
        else:
            target, where = out, "out"
        block = np.asarray(block)
        if block.shape != self.shape:
            raise ValueError(
                f"block has shape {block.shape}, but this chunk ({self!r}) has shape "
                f"{self.shape}: write a block the shape of what read() returned"
            )
        dtype = np.dtype(target.dtype)
        if block.dtype != dtype:
            raise TypeError(
                f"block has dtype {block.dtype}, but {where} holds {dtype}: convert it "
                f"first (block.astype({str(dtype)!r})) or create {where} with dtype "
                f"{block.dtype}"
            )
        shape = tuple(target.shape)
        if len(shape) != len(self.stop) or any(
            b > n for b, n in zip(self.stop, shape, strict=True)
        ):
            raise ValueError(
                f"this chunk ({self!r}) does not fit in {where}, of shape {shape}: "
                "create the output with the shape of the array read"
            )
        grid = _grid(target)
        for axis, (a, b, n, c) in enumerate(zip(self.start, self.stop, shape, grid, strict=True)):
            if a % c or (b % c and b != n):
                raise ValueError(
                    f"this chunk ({self!r}) covers part of a chunk of {where} along axis "
                    f"{axis} (its chunks are {grid}): writers sharing a chunk would overwrite "
                    "each other's data. Create the output with the chunks of the array read."
                )
        target[self.selection] = block


class ZarrChunks(Sequence):
    """The references of :func:`zarr_chunks`: a sequence made on demand, so
    an array of a million chunks costs no memory until iterated."""

    def __init__(self, path: str, shape: tuple, step: tuple) -> None:
        self.path = path
        self.array_shape = shape
        self.step = step
        self.counts = tuple(math.ceil(n / s) if n else 0 for n, s in zip(shape, step, strict=True))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not isinstance(i, int):
            raise TypeError(f"chunk indices must be integers or slices, not {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"chunk index {i} out of range for {n} chunks")
        index = i % n if n else i
        start, rest = [], index
        for count, step in zip(reversed(self.counts), reversed(self.step), strict=True):
            rest, k = divmod(rest, count)
            start.append(k * step)
        start.reverse()
        stop = tuple(
            min(a + s, n_) for a, s, n_ in zip(start, self.step, self.array_shape, strict=True)
        )
        return ZarrChunk(self.path, tuple(start), stop, index)

    def __iter__(self) -> Iterator[ZarrChunk]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"<{len(self)} chunks of {self.path}, each up to {self.step}>"


def zarr_chunks(array_or_path, *, axis: int | None = None, batch: int = 1) -> ZarrChunks:
    """References to the chunks of a zarr array, in order, for a pool's
    workers to read (``ref.read()``) and write (``ref.write(block, out)``).

    ``array_or_path`` is the array's directory or an opened ``zarr.Array``
    stored in a local directory. With ``axis=None`` there is one reference
    per chunk (per ``batch`` chunks along the first axis); with ``axis=k``,
    one per ``batch`` chunks along axis ``k``, each spanning the whole of
    every other axis (a slab). Chunks follow the array's shards when it has
    them. Raises ``FileNotFoundError`` for a missing path and ``ValueError``
    for one that is not a zarr array (a group, a file, another directory).
    """
    need("zarr", _WHAT)
    if isinstance(array_or_path, str | os.PathLike):
        path = fspath(array_or_path, "array_or_path")
    else:
        if not (hasattr(array_or_path, "chunks") and hasattr(array_or_path, "shape")):
            raise TypeError(
                f"{_WHAT} takes a zarr array or the path of one, got {type(array_or_path).__name__}"
            )
        path = _array_path(array_or_path)
    array = _open(path, "r")
    shape, grid = tuple(array.shape), _grid(array)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    ndim = len(shape)
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
            raise ValueError(
                f"axis must be None or an int in [{-ndim}, {ndim}) for this {ndim}-d "
                f"array, got {axis!r}"
            )
        axis %= ndim
        step = tuple(
            batch * c if d == axis else max(n, 1)
            for d, (n, c) in enumerate(zip(shape, grid, strict=True))
        )
    else:
        step = tuple(batch * c if d == 0 else c for d, c in enumerate(grid))
    return ZarrChunks(path, shape, step)
