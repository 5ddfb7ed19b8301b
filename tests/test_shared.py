"""``shoal.shared``: numpy arrays in shared memory that workers write and
the parent sees, passed as handles, freed with their last reference."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import shm_helpers as sh
import shoal
from shoal import _shoal

pytestmark = pytest.mark.timeout(60)


def test_constructors():
    z = shoal.shared.zeros((3, 4), dtype=np.int32)
    assert z.shape == (3, 4) and z.dtype == np.int32 and not z.any()
    assert sh.segment_of(z)[1] == _shoal.ACCESS_SHARED
    e = shoal.shared.empty(5)
    assert e.shape == (5,) and e.dtype == np.float64
    f = shoal.shared.full((2, 2), 7.5)
    assert (f == 7.5).all() and f.dtype == np.float64
    pymp_style = shoal.shared.array((2, 3), dtype="uint8")
    assert pymp_style.shape == (2, 3) and pymp_style.dtype == np.uint8 and not pymp_style.any()
    data = shoal.shared.array([[1, 2], [3, 4]])
    assert (data == [[1, 2], [3, 4]]).all() and sh.segment_of(data) is not None
    fortran = shoal.shared.zeros((3, 4), order="F")
    assert fortran.flags.f_contiguous
    assert shoal.shared.zeros(0).size == 0


def test_object_dtypes_are_refused_with_a_reason():
    with pytest.raises(TypeError, match="Python objects"):
        shoal.shared.zeros(3, dtype=object)
    with pytest.raises(TypeError, match="cannot be shared"):
        shoal.shared.array([{"a": 1}, None])


def test_workers_writes_are_seen_by_the_parent(make_pool):
    pool = make_pool(2)
    out = shoal.shared.zeros((64, 1000))
    pids = pool.starmap(sh.fill_row, [(out, i) for i in range(64)], chunksize=1)
    assert len(set(pids)) >= 1
    np.testing.assert_array_equal(out[:, 0], np.arange(64))
    assert (out == np.arange(64)[:, None]).all()


def test_views_travel_as_handles_strides_and_all(make_pool):
    pool = make_pool(1)
    grid = shoal.shared.zeros((10, 10))
    column = grid[:, 3]  # not contiguous
    block = grid[2:4]  # contiguous
    backwards = grid[::-1, ::2]
    pool.apply(sh.add_at, (column, slice(None), 1.0))
    pool.apply(sh.add_at, (block, slice(None), 10.0))
    pool.apply(sh.add_at, (backwards, (0, 0), 100.0))  # grid[9, 0]
    assert (grid[:, 3] == [1, 1, 11, 11, 1, 1, 1, 1, 1, 1]).all()
    assert (grid[2:4, 0] == 10).all()
    assert grid[9, 0] == 100


def test_closures_over_a_shared_array_write_to_it(make_pool):
    pool = make_pool(2)
    squares = shoal.shared.zeros(100, dtype=np.int64)

    def fill(i):
        squares[i] = i * i

    pool.map(fill, range(100))
    assert (squares == np.arange(100) ** 2).all()


def test_a_shared_array_passed_back_is_the_same_memory(make_pool):
    pool = make_pool(1)
    a = shoal.shared.zeros(10)
    back = pool.apply(sh.scale_in_place, (a, 3.0))
    back[0] = 5
    assert a[0] == 5, "the result is the same shared memory"


def test_it_outlives_the_pool(make_pool):
    a = shoal.shared.full(1000, 2.0)
    pool = make_pool(1)
    pool.apply(sh.add_at, (a, 0, 1.0))
    pool.terminate()
    pool.join()
    assert a[0] == 3.0 and a.sum() == 2001.0


def test_memory_is_freed_with_the_last_reference(make_pool):
    before = sh.shoal_mappings()
    a = shoal.shared.zeros(1 << 20)
    view = a[10:20]
    assert sh.shoal_mappings() == before + 1
    del a
    gc.collect()
    assert sh.shoal_mappings() == before + 1, "a view keeps the memory alive"
    del view
    gc.collect()
    assert sh.shoal_mappings() == before


def test_a_worker_keeps_the_memory_alive_after_the_parent_lets_go(make_pool):
    pool = make_pool(1)
    a = shoal.shared.full(1000, 3.0)
    pool.apply(sh.store, (a,))  # the worker keeps it in a global
    before = sh.shoal_mappings()
    del a
    gc.collect()
    assert sh.shoal_mappings() == before - 1, "the parent no longer maps it"
    kept = pool.apply(sh.stored)  # still readable in the worker, and sent back
    assert kept.sum() == 3000.0
    kept[0] = 0  # the same shared memory, writable
    assert pool.apply(sh.stored)[0] == 0


def test_a_shared_array_goes_through_a_queue(make_pool):
    q = shoal.Queue()
    a = shoal.shared.zeros(5)
    q.put(a)
    got = q.get(timeout=5)
    got[1] = 4
    assert a[1] == 4


def test_the_fd_count_stays_flat_across_many_calls(make_pool):
    pool = make_pool(2)
    big = np.ones(1 << 17)
    pool.map(sh.total, [big] * 4)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        pool.map(sh.scale, [big, big + 1])
        gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


def test_a_read_only_view_arrives_read_only(make_pool):
    a = shoal.shared.zeros((8, 8))
    view = a[:, ::2]
    view.flags.writeable = False
    got = make_pool(1).apply(sh.identity_flags, (view,))
    assert got == (False, (8, 4))


def test_many_views_of_one_array_share_one_segment():
    a = shoal.shared.zeros((300, 4))
    q = shoal.Queue()
    q.put([a[i] for i in range(300)])  # one descriptor, not 300
    rows = q.get(timeout=10)
    rows[7][0] = 1.0
    assert a[7, 0] == 1.0
