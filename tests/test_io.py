"""shoal.io: references to zarr chunks and parquet parts, read and written by
the workers themselves, on real zarr arrays and parquet files.

The kill-and-resume, bounded-memory and missing-dependency tests run in a
child interpreter (with timeouts)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import io_helpers as io_h
import numpy as np
import pytest
import shoal

zarr = pytest.importorskip("zarr", reason="shoal.io's zarr tests need zarr (the data extra)")
pa = pytest.importorskip("pyarrow", reason="shoal.io's parquet tests need pyarrow (the data extra)")
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import shoal.io  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TESTS = os.path.dirname(os.path.abspath(__file__))
BENCHES = os.path.join(os.path.dirname(TESTS), "benches")
CHILD_TIMEOUT = 90


def child_env() -> dict:
    """A child interpreter imports this shoal and the tests' helpers."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [TESTS, *sys.path] if p)}


def make_array(path, data, chunks, **kwargs):
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, **kwargs
    )
    array[...] = data
    return array


def covered(refs, shape) -> np.ndarray:
    """How many references cover each element."""
    count = np.zeros(shape, dtype=int)
    for ref in refs:
        count[ref.selection] += 1
    return count


# ------------------------------------------------------------ zarr references
def test_references_tile_the_array_once(tmp_path):
    data = np.arange(50 * 7, dtype="int32").reshape(50, 7)
    make_array(tmp_path / "a.zarr", data, chunks=(8, 3))
    path = str(tmp_path / "a.zarr")
    for kwargs, n in (
        ({}, 7 * 3),  # a reference per chunk, the edge chunks smaller
        ({"batch": 3}, 3 * 3),  # 3 chunks along the first axis
        ({"axis": 1}, 3),  # slabs along the columns, every row
        ({"axis": 0, "batch": 2}, 4),  # slabs of 16 rows, every column
        ({"axis": -1, "batch": 5}, 1),
    ):
        refs = shoal.io.zarr_chunks(path, **kwargs)
        assert len(refs) == n == len(list(refs)), kwargs
        assert (covered(refs, data.shape) == 1).all(), kwargs
        assert [r.index for r in refs] == list(range(n))
        blocks = {r.start: r.read() for r in refs}
        for ref in refs:
            np.testing.assert_array_equal(blocks[ref.start], data[ref.selection])
            assert blocks[ref.start].shape == ref.shape
    refs = shoal.io.zarr_chunks(path, axis=1)
    assert refs[1].selection == (slice(0, 50), slice(3, 6))
    assert refs[-1] == refs[2] and refs[1:] == [refs[1], refs[2]]
    with pytest.raises(IndexError):
        refs[3]


def test_a_reference_is_small_and_holds_no_open_store(zarr_dataset, tmp_path):
    refs = shoal.io.zarr_chunks(zarr_dataset)
    data = pickle.dumps(refs[5])
    assert len(data) < 160 + len(zarr_dataset), len(data)
    assert pickle.loads(data) == refs[5]
    # Unpickled elsewhere, it imports neither zarr nor numpy until read.
    (tmp_path / "ref.pickle").write_bytes(data)
    code = textwrap.dedent(
        f"""
        import pickle, sys
        ref = pickle.loads(open({str(tmp_path / "ref.pickle")!r}, "rb").read())
        print(sorted(m for m in ("zarr", "numpy") if m in sys.modules))
        print(ref.read().shape)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", str(refs[5].shape)]


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_pool_map_over_the_chunks(zarr_dataset, kind):
    whole = zarr.open_array(zarr_dataset, mode="r")[...]
    refs = shoal.io.zarr_chunks(zarr_dataset)
    Pool = shoal.Pool if kind == "processes" else shoal.ThreadPool
    with Pool(2) as pool:
        stats = pool.map(io_h.chunk_stats, refs)
    assert len(stats) == 16
    for ref, (mean, std) in zip(refs, stats, strict=True):
        block = whole[ref.selection]
        assert mean == pytest.approx(float(block.mean()), rel=1e-6)
        assert std == pytest.approx(float(block.std()), rel=1e-6)


def test_shoal_map_and_imap_take_references(zarr_dataset):
    refs = shoal.io.zarr_chunks(zarr_dataset, batch=4)
    expected = [io_h.chunk_sum(r) for r in refs]
    assert shoal.map(io_h.chunk_sum, refs, workers=2) == expected
    with shoal.Pool(2) as pool:
        assert list(pool.imap(io_h.chunk_sum, iter(refs))) == expected


def test_progress_counts_chunks(zarr_dataset, capsys):
    seen = []
    with shoal.Pool(2) as pool:
        pool.map(
            io_h.chunk_sum,
            shoal.io.zarr_chunks(zarr_dataset),
            on_progress=lambda done, total: seen.append((done, total)),
            progress="always",
        )
    assert seen[-1] == (16, 16)
    assert "16/16" in capsys.readouterr().err


def test_a_thread_pool_with_checkpoint_and_progress(zarr_dataset, tmp_path, capsys):
    store, log = str(tmp_path / "run.sqlite"), str(tmp_path / "log")
    stats = functools.partial(io_h.logged_stats, log, 0.0)
    refs = shoal.io.zarr_chunks(zarr_dataset)
    with shoal.ThreadPool(2) as pool:
        first = pool.map(stats, refs, checkpoint=store, progress="always")
        again = pool.map(stats, shoal.io.zarr_chunks(zarr_dataset), checkpoint=store)
    assert first == again == [io_h.chunk_stats(r) for r in refs]
    assert sorted(calls(log)) == list(range(16)), "the second pass computed nothing"
    assert "16/16" in capsys.readouterr().err


def test_each_worker_opens_the_array_once(zarr_dataset):
    with shoal.Pool(1) as pool:
        counts = pool.map(io_h.opened_arrays, shoal.io.zarr_chunks(zarr_dataset), chunksize=1)
    assert counts == [1] * 16


def test_an_array_rewritten_under_the_same_path_is_opened_again(tmp_path):
    path = tmp_path / "a.zarr"
    make_array(path, np.zeros((4, 4)), chunks=(2, 4))
    ref = shoal.io.zarr_chunks(path)[0]
    assert ref.read().sum() == 0
    time.sleep(0.01)  # a new modification time, even on coarse clocks
    zarr.create_array(store=str(path), shape=(4, 4), chunks=(2, 4), dtype="f8", overwrite=True)[
        ...
    ] = np.ones((4, 4))
    assert ref.read().sum() == 8


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_workers_write_an_aligned_output(zarr_dataset, tmp_path, kind):
    source = zarr.open_array(zarr_dataset, mode="r")
    out = str(tmp_path / "twice.zarr")
    zarr.create_array(store=out, shape=source.shape, chunks=source.chunks, dtype=source.dtype)
    Pool = shoal.Pool if kind == "processes" else shoal.ThreadPool
    with Pool(2) as pool:
        pool.starmap(io_h.double_into, [(out, r) for r in shoal.io.zarr_chunks(zarr_dataset)])
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], source[...] * 2)


def test_write_into_an_array_object(tmp_path):
    data = np.arange(60, dtype="float64").reshape(6, 10)
    make_array(tmp_path / "a.zarr", data, chunks=(2, 5))
    out = zarr.create_array(
        store=str(tmp_path / "o.zarr"), shape=(6, 10), chunks=(2, 5), dtype="f8"
    )
    refs = shoal.io.zarr_chunks(tmp_path / "a.zarr")
    with shoal.ThreadPool(2) as pool:
        pool.map(lambda r: r.write(-r.read(), out), refs)
    np.testing.assert_array_equal(out[...], -data)


def test_format_2_arrays_and_an_opened_array(tmp_path):
    data = np.arange(30, dtype="int16").reshape(10, 3)
    array = make_array(tmp_path / "v2.zarr", data, chunks=(4, 3), zarr_format=2)
    assert os.path.isfile(tmp_path / "v2.zarr" / ".zarray")
    refs = shoal.io.zarr_chunks(array)  # an opened array: its directory is found
    assert refs.path == str(tmp_path / "v2.zarr")
    assert np.concatenate([r.read() for r in refs]).tolist() == data.tolist()
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    inner = group.create_array("temps", shape=(4,), chunks=(2,), dtype="f4")
    inner[:] = [1, 2, 3, 4]
    assert [r.read().tolist() for r in shoal.io.zarr_chunks(inner)] == [[1, 2], [3, 4]]


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "complex128"])
def test_blosc_chunks_are_decompressed_straight_into_the_block(tmp_path, dtype):
    """The common layout (bytes + blosc) is read without zarr's copies: the
    same blocks, edge chunks cut to the array, unwritten chunks filled."""
    from shoal.io import zarr_ref

    path = str(tmp_path / "b.zarr")
    data = (np.arange(23 * 9) % 251).astype(dtype).reshape(23, 9)
    array = zarr.create_array(
        store=path,
        shape=data.shape,
        chunks=(5, 4),
        dtype=dtype,
        fill_value=7,
        compressors=zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle"),
    )
    array[:10] = data[:10]  # rows 10.. stay unwritten: zarr stores no chunk there
    expected = np.full(data.shape, 7, dtype=dtype)
    expected[:10] = data[:10]
    refs = shoal.io.zarr_chunks(path)
    for ref in refs:
        block = ref.read()
        assert block.dtype == np.dtype(dtype) and block.shape == ref.shape
        np.testing.assert_array_equal(block, expected[ref.selection])
    assert isinstance(zarr_ref._reader(path)[1], zarr_ref._Direct)
    # A reference of several chunks, or another codec, goes through zarr.
    (slab,) = shoal.io.zarr_chunks(path, axis=0, batch=5)
    np.testing.assert_array_equal(slab.read(), expected)
    make_array(tmp_path / "z.zarr", data, chunks=(5, 4))  # zarr's default: zstd
    assert zarr_ref._reader(str(tmp_path / "z.zarr"))[1] is False
    # A damaged chunk is zarr's to report, never garbage in a block.
    with open(os.path.join(path, "c", "0", "0"), "wb") as f:
        f.write(b"not blosc at all, not at all")
    with pytest.raises(RuntimeError, match="blosc decompression"):
        refs[0].read()


def test_references_follow_shards(tmp_path):
    data = np.arange(64, dtype="uint8").reshape(8, 8)
    make_array(tmp_path / "s.zarr", data, chunks=(2, 2), shards=(4, 8))
    refs = shoal.io.zarr_chunks(tmp_path / "s.zarr")
    assert [r.shape for r in refs] == [(4, 8), (4, 8)]
    assert np.concatenate([r.read() for r in refs]).tolist() == data.tolist()


def test_an_empty_and_a_scalar_array(tmp_path):
    make_array(tmp_path / "e.zarr", np.zeros((0, 4)), chunks=(2, 2))
    assert len(shoal.io.zarr_chunks(tmp_path / "e.zarr")) == 0
    scalar = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=(), dtype="f8")
    scalar[()] = 2.5
    (ref,) = shoal.io.zarr_chunks(tmp_path / "s.zarr")
    assert ref.read() == 2.5 and ref.shape == ()


# ------------------------------------------------------------ zarr: bad input
def test_paths_that_are_not_zarr_arrays(tmp_path, zarr_dataset):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        shoal.io.zarr_chunks(tmp_path / "missing.zarr")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is a file, not a zarr array"):
        shoal.io.zarr_chunks(tmp_path / "notes.txt")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"neither zarr\.json .* nor \.zarray"):
        shoal.io.zarr_chunks(tmp_path / "plain")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("temps", shape=(4,), dtype="f4")
    with pytest.raises(ValueError, match="zarr group, not an array.*arrays in it: temps"):
        shoal.io.zarr_chunks(tmp_path / "g.zarr")
    with pytest.raises(ValueError, match="local directory"):
        shoal.io.zarr_chunks(
            zarr.create_array(store=zarr.storage.MemoryStore(), shape=(3,), dtype="i4")
        )
    with pytest.raises(TypeError, match="zarr array or the path"):
        shoal.io.zarr_chunks(42)
    for bad in ({"batch": 0}, {"batch": 1.5}, {"axis": 2}, {"axis": "rows"}):
        with pytest.raises(ValueError, match="batch|axis"):
            shoal.io.zarr_chunks(zarr_dataset, **bad)


def test_writes_with_the_wrong_shape_dtype_or_grid(zarr_dataset, tmp_path):
    ref = shoal.io.zarr_chunks(zarr_dataset)[1]
    block = ref.read()
    out = str(tmp_path / "out.zarr")
    zarr.create_array(store=out, shape=(256, 4096), chunks=(16, 4096), dtype="float32")
    with pytest.raises(
        ValueError, match=r"shape \(16, 10\), but this chunk .* has shape \(16, 4096\)"
    ):
        ref.write(block[:, :10], out)
    with pytest.raises(TypeError, match=r"dtype float64, but .* holds float32.*astype"):
        ref.write(block.astype("float64"), out)
    coarse = str(tmp_path / "coarse.zarr")
    zarr.create_array(store=coarse, shape=(256, 4096), chunks=(32, 4096), dtype="float32")
    with pytest.raises(ValueError, match="part of a chunk .* overwrite each other"):
        ref.write(block, coarse)
    small = str(tmp_path / "small.zarr")
    zarr.create_array(store=small, shape=(16, 4096), chunks=(16, 4096), dtype="float32")
    with pytest.raises(ValueError, match="does not fit"):
        ref.write(block, small)
    with pytest.raises(FileNotFoundError):
        ref.write(block, tmp_path / "none.zarr")
    ref.write(block, out)  # the right one goes in
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[16:32], block)


# --------------------------------------------------------- out of process
KILLED_CHILD = """
import functools, json, sys
import io_helpers, shoal, shoal.io

if __name__ == "__main__":
    path, store, log, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    with shoal.Pool(2) as pool:
        out = pool.map(functools.partial(io_helpers.logged_stats, log, delay),
                       shoal.io.zarr_chunks(path), checkpoint=store)
    print(json.dumps(out))
"""


def calls(log) -> list[int]:
    try:
        with open(log) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def test_a_killed_pass_resumes_per_chunk(zarr_dataset, tmp_path):
    script, store, log = tmp_path / "job.py", str(tmp_path / "run.sqlite"), str(tmp_path / "log")
    script.write_text(KILLED_CHILD)
    command = [sys.executable, str(script), zarr_dataset, store, log]
    # The same delay both times: it is part of the function's key.
    command.append("0.1")
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while len(calls(log)) < 8:
        assert child.poll() is None, "the pass ended before it could be killed"
        assert time.monotonic() < deadline, "the pass made no progress"
        time.sleep(0.01)
    time.sleep(0.3)  # a commit of the checkpoint store (every 0.25 s) in between
    child.kill()  # kill -9 of the parent: its workers die with it
    child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    before = calls(log)
    stored = shoal._shoal.Store(store).info()[1]
    assert 0 < stored < 16 and len(before) < 16
    done = subprocess.run(
        command, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    expected = [io_h.chunk_stats(r) for r in shoal.io.zarr_chunks(zarr_dataset)]
    assert json.loads(done.stdout) == [list(x) for x in expected]
    rerun = calls(log)[len(before) :]
    assert len(rerun) == 16 - stored, "the re-run computes exactly the chunks not stored"
    assert set(before) | set(rerun) == set(range(16))
    # What ran before the kill and was not stored (running at the kill, or
    # finished after the last commit) runs again; nothing else does.
    assert len(set(before) & set(rerun)) == len(before) - stored


MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from peak_memory import Growth
import io_helpers, shoal, shoal.io

if __name__ == "__main__":
    path, warm, workers, kind = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    Pool = shoal.Pool if kind == "processes" else shoal.ThreadPool
    with Pool(workers) as pool:
        # Workers up, zarr and its codecs loaded, on a tiny array: the base.
        pool.map(io_helpers.chunk_stats, list(shoal.io.zarr_chunks(warm)) * workers, chunksize=1)
        time.sleep(0.1)
        with Growth() as grown:
            pool.map(io_helpers.chunk_stats, shoal.io.zarr_chunks(path))
    print(json.dumps({"sampled": grown.sampled, "hwm": grown.hwm}))
"""


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_memory_stays_bounded_whatever_the_size(tmp_path_factory, kind):
    """A pass over 16 and 48 chunks of 4 MiB on 2 workers: the peak over the
    parent and its workers grows by the chunks in flight, not the array.
    Measured from the kernel's peak RSS of each process (VmHWM, exact)
    summed: an upper bound, as the processes need not peak together."""
    root = tmp_path_factory.mktemp("memory")
    chunk = 4 << 20
    warm = shoal.io.write_zarr_dataset(root / "warm.zarr", nbytes=64 << 10, chunks=4)
    script = root / "probe.py"
    script.write_text(MEMORY_CHILD)
    grew = {}
    for chunks in (16, 48):
        path = shoal.io.write_zarr_dataset(
            root / f"{chunks}.zarr", nbytes=chunks * chunk, chunks=chunks
        )
        done = subprocess.run(
            [sys.executable, str(script), BENCHES, path, warm, "2", kind],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        grew[chunks] = json.loads(done.stdout)
    # A worker holds the chunk's compressed bytes and the block while it
    # reads (blosc decompresses straight into the block), then the block
    # and the one temporary of block.std(): two chunks. Measured: 4.0 to
    # 4.2 chunks for the two workers. Allow two chunks per worker and 8 MiB
    # for the interpreters' own churn: 24 MiB, against arrays of 64 and
    # 192 MiB.
    bound = 2 * 2 * chunk + (8 << 20)
    for chunks, peak in grew.items():
        assert peak["hwm"] <= bound, f"{chunks} chunks: grew by {peak} bytes, bound {bound}"


def test_a_missing_dependency_names_the_extra(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules[sys.argv[1]] = None  # as if it were not installed
        import shoal.io
        try:
            getattr(shoal.io, sys.argv[2])(sys.argv[3])
        except shoal.io.MissingDependencyError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """
    )
    for module, function in (("zarr", "zarr_chunks"), ("pyarrow", "parquet_parts")):
        done = subprocess.run(
            [sys.executable, "-c", code, module, function, str(tmp_path)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        assert f"needs {module}, which is not installed" in done.stdout
        assert 'pip install "shoal[data]"' in done.stdout


# ----------------------------------------------------------- parquet parts
def sorted_table(table):
    return table.sort_by([(name, "ascending") for name in table.column_names])


def test_parts_per_row_group_and_per_file(parquet_dataset):
    whole = pq.read_table(parquet_dataset)
    by_group = shoal.io.parquet_parts(parquet_dataset)
    by_file = shoal.io.parquet_parts(parquet_dataset, per="file")
    assert len(by_group) == 16 * 3 and len(by_file) == 16
    assert {p.row_group for p in by_group} == {0, 1, 2} and {p.row_group for p in by_file} == {None}
    for parts in (by_group, by_file):
        tables = [p.read() for p in parts]
        assert sum(t.num_rows for t in tables) == 48_000
        assert sorted_table(pa.concat_tables(tables)).equals(sorted_table(whole))
    assert [p.index for p in by_group] == list(range(48))


def test_columns_and_filters(parquet_dataset):
    parts = shoal.io.parquet_parts(
        parquet_dataset, columns=["station", "temp"], filters=[("day", "<", 4), ("temp", ">", 12.0)]
    )
    # day is constant per file: statistics rule out the row groups of 12 files.
    assert len(parts) == 4 * 3
    got = pa.concat_tables([p.read() for p in parts])
    assert got.column_names == ["station", "temp"]
    expected = pq.read_table(
        parquet_dataset, columns=["station", "temp"], filters=[("day", "<", 4), ("temp", ">", 12.0)]
    )
    assert sorted_table(got).equals(sorted_table(expected))
    expression = (pads.field("day") == 7) | (pads.field("day") == 9)
    assert len(shoal.io.parquet_parts(parquet_dataset, filters=expression, per="file")) == 2


def test_hive_partitions_become_columns(tmp_path):
    table = pa.table({"year": [2023, 2023, 2024, 2024], "temp": [1.0, 2.0, 3.0, 4.0]})
    pq.write_to_dataset(table, str(tmp_path / "hive"), partition_cols=["year"])
    parts = shoal.io.parquet_parts(tmp_path / "hive", filters=[("year", "=", 2024)])
    assert len(parts) == 1 and parts[0].partition == (("year", 2024, "int32"),)
    got = parts[0].read()
    expected = pads.dataset(str(tmp_path / "hive"), partitioning="hive").to_table(
        filter=pads.field("year") == 2024
    )
    assert got.schema == expected.schema and got.equals(expected)


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_a_group_by_over_the_parts(parquet_dataset, kind):
    parts = shoal.io.parquet_parts(parquet_dataset, columns=["station", "temp"], per="file")
    Pool = shoal.Pool if kind == "processes" else shoal.ThreadPool
    with Pool(2) as pool:
        partials = pool.map(io_h.station_totals, parts)
    combined = (
        pa.concat_tables(partials)
        .group_by("station")
        .aggregate([("temp_sum", "sum"), ("temp_count", "sum")])
        .sort_by("station")
    )
    expected = (
        pq.read_table(parquet_dataset)
        .group_by("station")
        .aggregate([("temp", "sum"), ("temp", "count")])
        .sort_by("station")
    )
    assert combined["station"].equals(expected["station"])
    assert combined["temp_count_sum"].equals(expected["temp_count"])
    np.testing.assert_allclose(combined["temp_sum_sum"].to_numpy(), expected["temp_sum"].to_numpy())


def test_a_part_is_small_and_resumes_under_a_checkpoint(parquet_dataset, tmp_path):
    parts = shoal.io.parquet_parts(parquet_dataset, columns=["station"], filters=[("day", ">=", 8)])
    assert len(pickle.dumps(parts[0])) < 300 + len(parts[0].path)
    assert pickle.loads(pickle.dumps(parts[0])) == parts[0]
    store, log = str(tmp_path / "run.sqlite"), str(tmp_path / "log")
    rows = functools.partial(io_h.logged_part_rows, log)
    with shoal.Pool(2) as pool:
        first = pool.map(rows, parts, checkpoint=store)
        # Equal filters, spelt with a list: the same keys, nothing computed.
        again = shoal.io.parquet_parts(
            parquet_dataset, columns=["station"], filters=[["day", ">=", 8]]
        )
        assert pool.map(rows, again, checkpoint=store) == first == [1000] * 24
    with open(log) as f:
        assert len(f.read().split()) == 24


def test_paths_that_are_not_parquet(tmp_path, parquet_dataset):
    with pytest.raises(FileNotFoundError, match="no such file"):
        shoal.io.parquet_parts(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not parquet data"):
        shoal.io.parquet_parts(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no parquet files in it"):
        shoal.io.parquet_parts(tmp_path / "empty")
    with pytest.raises(ValueError, match="no column 'rain'.*its columns: station, day"):
        shoal.io.parquet_parts(parquet_dataset, columns=["station", "rain"])
    with pytest.raises(ValueError, match="filters .* do not fit"):
        shoal.io.parquet_parts(parquet_dataset, filters=[("rain", ">", 1)])
    with pytest.raises(ValueError, match="filters must be"):
        shoal.io.parquet_parts(parquet_dataset, filters=[("temp", ">")])
    with pytest.raises(ValueError, match="per must be"):
        shoal.io.parquet_parts(parquet_dataset, per="page")
    with pytest.raises(TypeError, match="list of names"):
        shoal.io.parquet_parts(parquet_dataset, columns="temp")
