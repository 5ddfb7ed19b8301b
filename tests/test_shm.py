"""Large buffers through shared memory: arguments and results of Pool
tasks, every numeric dtype, non-contiguous views, bytes-like objects, one
segment for an array given to many tasks, read-only and writable arrays."""

from __future__ import annotations

import helpers_mod as h
import numpy as np
import pytest
import shm_helpers as sh
from shoal import _shoal
from shoal.wire import transfer as _transfer
from shoal.wire.kept import CopyCache

pytestmark = pytest.mark.timeout(60)

THRESHOLD = _transfer.THRESHOLD
BIG = 200_000  # elements: above the threshold for every dtype below

NUMERIC_DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.clongdouble,
    "datetime64[ns]",
    "timedelta64[s]",
]


def sample(dtype, n=BIG, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(dtype)
    if dtype.kind in "iumM":
        info = np.iinfo(np.int64 if dtype.kind in "mM" else dtype)
        return rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), n).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    return rng.standard_normal(n).astype(dtype)


def unpack_here(packed):
    """What a receiving process would get, unpacked in this one."""
    if type(packed) is bytes:
        return _transfer.loads_payload(packed)
    body, attachments = packed
    fds = [a if isinstance(a, _shoal.Fd) else a.fd() for a in attachments]
    return _transfer.unpack(body, fds)


# ----------------------------------------------------------- in one process


def test_small_payloads_stay_plain_bytes():
    for obj in (1, "text", [1, 2, 3], np.zeros(10), b"x" * 1000, {"a": np.ones(3)}):
        assert type(_transfer.pack(obj)) is bytes


def test_a_large_array_travels_in_a_segment_and_arrives_without_a_copy():
    a = np.arange(BIG, dtype=np.float64)
    body, attachments = _transfer.pack(a)
    assert len(body) < 1000, "the data is not in the pickle"
    assert len(attachments) == 1
    b = unpack_here((body, attachments))
    np.testing.assert_array_equal(a, b)
    assert sh.segment_of(b) is not None
    assert b.flags.writeable


def test_an_array_in_many_payloads_of_a_call_is_copied_once_and_read_only():
    a = np.arange(BIG, dtype=np.float64)
    packed = _transfer.pack_many([[a, 1], [a, 2], [a, 3]])
    fds = {id(p[1][0]) for p in packed}
    assert len(fds) == 1
    got = [unpack_here(p)[0] for p in packed]
    assert all(not g.flags.writeable for g in got)
    assert sh.segment_of(got[0])[1] == _shoal.ACCESS_READ_ONLY


def test_a_copy_cache_copies_an_array_once_for_several_packs_while_it_lives():
    """``CopyCache``: the batches of one joblib call share their copies."""
    import gc

    cache = CopyCache()
    a = np.arange(BIG, dtype=np.float64)
    packed = [_transfer.pack(([a, i], {}), False, cache) for i in range(3)]
    assert len({id(p[1][0]) for p in packed}) == 1, "one segment for the three"
    got = [unpack_here(p)[0][0] for p in packed]
    assert all(not g.flags.writeable for g in got), "shared copies arrive read-only"
    np.testing.assert_array_equal(got[2], a)
    assert cache.count() == 1
    # The array dies: its copy goes, and a new array (perhaps at the same
    # address) is copied afresh.
    del a, got, packed
    gc.collect()
    assert cache.count() == 0
    b = np.full(BIG, 7.0)
    np.testing.assert_array_equal(unpack_here(_transfer.pack(b, False, cache)), b)
    cache.clear()
    assert cache.count() == 0


def test_a_copy_cache_reuses_a_copy_in_a_later_call_only_if_the_array_is_unchanged():
    cache = CopyCache()
    a = np.arange(BIG, dtype=np.float64)
    first = _transfer.pack(a, False, cache)
    cache.end_call()
    again = _transfer.pack(a, False, cache)
    assert again[1][0] is first[1][0], "unchanged: the same segment"
    cache.end_call()
    a[7] = -1.0  # changed after the call that copied it
    changed = _transfer.pack(a, False, cache)
    assert changed[1][0] is not first[1][0]
    assert unpack_here(changed)[7] == -1.0
    assert unpack_here(first)[7] == 7.0, "a sealed copy never changes"
    # Within a call, a copy is reused without looking (as joblib's memmaps).
    a[8] = -2.0
    assert _transfer.pack(a, False, cache)[1][0] is changed[1][0]
    # A call that does not use a copy drops it.
    cache.end_call()
    cache.end_call()
    assert cache.count() == 0


def test_a_copy_cache_does_not_keep_what_it_copied_alive():
    import weakref

    cache = CopyCache()
    a = np.arange(BIG, dtype=np.float64)
    alive = weakref.ref(a)
    _transfer.pack(a, False, cache)
    del a
    assert alive() is None


def test_buffers_just_below_the_threshold_stay_in_band():
    below = np.zeros(THRESHOLD - 1, dtype=np.uint8)
    at = np.zeros(THRESHOLD, dtype=np.uint8)
    assert type(_transfer.pack(below)) is bytes
    assert type(_transfer.pack(at)) is tuple


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_bytes_and_bytearray_move_out_of_the_pickle(kind):
    data = kind(np.random.default_rng(1).bytes(300_000))
    body, attachments = _transfer.pack([data, 7])
    assert len(body) < 1000 and len(attachments) == 1
    got, seven = unpack_here((body, attachments))
    assert type(got) is kind and got == data and seven == 7


def test_memoryviews_pickle_and_keep_format_and_shape():
    a = np.arange(BIG, dtype=np.int32).reshape(1000, -1)
    fortran = memoryview(np.asfortranarray(a))
    for view in (memoryview(a), memoryview(b"small"), memoryview(a)[::2], fortran):
        got = unpack_here(_transfer.pack(view))
        assert type(got) is memoryview
        assert (got.format, got.shape) == (view.format, view.shape)
        assert got.tobytes() == view.tobytes()


def test_a_non_contiguous_large_array_is_copied_contiguously():
    a = np.arange(4 * BIG, dtype=np.float64).reshape(4, BIG)[:, ::3]
    body, attachments = _transfer.pack(a)
    assert len(body) < 1000 and attachments
    np.testing.assert_array_equal(unpack_here((body, attachments)), a)


def test_object_arrays_are_pickled_as_usual():
    a = np.array([{"k": i} for i in range(50_000)], dtype=object)
    got = unpack_here(_transfer.pack(a))
    assert got.dtype == object and got[123] == {"k": 123}


# ---------------------------------------------------------- through a Pool


def test_every_numeric_dtype_round_trips(make_pool):
    pool = make_pool(2)
    arrays = [sample(d) for d in NUMERIC_DTYPES]
    arrays += [sample(d, n=10) for d in NUMERIC_DTYPES]  # small ones, in-band
    back = pool.map(h.identity, arrays, chunksize=1)
    for sent, got in zip(arrays, back, strict=True):
        assert got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)
    # numpy hands these out of band (datetimes it pickles in-band, as bytes
    # that shoal moves through shared memory, but then copies on arrival).
    big = [g for g in back[: len(NUMERIC_DTYPES)] if g.dtype.kind not in "mM"]
    assert all(sh.segment_of(g) is not None for g in big), "large results come back in segments"


@pytest.mark.parametrize(
    "make_view",
    [
        lambda a: a[::2],
        lambda a: a[::-1],
        lambda a: a.reshape(400, -1).T,
        lambda a: a.reshape(400, -1)[:, 7],
        lambda a: a.reshape(20, 20, -1).transpose(2, 0, 1)[::3],
        lambda a: np.asfortranarray(a.reshape(400, -1)),
    ],
    ids=["step2", "reversed", "transposed", "column", "3d-strided", "fortran"],
)
def test_non_contiguous_views_round_trip(make_pool, make_view):
    pool = make_pool(1)
    view = make_view(np.arange(400 * 500, dtype=np.float64))
    got = pool.apply(h.identity, (view,))
    np.testing.assert_array_equal(got, view)
    got_twice = pool.map(h.identity, [view, view])
    for g in got_twice:
        np.testing.assert_array_equal(g, view)


@pytest.mark.parametrize(
    "data",
    [b"b" * 300_000, bytearray(b"a" * 300_000), memoryview(b"m" * 300_000)],
    ids=["bytes", "bytearray", "memoryview"],
)
def test_big_bytes_like_objects_round_trip(make_pool, data):
    pool = make_pool(1)
    got = pool.apply(h.identity, (data,))
    assert type(got) is type(data)
    assert bytes(got) == bytes(data)


def test_the_same_array_to_many_tasks_is_one_read_only_segment(make_pool):
    pool = make_pool(2)
    a = sample(np.float64, 8 << 17)  # 8 MB
    seen = pool.map(sh.describe, [a] * 12, chunksize=1)
    assert {s["segment"] for s in seen} == {seen[0]["segment"]}
    assert seen[0]["segment"][1] == _shoal.ACCESS_READ_ONLY
    assert not any(s["writeable"] for s in seen)
    assert all(s["sum"] == pytest.approx(float(a.sum())) for s in seen)
    errors = pool.map(sh.try_write, [a, a], chunksize=1)
    assert all(e is not None and "read-only" in e for e in errors), errors


def test_an_array_for_one_task_is_its_own_writable_copy(make_pool):
    pool = make_pool(1)
    a = sample(np.float64)
    before = a.copy()
    seen = pool.apply(sh.describe, (a,))
    assert seen["writeable"] and seen["segment"][1] == _shoal.ACCESS_OWNED
    assert pool.apply(sh.try_write, (a,)) is None
    np.testing.assert_array_equal(a, before)  # the parent's array is untouched


def test_an_array_passed_again_unchanged_is_not_copied_again(make_pool):
    pool = make_pool(2)
    a = sample(np.float64, 8 << 17)  # 8 MB
    first = pool.map(sh.describe, [a] * 4, chunksize=1)
    again = pool.map(sh.describe, [a] * 4, chunksize=1)
    assert again[0]["segment"] == first[0]["segment"], "the same sealed copy"
    inode = first[0]["segment"][0]
    # One task of a later call gets the same copy, as its own writable pages.
    alone = pool.apply(sh.describe, (a,))
    assert alone["segment"] == (inode, _shoal.ACCESS_OWNED) and alone["writeable"]
    assert pool.apply(sh.try_write, (a,)) is None
    assert pool.apply(sh.describe, (a,))["sum"] == pytest.approx(float(a.sum())), (
        "a task's writes stay in its own pages"
    )
    # Changed in the parent: copied afresh, and the tasks see the change.
    a[3] = 1e6
    changed = pool.map(sh.describe, [a] * 2, chunksize=1)
    assert changed[0]["segment"][0] != inode
    assert changed[0]["sum"] == pytest.approx(float(a.sum()))


def test_a_pool_keeps_copies_only_while_they_are_used_and_their_array_lives(make_pool):
    import gc
    import weakref

    pool = make_pool(1)
    before = sh.shoal_fds()
    a, b = sample(np.float64, seed=1), sample(np.float64, seed=2)
    pool.apply(sh.describe, (a,))
    assert sh.shoal_fds() == before + 1, "a's copy is kept for the next call"
    pool.apply(h.square, (3,))  # a call without large buffers changes nothing
    assert sh.shoal_fds() == before + 1
    pool.apply(sh.describe, (b,))  # a call with other large buffers: a's copy goes
    assert sh.shoal_fds() == before + 1
    alive = weakref.ref(b)
    del b
    gc.collect()
    assert alive() is None, "a kept copy does not keep its array alive"
    assert sh.shoal_fds() == before, "and goes with it"
    pool.apply(sh.describe, (a,))
    pool.close()
    pool.join()
    assert sh.shoal_fds() == before, "a closed pool keeps nothing"


def test_results_come_back_in_shared_memory(make_pool):
    pool = make_pool(1)
    a = sample(np.float64)
    doubled = pool.apply(sh.scale, (a,))
    np.testing.assert_array_equal(doubled, a * 2)
    assert sh.segment_of(doubled)[1] == _shoal.ACCESS_OWNED
    assert doubled.flags.writeable
    in_place = pool.apply(sh.scale_in_place, (a,))
    np.testing.assert_array_equal(in_place, a * 2)
    assert sh.segment_of(in_place)[1] == _shoal.ACCESS_OWNED
    shared_arg = pool.map(h.identity, [a, a])  # comes back as the read-only segment it was
    assert [sh.segment_of(g)[1] for g in shared_arg] == [_shoal.ACCESS_READ_ONLY] * 2


def test_large_arrays_in_closures_and_initargs(make_pool):
    big = sample(np.float64, 300_000)
    pool = make_pool(2, initializer=sh.store, initargs=(big,))
    assert pool.map(lambda i: float(big[i]), [0, 5]) == [float(big[0]), float(big[5])]
    got = pool.apply(sh.stored)
    np.testing.assert_array_equal(got, big)


def test_small_fortran_arrays_beside_large_ones_keep_their_order():
    small = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    big = np.arange(BIG, dtype=np.float64)
    got_small, got_big = unpack_here(_transfer.pack([small, big]))
    np.testing.assert_array_equal(got_small, small)
    np.testing.assert_array_equal(got_big, big)


def test_a_worker_keeps_a_shared_segment_mapped_between_tasks_then_lets_go(make_pool):
    pool = make_pool(1)
    a = sample(np.float64)
    addresses = pool.map(sh.mapped_at, [a] * 4, chunksize=1)
    assert len(set(addresses)) == 1, "mapped once for the whole call"
    (pid,) = pool.worker_pids()
    assert h.wait_until(lambda: sh.shoal_mappings(pid) == 0, 5), "released once idle"
    pool.apply(h.square, (3,))
    assert sh.shoal_mappings(pid) == 0


def test_a_retried_task_sees_its_argument_as_it_was_sent(make_pool, tmp_path):
    # The failed run wrote into its (large) argument; the retry must not see it.
    a = np.zeros(BIG)
    marker = str(tmp_path / "ran")
    got = make_pool(1).apply(sh.bump_fail_first, (a, marker), retries=1, retry_on=sh.Flaky)
    assert got == 1.0
    assert (a == 0).all(), "the caller's array is unchanged"
