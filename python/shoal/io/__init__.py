"""Data bigger than memory: references to the chunks of a zarr array and the
parts of a parquet dataset, which a pool's workers read straight from
storage.

    import shoal

    def stats(chunk):
        block = chunk.read()                  # read in the worker, not the parent
        return block.mean(), block.std()

    with shoal.Pool() as pool:
        results = pool.map(stats, shoal.io.zarr_chunks("big.zarr"))

A reference holds a path and a selection, nothing else: it pickles in about
a hundred bytes, and the worker opens the store itself (once per process).
The parent holds only references and results, each worker about one chunk
at a time. zarr and pyarrow are imported when first needed; both come with
``pip install "shoal[data]"``.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

TYPE_CHECKING = False

# public name -> submodule that defines it (loaded on first use, so that a
# worker unpickling a zarr reference does not import pyarrow, and so on).
# No submodule shares a public name: importing it would shadow the name.
_EXPORTS = {
    "ZarrChunk": "zarr_ref",
    "zarr_chunks": "zarr_ref",
    "ParquetPart": "parquet_ref",
    "parquet_parts": "parquet_ref",
    "write_zarr_dataset": "datasets",
    "write_parquet_dataset": "datasets",
}

__all__ = [
    "MissingDependencyError",
    "ParquetPart",
    "ZarrChunk",
    "parquet_parts",
    "write_parquet_dataset",
    "write_zarr_dataset",
    "zarr_chunks",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal.io' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .datasets import write_parquet_dataset, write_zarr_dataset
    from .parquet_ref import ParquetPart, parquet_parts
    from .zarr_ref import ZarrChunk, zarr_chunks
