"""The workshops' datasets, made on this machine (nothing is downloaded): a
blosc-compressed zarr array of about 2 GB and a parquet dataset of 16
files. Both are written in parallel on a ``shoal.ThreadPool``: compression
and encoding release the GIL, and each thread writes chunks or files no
other thread touches.

    shoal.io.write_zarr_dataset("field.zarr")              # 2 GiB of float32, 64 chunks
    shoal.io.write_parquet_dataset("weather/")             # 16 files

or ``shoal datasets DIR``. The values are made from a seed, chunk by chunk,
so the same call writes the same data, and memory stays at a chunk per
thread whatever the size.
"""

from __future__ import annotations

import os

from .common import need

#: Columns of the zarr array: a chunk is a band of rows this wide.
ZARR_COLUMNS = 4096
#: Weather stations in the parquet dataset (the group-by key).
STATIONS = 1000

_WHAT = "shoal.io.datasets"


def _field_block(index: int, start: int, rows: int, columns: int, seed: int):
    """Rows ``start..start+rows`` of the field: a smooth pattern plus noise,
    rounded to hundredths (like a sensor's readings), float32."""
    import numpy as np

    rng = np.random.default_rng((seed, index))
    y = np.arange(start, start + rows, dtype=np.float32)[:, None]
    x = np.arange(columns, dtype=np.float32)[None, :]
    block = rng.standard_normal((rows, columns), dtype=np.float32)
    block += 15.0 + 10.0 * np.sin(y / 300.0) * np.cos(x / 500.0)
    return np.round(block, 2, out=block)


def _write_field_chunk(ref, out: str, seed: int) -> int:
    block = _field_block(ref.index, ref.start[0], ref.shape[0], ref.shape[1], seed)
    ref.write(block, out)
    return block.nbytes


def write_zarr_dataset(
    path,
    *,
    nbytes: int = 2 << 30,
    chunks: int = 64,
    columns: int = ZARR_COLUMNS,
    seed: int = 0,
    workers: int | None = None,
) -> str:
    """Writes a float32 zarr array (format 3) of about ``nbytes`` in
    ``chunks`` bands of rows, each compressed with blosc (lz4, byte
    shuffle), to the directory ``path`` (replaced if it exists). Returns the
    path. The default is the workshop's: 2 GiB in 64 chunks of 32 MiB."""
    zarr = need("zarr", _WHAT)
    from zarr.codecs import BloscCodec

    from ..pool.threadpool import ThreadPool
    from .zarr_ref import zarr_chunks

    if chunks < 1 or nbytes < 1 or columns < 1:
        raise ValueError("nbytes, chunks and columns must be positive")
    columns = min(columns, max(1, nbytes // 4))
    per_chunk = max(1, nbytes // (4 * columns * chunks))
    path = os.path.abspath(os.fspath(path))
    zarr.create_array(
        store=path,
        shape=(per_chunk * chunks, columns),
        chunks=(per_chunk, columns),
        dtype="float32",
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        overwrite=True,
    )
    refs = zarr_chunks(path)
    with ThreadPool(workers) as pool:
        pool.starmap(_write_field_chunk, [(ref, path, seed) for ref in refs], chunksize=1)
    return path


def _weather_table(index: int, rows: int, seed: int):
    """One file's rows: station, day, temperature, humidity."""
    import numpy as np

    pa = need("pyarrow", _WHAT)
    rng = np.random.default_rng((seed, 1, index))
    station = rng.integers(0, STATIONS, rows, dtype=np.int32)
    day = np.full(rows, index, dtype=np.int32)
    temp = 10.0 + station * 0.01 + rng.standard_normal(rows) * 5.0
    humidity = rng.uniform(20.0, 100.0, rows)
    return pa.table({"station": station, "day": day, "temp": temp, "humidity": humidity})


def _write_weather_file(path: str, index: int, rows: int, row_group: int, seed: int) -> int:
    pq = need("pyarrow.parquet", _WHAT)
    table = _weather_table(index, rows, seed)
    pq.write_table(table, os.path.join(path, f"part-{index:03d}.parquet"), row_group_size=row_group)
    return table.num_rows


def write_parquet_dataset(
    path,
    *,
    files: int = 16,
    rows_per_file: int = 2_000_000,
    row_group_size: int = 500_000,
    seed: int = 0,
    workers: int | None = None,
) -> str:
    """Writes a parquet dataset of ``files`` files (``part-000.parquet``,
    ...) into the directory ``path`` (files of that name are replaced),
    each with ``rows_per_file`` weather readings (station, day, temp,
    humidity) in row groups of ``row_group_size``. Returns the path."""
    need("pyarrow.parquet", _WHAT)
    from ..pool.threadpool import ThreadPool

    if files < 1 or rows_per_file < 1 or row_group_size < 1:
        raise ValueError("files, rows_per_file and row_group_size must be positive")
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    jobs = [(path, i, rows_per_file, row_group_size, seed) for i in range(files)]
    with ThreadPool(workers) as pool:
        pool.starmap(_write_weather_file, jobs, chunksize=1)
    return path
