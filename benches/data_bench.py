"""The data and compiled-kernel workloads of ``compare.py``: each run of one
library happens in a fresh interpreter of its own, so that its memory is
its own and no library's imports or threads slow another's.

    python benches/data_bench.py prepare DIR [--quick]
    python benches/data_bench.py run WORKLOAD LIBRARY DIR [--quick]   # prints JSON

Workloads (2 workers):

zarr-stats        per-chunk mean and standard deviation of a blosc-compressed
                  float32 zarr array (2 GiB in 64 chunks of 32 MiB): serial
                  zarr, a serial loop over shoal.io.zarr_chunks (its reads
                  decompress straight into the block: the read path alone),
                  shoal.Pool and shoal.ThreadPool over the same references,
                  dask.array (from_zarr + map_blocks)
                  on its threaded scheduler. Reports time and the peak memory
                  above the base (pool up, libraries imported, codecs loaded
                  on a tiny array): each process's peak RSS above its base,
                  as the kernel keeps it (VmHWM), summed over the parent and
                  its workers (an upper bound: they need not peak together).
parquet-groupby   per station: mean and count of temperature, maximum
                  humidity, over a 16-file parquet dataset (32 M rows):
                  serial pyarrow.dataset (use_threads=False), pyarrow with its
                  own threads (2), shoal.ThreadPool and shoal.Pool over
                  shoal.io.parquet_parts (partial aggregates, combined in the
                  parent), dask.dataframe on its threaded scheduler.
numba-mandelbrot  the Mandelbrot set, 2000 x 2000, at most 500 iterations, as
                  a numba @njit(nogil=True) kernel: serial, shoal.parallel_for
                  over rows on 2 threads (dynamic, 16 rows a chunk), numba's
                  own prange on 2 threads.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples", "kernels"))

WORKERS = 2
WORKLOADS = {
    "zarr-stats": ("serial", "serial-refs", "shoal", "shoal-threads", "dask"),
    "parquet-groupby": ("serial", "pyarrow-threads", "shoal-threads", "shoal", "dask"),
    "numba-mandelbrot": ("serial", "shoal-threads", "numba-prange"),
}
ZARR_BYTES, ZARR_CHUNKS = 2 << 30, 64
PARQUET_FILES, PARQUET_ROWS = 16, 2_000_000
MANDELBROT = (2000, 500)  # size, max_iter


def sizes(quick: bool) -> dict:
    scale = 16 if quick else 1
    return {
        "zarr_bytes": ZARR_BYTES // scale,
        "parquet_rows": PARQUET_ROWS // scale,
        "mandelbrot": (MANDELBROT[0] // 4, MANDELBROT[1]) if quick else MANDELBROT,
    }


def paths(root: str) -> dict:
    return {
        "zarr": os.path.join(root, "field.zarr"),
        "warm": os.path.join(root, "warm.zarr"),
        "parquet": os.path.join(root, "weather"),
    }


def prepare(root: str, quick: bool) -> dict:
    """Writes the datasets (if not there already) and reads them once, so
    that every library finds them in the page cache."""
    import shoal.io

    size, where = sizes(quick), paths(root)
    if not os.path.isdir(where["zarr"]):
        shoal.io.write_zarr_dataset(where["zarr"], nbytes=size["zarr_bytes"], chunks=ZARR_CHUNKS)
    if not os.path.isdir(where["warm"]):
        shoal.io.write_zarr_dataset(where["warm"], nbytes=256 << 10, chunks=4)
    if not os.path.isdir(where["parquet"]):
        shoal.io.write_parquet_dataset(
            where["parquet"], files=PARQUET_FILES, rows_per_file=size["parquet_rows"]
        )
    on_disk = 0
    for top in where.values():
        for directory, _, files in os.walk(top):
            for name in files:
                with open(os.path.join(directory, name), "rb") as f:
                    while block := f.read(1 << 24):
                        on_disk += len(block)
    return {"on_disk": on_disk, **size}


# ---------------------------------------------------------------- zarr-stats
def block_stats(block):
    """Mean and standard deviation of one block, as every library runs it."""
    return float(block.mean()), float(block.std())


def ref_stats(ref):
    return block_stats(ref.read())


def zarr_run(lib: str, where: dict):
    """``(prepare, run)``: prepare starts pools and loads the codecs
    (untimed, part of the base), run does the pass."""
    import numpy as np

    if lib == "serial":
        import zarr

        def run():
            array = zarr.open_array(where["zarr"], mode="r")
            step = array.chunks[0]
            return [block_stats(array[i : i + step]) for i in range(0, array.shape[0], step)]

        return (lambda: zarr.open_array(where["warm"], mode="r")[...]), run, None
    if lib == "serial-refs":
        import shoal.io

        def warm_refs():
            return [ref_stats(r) for r in shoal.io.zarr_chunks(where["warm"])]

        return warm_refs, lambda: [ref_stats(r) for r in shoal.io.zarr_chunks(where["zarr"])], None
    if lib in ("shoal", "shoal-threads"):
        import shoal
        import shoal.io

        pool = (shoal.Pool if lib == "shoal" else shoal.ThreadPool)(WORKERS)

        def warm():
            pool.map(ref_stats, list(shoal.io.zarr_chunks(where["warm"])) * WORKERS, chunksize=1)

        return (
            warm,
            lambda: pool.map(ref_stats, shoal.io.zarr_chunks(where["zarr"])),
            pool.terminate,
        )
    if lib == "dask":
        import dask
        import dask.array as da

        def stats_block(block):
            return np.array([block_stats(block)])

        def run_on(path):
            x = da.from_zarr(path)
            y = x.map_blocks(stats_block, chunks=(1, 2), dtype=float)
            out = y.compute(scheduler="threads", num_workers=WORKERS)
            return [tuple(row) for row in out]

        dask.config.set(scheduler="threads", num_workers=WORKERS)
        return (lambda: run_on(where["warm"])), (lambda: run_on(where["zarr"])), None
    raise SystemExit(f"zarr-stats: unknown library {lib!r}")


# ----------------------------------------------------------- parquet-groupby
COLUMNS = ["station", "temp", "humidity"]


def partial_aggregate(part):
    """One part's sums, counts and maxima per station (combined later)."""
    table = part.read()
    return table.group_by("station", use_threads=False).aggregate(
        [("temp", "sum"), ("temp", "count"), ("humidity", "max")]
    )


def combine(tables):
    """The per-station mean and count of temperature and maximum humidity
    from partial aggregates, sorted by station."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = (
        pa.concat_tables(tables)
        .group_by("station")
        .aggregate([("temp_sum", "sum"), ("temp_count", "sum"), ("humidity_max", "max")])
        .sort_by("station")
    )
    mean = pc.divide(total["temp_sum_sum"], pc.cast(total["temp_count_sum"], "float64"))
    return summary(total["station"], mean, total["temp_count_sum"], total["humidity_max_max"])


def summary(station, mean, count, humidity) -> dict:
    """The answer in a form every library's result is compared in."""
    return {
        "stations": len(station),
        "count": int(sum(count.to_pylist() if hasattr(count, "to_pylist") else count)),
        "mean_of_means": float(sum(mean.to_pylist() if hasattr(mean, "to_pylist") else mean))
        / len(station),
        "max_humidity": float(
            max(humidity.to_pylist() if hasattr(humidity, "to_pylist") else humidity)
        ),
    }


def parquet_run(lib: str, where: dict):
    if lib in ("serial", "pyarrow-threads"):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        threads = lib != "serial"
        if threads:
            pa.set_cpu_count(WORKERS)
            pa.set_io_thread_count(WORKERS)

        def run():
            table = ds.dataset(where["parquet"], format="parquet").to_table(
                columns=COLUMNS, use_threads=threads
            )
            out = (
                table.group_by("station", use_threads=threads)
                .aggregate([("temp", "mean"), ("temp", "count"), ("humidity", "max")])
                .sort_by("station")
            )
            return summary(out["station"], out["temp_mean"], out["temp_count"], out["humidity_max"])

        return (lambda: pc.sum(pa.array([1]))), run, None
    if lib in ("shoal", "shoal-threads"):
        import shoal
        import shoal.io

        pool = (shoal.Pool if lib == "shoal" else shoal.ThreadPool)(WORKERS)
        parts = shoal.io.parquet_parts(where["parquet"], columns=COLUMNS, per="file")

        def warm():
            pool.map(partial_aggregate, [parts[0]] * WORKERS, chunksize=1)

        return (
            warm,
            lambda: combine(pool.map(partial_aggregate, parts, chunksize=1)),
            pool.terminate,
        )
    if lib == "dask":
        import dask.dataframe as dd

        def run():
            df = dd.read_parquet(where["parquet"], columns=COLUMNS)
            out = (
                df.groupby("station")
                .agg({"temp": ["mean", "count"], "humidity": "max"})
                .compute(scheduler="threads", num_workers=WORKERS)
                .sort_index()
            )
            return summary(
                list(out.index),
                list(out[("temp", "mean")]),
                list(out[("temp", "count")]),
                list(out[("humidity", "max")]),
            )

        def warm():
            dd.read_parquet(where["parquet"], columns=COLUMNS).head(1)

        return warm, run, None
    raise SystemExit(f"parquet-groupby: unknown library {lib!r}")


# ---------------------------------------------------------- numba-mandelbrot
def mandelbrot_run(lib: str, size: int, max_iter: int):
    import numba
    import numba_kernels as nk
    import numpy as np

    image = np.zeros((size, size), dtype=np.int32)
    nk.mandelbrot_rows(image[:1], 0, 1, 1)  # compiled (or loaded) before timing
    if lib == "serial":

        def run():
            nk.mandelbrot_rows(image, 0, size, max_iter)
            return int(image.sum())

        return (lambda: None), run, None
    if lib == "shoal-threads":
        import shoal

        pool = shoal.ThreadPool(WORKERS)

        def rows(start, stop):
            nk.mandelbrot_rows(image, start, stop, max_iter)

        def run():
            shoal.parallel_for(size, rows, schedule="dynamic", chunk=16, backend=pool)
            return int(image.sum())

        return (lambda: shoal.parallel_for(4, lambda i: None, backend=pool)), run, pool.terminate
    if lib == "numba-prange":
        numba.set_num_threads(WORKERS)
        nk.mandelbrot_prange(image[:2], 1)

        def run():
            nk.mandelbrot_prange(image, max_iter)
            return int(image.sum())

        return (lambda: None), run, None
    raise SystemExit(f"numba-mandelbrot: unknown library {lib!r}")


# ---------------------------------------------------------------- measuring
def measure(workload: str, lib: str, root: str, quick: bool) -> dict:
    from peak_memory import Growth

    where = paths(root)
    if workload == "zarr-stats":
        warm, run, close = zarr_run(lib, where)
    elif workload == "parquet-groupby":
        warm, run, close = parquet_run(lib, where)
    else:
        warm, run, close = mandelbrot_run(lib, *sizes(quick)["mandelbrot"])
    try:
        warm()
        time.sleep(0.1)
        with Growth(sample=False) as grown:  # the kernel's peaks: no sampling thread
            began = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - began
    finally:
        if close is not None:
            close()
    out = {
        "seconds": seconds,
        "base": grown.base,
        "grew": grown.hwm,
        "result": result,
    }
    if workload == "zarr-stats":
        import zarr

        array = zarr.open_array(where["zarr"], mode="r")
        out["chunk_bytes"] = array.chunks[0] * array.chunks[1] * array.dtype.itemsize
        out["array_bytes"] = array.nbytes
    return out


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    if argv[:1] == ["prepare"] and len(argv) == 2:
        print(json.dumps(prepare(argv[1], quick)))
    elif argv[:1] == ["run"] and len(argv) == 4:
        print(json.dumps(measure(argv[1], argv[2], argv[3], quick)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
