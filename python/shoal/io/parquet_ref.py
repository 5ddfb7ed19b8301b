"""References to the parts of a parquet file or dataset, which workers read
themselves.

    def totals(part):
        table = part.read()                   # a pyarrow Table, read in the worker
        return table.group_by("station").aggregate([("temp", "sum"), ("temp", "count")])

    with shoal.Pool() as pool:
        tables = pool.map(totals, shoal.io.parquet_parts("weather/", columns=["station", "temp"]))

A :class:`ParquetPart` names one row group of one file (or a whole file),
the columns to read, the filters to apply and the file's hive partition
values (``year=2024/``), so that ``read()`` returns what reading the
dataset with those columns and filters would have given for that part.
Filters also prune: parts whose partition values or row-group statistics
rule them out are not made at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .common import ProcessCache, fspath, need, stamp

_WHAT = "shoal.io.parquet_parts"

#: Per process: each file's arrow schema (from its footer), by path and stamp.
_footers = ProcessCache(limit=1024)

_PER = ("row_group", "file")


def _filter_expression(filters):
    """pyarrow's filter expression for ``filters`` (an expression, or
    tuples in disjunctive normal form as ``pyarrow.parquet`` takes), or
    None."""
    if filters is None:
        return None
    ds = need("pyarrow.dataset", _WHAT)
    if isinstance(filters, ds.Expression):
        return filters
    pq = need("pyarrow.parquet", _WHAT)
    try:
        return pq.filters_to_expression(filters)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"filters must be a pyarrow expression or a list of (column, op, value) tuples "
            f"(or a list of such lists, OR-ed), got {filters!r}: {exc}"
        ) from exc


def _frozen(filters):
    """DNF filters as nested tuples: equal filters pickle to equal bytes
    (checkpoint keys), and lists cannot change under a part."""
    if isinstance(filters, list | tuple):
        return tuple(_frozen(f) for f in filters)
    if isinstance(filters, set | frozenset):  # ("col", "in", {...})
        return tuple(sorted(filters, key=repr))
    return filters


def _partition_type(kind: str):
    """The arrow type named ``kind`` (as ``str(type)`` spells it), or None."""
    pa = need("pyarrow", _WHAT)
    try:
        return pa.type_for_alias(kind)
    except ValueError:
        return None


class ParquetPart:
    """One row group of a parquet file (``row_group``, or None for the whole
    file), with the columns and filters to read it with and the file's
    partition values (``((name, value, type), ...)``, the type as arrow spells
    it). Cheap to pickle: no open
    file inside."""

    __slots__ = ("columns", "filters", "index", "partition", "path", "row_group")

    def __init__(
        self,
        path: str,
        row_group: int | None,
        columns: tuple | None = None,
        filters=None,
        partition: tuple = (),
        index: int = 0,
    ) -> None:
        self.path = path
        self.row_group = row_group
        self.columns = columns
        self.filters = filters
        self.partition = partition
        self.index = index

    def __reduce__(self):
        return (
            ParquetPart,
            (self.path, self.row_group, self.columns, self.filters, self.partition, self.index),
        )

    def _key(self) -> tuple:
        return (self.path, self.row_group, self.columns, repr(self.filters), self.partition)

    def __eq__(self, other) -> bool:
        return isinstance(other, ParquetPart) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        what = "whole file" if self.row_group is None else f"row group {self.row_group}"
        return f"ParquetPart({self.path!r}, {what}, index={self.index})"

    def read(self):
        """This part as a ``pyarrow.Table``: its columns (partition columns
        included), its rows that pass the filters."""
        pa = need("pyarrow", _WHAT)
        ds = need("pyarrow.dataset", _WHAT)
        fs = need("pyarrow.fs", _WHAT)
        schema = _file_schema(self.path)
        expression = None
        for name, value, kind in self.partition:
            scalar = pa.scalar(value, type=_partition_type(kind))
            if name not in schema.names:
                schema = schema.append(pa.field(name, scalar.type))
            term = ds.field(name) == scalar
            expression = term if expression is None else expression & term
        fmt = ds.ParquetFileFormat()
        row_groups = None if self.row_group is None else [self.row_group]
        fragment = fmt.make_fragment(
            self.path,
            filesystem=fs.LocalFileSystem(),
            row_groups=row_groups,
            partition_expression=expression,
        )
        columns = None if self.columns is None else list(self.columns)
        return fragment.to_table(
            schema=schema, columns=columns, filter=_filter_expression(self.filters)
        )


def _file_schema(path: str):
    """The arrow schema of a parquet file, from its footer (read once per
    process)."""
    pq = need("pyarrow.parquet", _WHAT)

    def opener():
        return pq.read_schema(path)

    return _footers.get(("schema", path, stamp(path)), opener)


def _not_parquet(path: str, exc: BaseException) -> ValueError:
    return ValueError(f"{path} is not parquet data: {exc}")


class ParquetParts(Sequence):
    """The references of :func:`parquet_parts`, in dataset order."""

    def __init__(self, path: str, parts: list[ParquetPart]) -> None:
        self.path = path
        self._parts = parts

    def __len__(self) -> int:
        return len(self._parts)

    def __getitem__(self, i):
        return self._parts[i]

    def __repr__(self) -> str:
        return f"<{len(self)} parquet parts of {self.path}>"


def parquet_parts(
    path_or_dir, *, columns=None, filters=None, per: str = "row_group"
) -> ParquetParts:
    """References to the parts of a parquet file, or of a directory of them
    (hive partitions such as ``year=2024/`` become columns), for a pool's
    workers to read (``part.read()`` returns a ``pyarrow.Table``).

    One part per row group (``per="row_group"``) or per file
    (``per="file"``). ``columns`` picks columns; ``filters`` is a pyarrow
    expression or ``pyarrow.parquet``'s list of ``(column, op, value)``
    tuples: parts ruled out by partition values or row-group statistics are
    left out, and each part's rows are filtered when read. Raises
    ``FileNotFoundError`` for a missing path and ``ValueError`` for a path
    that holds no parquet data, an unknown column, or bad filters."""
    path = fspath(path_or_dir, "path_or_dir")
    if per not in _PER:
        raise ValueError(f"per must be 'row_group' or 'file', got {per!r}")
    ds = need("pyarrow.dataset", _WHAT)
    pa = need("pyarrow", _WHAT)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such file or directory; {_WHAT} needs a parquet file or a "
            "directory of them"
        )
    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise _not_parquet(path, exc) from exc
    if not dataset.files:
        raise ValueError(
            f"{path} is not parquet data: no parquet files in it (files whose names "
            "start with '_' or '.' are skipped)"
        )
    if columns is not None:
        if isinstance(columns, str):
            raise TypeError(f"columns must be a list of names, got the string {columns!r}")
        columns = tuple(columns)
        unknown = [c for c in columns if c not in dataset.schema.names]
        if unknown:
            raise ValueError(
                f"no column {', '.join(map(repr, unknown))} in {path}; its columns: "
                f"{', '.join(dataset.schema.names)}"
            )
    frozen = filters if isinstance(filters, ds.Expression) else _frozen(filters)
    expression = _filter_expression(frozen)
    parts: list[ParquetPart] = []
    try:
        fragments = list(dataset.get_fragments(filter=expression))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(
            f"filters {filters!r} do not fit {path} ({exc}); its columns: "
            f"{', '.join(dataset.schema.names)}"
        ) from exc
    try:
        for fragment in fragments:
            keys = ds.get_partition_keys(fragment.partition_expression)
            partition = tuple(
                (name, value, str(dataset.schema.field(name).type))
                for name, value in sorted(keys.items())
            )
            if expression is None:
                pieces = [rg.id for rg in fragment.row_groups]
            else:  # the row groups whose statistics the filters let through
                pieces = [
                    piece.row_groups[0].id
                    for piece in fragment.split_by_row_group(expression, schema=dataset.schema)
                ]
            if per == "file":
                pieces = [None] if pieces else []
            for row_group in pieces:
                parts.append(
                    ParquetPart(
                        os.path.abspath(fragment.path),
                        row_group,
                        columns,
                        frozen,
                        partition,
                        len(parts),
                    )
                )
    except pa.ArrowInvalid as exc:  # a file among them that is not parquet
        raise _not_parquet(path, exc) from exc
    return ParquetParts(path, parts)
