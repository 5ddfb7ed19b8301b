"""Moving objects between processes with their large buffers in shared
memory instead of the pickle.

``pack`` pickles with protocol 5. Every buffer a pickle hands out of band
(numpy arrays, ``PickleBuffer``) that is at least ``THRESHOLD`` bytes, or
that already lives in a shoal segment (a shared array, what a task
received), travels as a segment: a memfd passed as a file descriptor with
the message. A buffer already in a segment goes as a handle (segment,
offset, length), with no copy; any other large one is copied once into a
new sealed segment, which a pool keeps for its next calls (``wire.kept``).
Large ``bytes``, ``bytearray``, ``memoryview`` and non-contiguous arrays
are pickled in-band by pickle itself; a quick scan spots them and a second
pickling moves them out too. Small buffers stay in
the pickle, and a pickle without large buffers is plain bytes: the common
case costs one extra list and one scan of the pickle.

A packed payload with segments is ``(body, attachments)``: ``body`` is a
small header pickle (how to map each attachment, where each buffer lies)
followed by the main pickle; ``attachments`` are the descriptors to send.
``unpack`` maps them and hands the buffers to the unpickler, so a numpy
array arrives backed by the segment, without a copy: read-only if the
segment is shared by several tasks, otherwise copy-on-write (writable,
private to the receiver), and writable by everyone for a shared array.
"""

from __future__ import annotations

# The C accelerator that `pickle` re-exports (see `_serialize`).
import _pickle as pickle
import io
import os
import sys

from .. import _shoal
from ..errors import SerializationError
from .serialize import PLAIN_PICKLE_FAILS, PROTOCOL

TYPE_CHECKING = False  # not `typing`'s, which a worker would pay to import
if TYPE_CHECKING:
    from .kept import KeptCopies

#: Buffers at least this large travel through shared memory. Measured on
#: a 2-core machine (one argument, Pool.apply): below it the socket is as
#: fast or faster (112 KiB: 323 us in the pickle, 362 us in a segment);
#: from it on shared memory wins, more and more (128 KiB: 474 vs 375 us;
#: 1 MiB: 2.4 ms vs 0.9 ms; 4 MiB: 9.2 ms vs 2.5 ms).
THRESHOLD = 128 * 1024

_pickle_dumps = pickle.dumps
_loads = pickle.loads
_PickleBuffer = pickle.PickleBuffer
_locate = _shoal.locate
_scan_pickle = _shoal.scan_pickle
_all_plain = _shoal.all_plain
_Segment = _shoal.Segment
_Fd = _shoal.Fd

_RAW = -1  # an attachment that is not mapped (a socket)
_READ_ONLY = _shoal.ACCESS_READ_ONLY
_OWNED = _shoal.ACCESS_OWNED


class _Copy:
    """A buffer to copy into a new segment once the whole call is pickled:
    by then it is known how many payloads use it. One user gets it
    writable (``OWNED``: a private mapping); several get it read-only, as
    does every user when ``kept`` says so. A copy ``kept`` for later calls
    is sealed, and may come from an earlier call (``fd`` set already)."""

    __slots__ = ("buffer", "users", "fd", "kept", "key", "__weakref__")

    def __init__(self, buffer, kept: KeptCopies | None = None, key=None) -> None:
        self.buffer = buffer  # keeps its address its own until copied
        self.users = 0
        self.fd = None if kept is None else kept.find(buffer, key)
        self.kept = kept
        self.key = key

    def read_only(self) -> bool:
        return self.users > 1 or (self.kept is not None and self.kept.read_only)

    def materialize(self):
        if self.fd is None:
            kept = self.kept
            self.fd = _shoal.copy_to_segment(self.buffer, kept is not None or self.read_only())
            if kept is not None:
                kept.keep(self.key, self.buffer, self.fd)
        self.buffer = None
        return self.fd


class _Call:
    """What the payloads of one pack share: the copies, by the buffer they
    copy, so an array given to many tasks is copied once; and the copies
    ``kept`` from earlier calls."""

    __slots__ = ("_copies", "_kept")

    def __init__(self, kept: KeptCopies | None = None) -> None:
        self._copies: dict[tuple[int, int], _Copy] = {}
        self._kept = kept

    def copy_of(self, buffer, address: int, nbytes: int) -> _Copy:
        key = (address, nbytes)
        copy = self._copies.get(key)
        if copy is None:
            copy = self._copies[key] = _Copy(buffer, self._kept, key)
        return copy


class _Envelope:
    """What one payload sends besides its main pickle."""

    __slots__ = ("attachments", "accesses", "entries", "_index", "_call")

    def __init__(self, call: _Call) -> None:
        self.attachments: list = []  # Fd, Segment or _Copy
        self.accesses: list[int] = []
        self.entries: list = []  # (attachment, offset, nbytes) or inline bytes
        self._index: dict[object, int] = {}
        self._call = call

    def attach(self, obj, access: int = _RAW) -> int:
        """Index of ``obj`` (an ``Fd``, a ``Segment`` or a ``_Copy``) among
        this payload's attachments. Views of one segment (each ``locate``
        makes a new ``Segment`` object) share one attachment."""
        key = ("segment", obj.address) if type(obj) is _Segment else id(obj)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.attachments)
            self.attachments.append(obj)
            self.accesses.append(access)
            if type(obj) is _Copy:
                obj.users += 1
        return index

    def add_buffer(self, buffer) -> bool:
        """The pickler's ``buffer_callback``: every buffer goes out of band
        (returns False); small ones ride inline in the header."""
        address, nbytes, segment, offset = _locate(buffer)
        # An owned mapping is private: its writes are not in the segment.
        if segment is not None and segment.access != _OWNED:
            self.entries.append((self.attach(segment, segment.access), offset, nbytes))
        elif nbytes < THRESHOLD:
            self.entries.append(buffer.raw().tobytes())  # memory order kept (Fortran too)
        else:
            copy = self._call.copy_of(buffer, address, nbytes)
            self.entries.append((self.attach(copy), 0, nbytes))
        return False

    def seal(self, main: bytes) -> tuple[bytes, list]:
        """``(body, attachments)``, copying what is still to be copied."""
        attachments, accesses = self.attachments, self.accesses
        for i, item in enumerate(attachments):
            if type(item) is _Copy:
                accesses[i] = _READ_ONLY if item.read_only() else _OWNED
                attachments[i] = item.materialize()
        header = _pickle_dumps((accesses, self.entries), PROTOCOL)
        return header + main, attachments


# ---------------------------------------------------------------- pickling


def _as_bytes(attachments, buffer):
    return bytes(buffer)


def _as_bytearray(attachments, buffer):
    return bytearray(buffer)


def _as_memoryview(data, fmt: str, shape: tuple):
    view = memoryview(data)
    if view.format == fmt and view.shape == shape:
        return view
    return view.cast("B").cast(fmt, shape)


def _as_strided(buffer, dtype, shape, strides, offset):
    import numpy

    return numpy.ndarray(shape, dtype, buffer=buffer, offset=offset, strides=strides)


def _byte_span(array) -> tuple[int, int]:
    """Lowest and one-past-highest address a (strided) array touches."""
    low = high = array.__array_interface__["data"][0]
    for n, stride in zip(array.shape, array.strides, strict=True):
        if n == 0:
            return low, low
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + array.itemsize


class _OutOfBand:
    """Mixed into a pickler: moves what plain pickle keeps in-band (large
    ``bytes``, ``bytearray``, ``memoryview``, non-contiguous arrays) out of
    band, and lets shoal's shared objects travel as handles."""

    envelope: _Envelope

    def persistent_id(self, obj):
        # `bytes` and `bytearray` never reach reducer_override (pickle saves
        # them first); persistent_id sees every object.
        kind = type(obj)
        if (kind is bytes or kind is bytearray) and len(obj) >= THRESHOLD:
            return (_as_bytes if kind is bytes else _as_bytearray, _PickleBuffer(obj))
        share = getattr(type(obj), "_shoal_share_", None)
        if share is not None:
            return share(obj, self.envelope.attach)
        return None

    def _reduce_out_of_band(self, obj):
        """A reduction for ``obj`` that moves its data out of band, or None."""
        kind = type(obj)
        if kind is memoryview:
            if obj.nbytes >= THRESHOLD and obj.c_contiguous:
                data = _PickleBuffer(obj)
            else:
                data = obj.tobytes()  # C order; a large copy still goes out of band
            return _as_memoryview, (data, obj.format, obj.shape)
        numpy = sys.modules.get("numpy")
        if numpy is not None and kind is numpy.ndarray and not obj.flags.forc:
            return self._strided_array(obj)
        return None

    def _strided_array(self, array):
        if array.dtype.hasobject:
            return None
        low, high = _byte_span(array)
        found = _shoal.find_segment_at(low, high - low) if high > low else None
        if found is not None:
            # A view of a shared segment: travels as a handle, strides and all.
            segment, start = found
            region = memoryview(segment)[start : start + high - low]
            if not array.flags.writeable:
                region = region.toreadonly()  # arrives read-only, as it was sent
            offset = array.__array_interface__["data"][0] - low
            args = (_PickleBuffer(region), array.dtype, array.shape, array.strides, offset)
            return _as_strided, args
        if array.nbytes >= THRESHOLD:
            return _copy_of, (array.copy(),)
        return None


def _copy_of(array):
    return array


class _Pickler(_OutOfBand, pickle.Pickler):
    def reducer_override(self, obj):  # noqa: D102
        reduced = self._reduce_out_of_band(obj)
        return NotImplemented if reduced is None else reduced


_pickler_classes: dict[str, type] = {}


def _pickler_class(by_value: bool) -> type:
    if not by_value:
        return _Pickler
    cls = _pickler_classes.get("cloud")
    if cls is None:
        from . import cloud  # cloudpickle: imported when first needed

        class _CloudPickler(_OutOfBand, cloud.Pickler):
            def reducer_override(self, obj):
                reduced = self._reduce_out_of_band(obj)
                if reduced is None:
                    return cloud.Pickler.reducer_override(self, obj)
                return reduced

        cls = _pickler_classes["cloud"] = _CloudPickler
    return cls


def _pickle_out_of_band(obj, envelope: _Envelope, by_value: bool) -> bytes:
    out = io.BytesIO()
    pickler = _pickler_class(by_value)(out, PROTOCOL, buffer_callback=envelope.add_buffer)
    pickler.envelope = envelope
    pickler.dump(obj)
    return out.getvalue()


def _pack_one(
    obj, call: _Call | None, by_value: bool = False, main_by_value: bool = True, kept=None
):
    """``bytes``, or ``(_Envelope, main pickle)`` to seal once the whole
    call is packed (``call`` made on demand if None, with the copies
    ``kept``: most packs are plain bytes and need none). ``main_by_value``
    False keeps what lives in ``__main__`` by reference (for processes
    that run the same ``__main__``: the ranks of ``shoal run``)."""
    if not by_value:
        buffers: list = []
        try:
            data = _pickle_dumps(obj, PROTOCOL, buffer_callback=buffers.append)
        except PLAIN_PICKLE_FAILS:
            pass  # perhaps a shoal object (a Lock, a Queue): see persistent_id
        else:
            verdict = _scan_pickle(data, THRESHOLD)
            if verdict == 0:
                if not buffers:
                    return data
                envelope = _Envelope(call or _Call(kept))
                for buffer in buffers:
                    envelope.add_buffer(buffer)
                if envelope.attachments:
                    return envelope, data
                # Only small buffers: plain bytes are cheaper to send and load.
                return _pickle_dumps(obj, PROTOCOL)
            by_value = verdict == 2 and main_by_value
    call = call or _Call(kept)
    envelope = _Envelope(call)
    try:
        data = _pickle_out_of_band(obj, envelope, by_value)
        if not by_value and main_by_value and b"__main__" in data:
            raise pickle.PicklingError("refers to __main__: goes by value")
    except PLAIN_PICKLE_FAILS:
        if by_value:
            raise
        by_value = True
        envelope = _Envelope(call)
        data = _pickle_out_of_band(obj, envelope, by_value)
    if not envelope.attachments:
        # Only small buffers: in-band, as plain bytes, is cheaper.
        return _pickle_in_band(obj, by_value)
    return envelope, data


def _pickle_in_band(obj, by_value: bool) -> bytes:
    out = io.BytesIO()
    pickler = _pickler_class(by_value)(out, PROTOCOL)
    pickler.envelope = _Envelope(_Call())
    pickler.dump(obj)
    return out.getvalue()


def pack(obj, by_value: bool = False, kept: KeptCopies | None = None, main_by_value: bool = True):
    """``obj`` pickled: ``bytes``, or ``(body, attachments)`` when parts of
    it travel in shared memory. ``by_value`` pickles functions and classes
    by value (cloudpickle); ``kept`` reuses copies made for earlier packs
    (the caller says when a call ends: ``KeptCopies.end_call``);
    ``main_by_value`` False keeps ``__main__``'s by reference."""
    packed = _pack_one(obj, None, by_value, main_by_value, kept)
    if type(packed) is bytes:
        return packed
    envelope, data = packed
    return envelope.seal(data)


def pack_many(objs: list, kept: KeptCopies | None = None) -> list:
    """``[pack(o) for o in objs]``, with a buffer given to several of them
    copied to shared memory once (and mapped read-only by receivers);
    ``kept``: as for ``pack``."""
    batches = list(pack_batches(objs, kept))
    if len(batches) == 1:
        return batches[0][1]
    return [p for _, batch in batches for p in batch]


def pack_batches(objs: list, kept: KeptCopies | None = None):
    """Packs ``objs`` as ``pack_many`` does, yielding ``(start, payloads)``
    as soon as a run of them is ready: a caller that sends each batch at
    once lets workers start on the first arrays while later ones are still
    being copied."""
    # The common case, small plain objects, at plain pickle's speed.
    buffers: list = []
    try:
        plain = [_pickle_dumps(o, PROTOCOL, buffer_callback=buffers.append) for o in objs]
    except PLAIN_PICKLE_FAILS:
        pass
    else:
        if not buffers and _all_plain(plain, THRESHOLD):
            yield 0, plain
            return
    call = _Call(kept)
    packed = [_pack_one(o, call) for o in objs]
    start = 0
    for i, item in enumerate(packed):
        if type(item) is not bytes:
            envelope, data = item
            packed[i] = envelope.seal(data)
            yield start, packed[start : i + 1]
            start = i + 1
    if start < len(packed):
        yield start, packed[start:]


# -------------------------------------------------------------- unpickling


#: In a worker: the read-only segments of the last payload that had any,
#: kept mapped so the next task of the same call (the same array given to
#: many tasks) finds its pages already mapped. The worker lets go as soon
#: as a payload without them comes, or it is idle for a moment.
_recent: dict = {}
keep_recent = False


def _map(fd, access: int):
    if access == _RAW:
        return fd
    if access != _READ_ONLY or not keep_recent:
        return _Segment.map(fd, access)
    st = os.fstat(fd.fileno())
    key = (st.st_dev, st.st_ino)  # a sealed segment: its contents never change
    segment = _recent.get(key)
    return _Segment.map(fd, access) if segment is None else segment


def _remember(fds: list, accesses: list, attachments: list) -> None:
    global _recent
    recent = {}
    for fd, access, segment in zip(fds, accesses, attachments, strict=True):
        if access == _READ_ONLY:
            st = os.fstat(fd.fileno())
            recent[(st.st_dev, st.st_ino)] = segment
    _recent = recent


def forget_recent() -> None:
    """Unmaps the kept segments (they stay alive while arrays use them)."""
    global _recent
    _recent = {}


class _Unpickler(pickle.Unpickler):
    attachments: list

    def persistent_load(self, pid):
        rebuild, *args = pid
        return rebuild(self.attachments, *args)


def unpack(body, fds: list):
    """The object ``pack`` made, from its body and the received ``Fd``s."""
    stream = io.BytesIO(body)
    accesses, entries = pickle.load(stream)
    if len(accesses) != len(fds):
        raise pickle.UnpicklingError(
            f"a message names {len(accesses)} shared segments but {len(fds)} came with it"
        )
    attachments = [_map(fd, access) for fd, access in zip(fds, accesses, strict=True)]
    if keep_recent:
        _remember(fds, accesses, attachments)
    buffers = []
    for entry in entries:
        if type(entry) is bytes:
            buffers.append(entry)
            continue
        index, offset, nbytes = entry
        view = memoryview(attachments[index])[offset : offset + nbytes]
        if len(view) != nbytes:
            raise pickle.UnpicklingError("a shared buffer runs past the end of its segment")
        buffers.append(view)
    unpickler = _Unpickler(stream, buffers=buffers)
    unpickler.attachments = attachments
    return unpickler.load()


def payload_nbytes(payload) -> int:
    """The bytes a packed payload carries: its pickle and its segments."""
    if type(payload) is bytes:
        return len(payload)
    body, attachments = payload
    return len(body) + sum(a.size() if type(a) is _Fd else len(a) for a in attachments)


def loads_payload(payload):
    """A result as the engine hands it over: bytes or ``(bytes, [Fd])``."""
    if type(payload) is bytes:
        return _loads(payload)
    return unpack(*payload)


def dumps_function(fn: object, mode: int, retry_on: tuple = ()):
    """``(mode, fn, retry_on)`` for the workers, packed (what a
    closure holds, a shared array say, may travel in shared memory).
    A function is pickled by value when it lives in ``__main__`` (a
    worker's ``__main__`` is not the user's script) or cannot be imported."""
    entry = (mode, fn, retry_on)
    module = getattr(fn, "__module__", None)
    try:
        return pack(entry, by_value=module == "__main__" or module is None)
    except Exception as exc:
        raise SerializationError(f"cannot send function {fn!r} to the workers: {exc}") from exc
