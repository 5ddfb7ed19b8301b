"""``progress=`` and ``on_progress=``: how far a call has got.

``progress=True`` shows a tqdm bar (a widget in Jupyter, or text there
without ipywidgets; text in a terminal; nothing when the output is not a
terminal), and
``progress="always"`` shows it even then. ``on_progress(done, total)`` is
called after every finished chunk (``total`` is None for an ``imap`` over
an input of unknown length). Both run on the pool's result thread.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from .results import call_back


def _in_notebook() -> bool:
    """Whether this is a Jupyter kernel (not a Qt console or Spyder), as
    ``tqdm.autonotebook`` decides."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    return not any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ)


def _bar(what: str, total: int | None, show: bool | str):
    """A tqdm bar: a widget in Jupyter, or text in a notebook without
    ipywidgets (as ``tqdm.auto`` means to, but without its "IProgress not
    found" warning and with the bar shown: a notebook's output is not a
    terminal); in a terminal, text, and nothing when the output is not a
    terminal unless ``show == "always"``."""
    options = {"total": total, "desc": what, "unit": "item"}
    if _in_notebook():
        from tqdm import notebook

        if notebook.IProgress is not None:
            # The widget treats disable=None as "show".
            return notebook.tqdm(**options, disable=None if show is True else False)
        from tqdm.std import tqdm

        return tqdm(**options, file=sys.stderr, disable=False)
    from tqdm.std import tqdm

    # disable=None: no bar when not a terminal.
    return tqdm(**options, dynamic_ncols=True, disable=None if show is True else False)


class Progress:
    """One call's count of finished items, shown and/or reported."""

    def __init__(
        self, what: str, total: int | None, show: bool | str, callback: Callable | None
    ) -> None:
        self._done = 0
        self._total = total
        self._callback = callback
        self._lock = threading.Lock()
        self._bar = None
        if show:
            self._bar = _bar(what, total, show)

    def grow(self, items: int) -> None:
        """``items`` more to do: a total that grows as tasks are submitted."""
        with self._lock:
            self._total = (self._total or 0) + items
            if self._bar is not None:
                self._bar.total = self._total  # shown at the next update

    def advance(self, items: int) -> None:
        with self._lock:
            self._done += items
            done = self._done
            if self._bar is not None:
                self._bar.update(items)
        if self._callback is not None:
            call_back(self._callback, done, self._total)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
