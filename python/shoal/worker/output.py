"""A worker's ``print`` output and ``logging`` records, sent to the parent.

Worker side: :class:`LineWriter` replaces ``sys.stdout``/``sys.stderr`` and
sends whole lines as frames (a partial line waits for its newline, the end
of the task, or the worker's exit), so lines from different workers never
mix. A partial line is kept up to ``MAX_PARTIAL`` characters; the rest of
such a line is dropped, and the line ends with a note saying how much.
:func:`forward_logging` sends ``logging`` records the same way.

Parent side: :func:`deliver` writes lines to the parent's *current*
``sys.stdout``/``sys.stderr`` (so ``contextlib.redirect_stdout`` and Jupyter,
which replaces them, both work), each prefixed with ``[worker N]``, and hands
records to the parent's loggers.
"""

from __future__ import annotations

import _thread
import io
import sys

from .. import _shoal
from .._shoal import Stream
from ..errors import ShoalError
from ..wire.serialize import PROTOCOL, pickle
from .after_import import when_imported

#: ``extra`` fields of a log record that are not plain values travel as repr.
_PLAIN = (str, int, float, bool, type(None))
#: Characters of a line kept while its newline has not come.
MAX_PARTIAL = 64 * 1024


class LineWriter(io.TextIOBase):
    """A worker's ``sys.stdout`` or ``sys.stderr``."""

    def __init__(self, link, stream: Stream, name: str) -> None:
        self._link = link
        self._stream = stream
        self._name = name
        self._partial = ""  # text after the last newline; read by the worker loop
        self._dropped = 0  # characters of the partial line beyond MAX_PARTIAL
        # User code may print from several threads.
        self._lock = _thread.allocate_lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            head, newline, tail = text.rpartition("\n")
            if not newline:
                self._keep(text)
                return len(text)
            if self._dropped:
                first, more, others = head.partition("\n")
                self._keep(first)
                lines = self._take() + more + others + "\n"
            else:
                lines = self._partial + head + "\n"
                self._partial = ""
            self._keep(tail)
        self._send(lines)
        return len(text)

    def _keep(self, text: str) -> None:
        """Adds to the partial line, up to ``MAX_PARTIAL`` characters."""
        room = MAX_PARTIAL - len(self._partial)
        if len(text) <= room:
            self._partial += text
        else:
            self._partial += text[:room]
            self._dropped += len(text) - room

    def _take(self) -> str:
        """The partial line as a whole line's text, and a fresh start."""
        line, dropped = self._partial, self._dropped
        self._partial, self._dropped = "", 0
        if dropped:
            line += (
                f" [shoal: {dropped:,} more characters of this line were dropped: a worker "
                f"keeps {MAX_PARTIAL:,} characters of a line while it waits for its newline]"
            )
        return line

    def end_line(self) -> None:
        """Sends a partial line as a line of its own (at a task's end)."""
        with self._lock:
            lines = self._take()
        if lines:
            self._send(lines + "\n")

    def _send(self, lines: str) -> None:
        data = lines.encode("utf-8", "backslashreplace")
        try:
            self._link.output(self._stream, data)
            # At once: a long task's progress lines must not wait for its end.
            self._link.flush()
        except (OSError, ShoalError):
            pass  # the parent is gone; nobody is left to read it


def capture_output(link) -> tuple[LineWriter, LineWriter]:
    """Points ``sys.stdout`` and ``sys.stderr`` at the parent."""
    sys.stdout = LineWriter(link, Stream.Stdout, "<shoal worker stdout>")
    sys.stderr = LineWriter(link, Stream.Stderr, "<shoal worker stderr>")
    return sys.stdout, sys.stderr


class ParentLogLevel:
    """The parent's root logging level, in a shared page that its workers
    read whenever tasks arrive: ``logging.basicConfig(level=INFO)``
    after ``Pool()`` reaches the workers at the next call. The parent
    writes it when each call starts (``follow``). Stored as level + 1; 0
    while the parent does not use ``logging``."""

    __slots__ = ("_segment", "_view")

    def __init__(self, level: int | None) -> None:
        self._attach(_shoal.Segment.create(8, "log-level"))
        self.follow(level)

    def _attach(self, segment) -> None:
        self._segment = segment
        self._view = memoryview(segment).cast("i")

    def follow(self, level: int | None) -> None:
        """Parent side: publishes the parent's level as it is now (None
        while the parent does not use ``logging``)."""
        self._view[0] = 0 if level is None else level + 1

    def _shoal_share_(self, attach):
        return (_rebuild_level, attach(self._segment, _shoal.ACCESS_SHARED))

    def __reduce__(self):
        raise TypeError("a ParentLogLevel travels only to shoal workers")


def _rebuild_level(attachments, index: int) -> ParentLogLevel:
    level = ParentLogLevel.__new__(ParentLogLevel)
    level._attach(attachments[index])
    return level


class _Follower:
    """Worker side: keeps the worker's root level at the parent's, and
    sends records once the parent uses logging."""

    __slots__ = ("_link", "_view", "_seen", "_installed")

    def __init__(self, link, level: ParentLogLevel) -> None:
        self._link = link
        self._view = level._view
        self._seen = -1
        self._installed = False

    def check(self) -> None:
        word = self._view[0]
        if word == self._seen:
            return
        self._seen = word
        if word == 0:
            return  # the parent does not use logging (yet)
        if not self._installed:
            self._installed = True
            when_imported("logging", lambda m: _send_records(m, self._link, self._seen - 1))
            return
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.getLogger().setLevel(word - 1)


_follower: _Follower | None = None


def forward_logging(link, level: ParentLogLevel | int) -> None:
    """Sends every record at the parent's level or above to the parent's
    loggers, from the moment the worker's code imports ``logging``
    (importing it here would cost every worker about 25 ms at start).
    Given a ``ParentLogLevel``, the level follows the parent's."""
    global _follower
    if isinstance(level, int):
        when_imported("logging", lambda m: _send_records(m, link, level))
        return
    _follower = _Follower(link, level)
    _follower.check()


def check_log_level() -> None:
    """When tasks arrive: the parent's level, as of its latest call."""
    if _follower is not None:
        _follower.check()


def _send_records(logging, link, level: int) -> None:
    formatter = logging.Formatter()

    class _ToParent(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                fields = dict(record.__dict__)
                fields["msg"], fields["args"] = record.getMessage(), None
                if record.exc_info:
                    fields["exc_text"] = formatter.formatException(record.exc_info)
                fields["exc_info"] = None
                fields.pop("message", None)
                plain = {k: v if isinstance(v, _PLAIN) else repr(v) for k, v in fields.items()}
                link.log(pickle.dumps(plain, PROTOCOL))
                link.flush()
            except Exception:  # noqa: BLE001 - logging's own error report
                self.handleError(record)

    root = logging.getLogger()
    root.handlers[:] = [_ToParent()]
    root.setLevel(level)
