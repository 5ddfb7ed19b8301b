"""``MPI.Status``: who sent a received message, with which tag, how big."""

from __future__ import annotations

from .constants import ANY_SOURCE, ANY_TAG, SUCCESS, UNDEFINED


class Status:
    """``Get_source()``, ``Get_tag()``, ``Get_count(datatype)``,
    ``Get_elements(datatype)``, ``Get_error()``, ``Is_cancelled()`` and the
    properties ``source``, ``tag``, ``count``, ``error``, ``cancelled``."""

    __slots__ = ("source", "tag", "error", "_nbytes", "cancelled")

    def __init__(self, status: Status | None = None) -> None:
        if status is not None:
            self.source, self.tag, self.error = status.source, status.tag, status.error
            self._nbytes, self.cancelled = status._nbytes, status.cancelled
        else:
            self.source, self.tag, self.error = ANY_SOURCE, ANY_TAG, SUCCESS
            self._nbytes, self.cancelled = 0, False

    def _set(self, source: int, tag: int, nbytes: int) -> None:
        self.source, self.tag, self._nbytes = source, tag, nbytes

    def Get_source(self) -> int:
        return self.source

    def Set_source(self, source: int) -> None:
        self.source = source

    def Get_tag(self) -> int:
        return self.tag

    def Set_tag(self, tag: int) -> None:
        self.tag = tag

    def Get_error(self) -> int:
        return self.error

    def Set_error(self, error: int) -> None:
        self.error = error

    def Get_count(self, datatype=None) -> int:
        """Elements of `datatype` (bytes if None) the message held."""
        if datatype is None:
            return self._nbytes
        size = datatype.Get_size() if hasattr(datatype, "Get_size") else datatype.itemsize
        extent = datatype.extent if hasattr(datatype, "extent") else size
        return self._nbytes // extent if self._nbytes % extent == 0 else UNDEFINED

    def Get_elements(self, datatype) -> int:
        return self.Get_count(datatype)

    def Is_cancelled(self) -> bool:
        return self.cancelled

    @property
    def count(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        return f"<shoal MPI.Status source={self.source} tag={self.tag} bytes={self._nbytes}>"
