"""``shoal.Value``, ``Array``, ``RawValue`` and ``RawArray``, ported from
CPython's ``_TestValue`` and ``_TestArray``, and the workshops' race
condition: ``v.value += 1`` from several processes loses updates; with
``get_lock()`` held it loses none."""

from __future__ import annotations

import array
import ctypes
import pickle

import mp_helpers as mh
import numpy as np
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


def run(target, *args):
    p = shoal.Process(target=target, args=args, daemon=True)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    return p


@pytest.mark.parametrize("raw", [False, True])
def test_value(raw):
    make = shoal.RawValue if raw else shoal.Value
    values = [make(code, value) for code, value, _ in mh.CODES_VALUES]
    for sv, cv in zip(values, mh.CODES_VALUES, strict=True):
        assert sv.value == cv[1]
    run(mh.set_values, values)
    for sv, cv in zip(values, mh.CODES_VALUES, strict=True):
        assert sv.value == cv[2]


def test_getobj_getlock():
    val1 = shoal.Value("i", 5)
    assert isinstance(val1.get_lock(), shoal.RLock)
    assert val1.get_obj().value == 5
    val2 = shoal.Value("i", 5, lock=None)
    assert val2.get_lock() is not None
    lock = shoal.Lock()
    val3 = shoal.Value("i", 5, lock=lock)
    assert val3.get_lock() is lock
    arr4 = shoal.Value("i", 5, lock=False)
    assert not hasattr(arr4, "get_lock")
    assert not hasattr(arr4, "get_obj")
    with pytest.raises(TypeError, match="lock must be"):
        shoal.Value("i", 5, lock="navalue")
    arr5 = shoal.RawValue("i", 5)
    assert not hasattr(arr5, "get_lock")
    assert not hasattr(arr5, "get_obj")


def test_invalid_typecode():
    with pytest.raises(TypeError, match="bad typecode"):
        shoal.Value("x", None)
    with pytest.raises(TypeError, match="bad typecode"):
        shoal.RawValue("x", None)
    with pytest.raises(TypeError, match="bad typecode"):
        shoal.Array("x", [])
    with pytest.raises(TypeError, match="bad typecode"):
        shoal.RawArray("x", [])


def test_value_range_is_checked():
    v = shoal.Value("b", 0)
    with pytest.raises(OverflowError, match="does not fit"):
        v.value = 300
    with pytest.raises(TypeError, match="one byte"):
        shoal.Value("c", b"xy")


def test_get_obj_is_the_same_memory():
    v = shoal.Value("d", 1.0)
    obj = v.get_obj()
    obj.value = 2.5
    assert v.value == 2.5


@pytest.mark.parametrize("raw", [False, True])
def test_array(raw):
    seq = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831]
    arr = shoal.RawArray("i", seq) if raw else shoal.Array("i", seq)
    assert len(arr) == len(seq)
    assert arr[3] == seq[3]
    assert list(arr[2:7]) == list(seq[2:7])
    arr[4:8] = seq[4:8] = array.array("i", [1, 2, 3, 4])
    assert list(arr[:]) == seq
    mh.running_sum(seq)
    run(mh.running_sum, arr)
    assert list(arr[:]) == seq


def test_array_from_size():
    for _ in range(3):
        arr = shoal.Array("i", 10)
        assert len(arr) == 10
        assert list(arr) == [0] * 10
        arr[:] = range(10)
        assert list(arr) == list(range(10))
        del arr


def test_getobj_getlock_obj():
    arr1 = shoal.Array("i", list(range(10)))
    assert arr1.get_lock() is not None
    assert list(arr1.get_obj()) == list(range(10))
    lock = shoal.Lock()
    arr3 = shoal.Array("i", list(range(10)), lock=lock)
    assert arr3.get_lock() is lock
    arr4 = shoal.Array("i", range(10), lock=False)
    assert not hasattr(arr4, "get_lock")
    assert not hasattr(arr4, "get_obj")
    with pytest.raises(TypeError, match="lock must be"):
        shoal.Array("i", range(10), lock="notalock")
    arr5 = shoal.RawArray("i", range(10))
    assert not hasattr(arr5, "get_lock")


def test_char_array_value_and_raw():
    arr = shoal.Array("c", b"hello\0\0\0")
    assert arr.value == b"hello"
    arr.value = b"bye"
    assert arr.raw[:4] == b"bye\0"


def test_numpy_sees_the_same_memory_in_a_worker(make_pool):
    arr = shoal.Array("d", 8)
    view = np.frombuffer(arr.get_obj(), dtype=np.float64)
    pool = make_pool(1)
    pool.apply(mh.running_sum, (arr,))  # zeros: no change
    view[:] = 1.0
    pool.apply(mh.running_sum, (arr,))
    assert list(arr) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    raw = shoal.RawArray(ctypes.c_double, 4)
    np.frombuffer(raw)[:] = 2.0
    pool.apply(mh.running_sum, (raw,))
    assert list(raw) == [2.0, 4.0, 6.0, 8.0]


def test_raw_objects_refuse_plain_pickle():
    for obj in (shoal.RawValue("i", 1), shoal.RawArray("i", 3), shoal.Array("i", 3)):
        with pytest.raises(TypeError, match="not pickled otherwise"):
            pickle.dumps(obj)


# ------------------------------------------------------------- the race

PROCESSES, INCREMENTS = 4, 20_000


def race(target):
    counter = shoal.Value("i", 0)
    gate = shoal.Barrier(PROCESSES)  # every process starts counting at once
    ps = [shoal.Process(target=target, args=(counter, gate, INCREMENTS)) for _ in range(PROCESSES)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    return counter.value


def test_unlocked_increments_are_lost():
    # The workshops' lesson: each read and each write of .value holds the
    # lock, so a process waiting for it is let in between another's read and
    # its write. A race is timing: on a machine busy with other programs the
    # processes may now and then take turns and lose nothing (multiprocessing
    # too), so a few attempts are allowed.
    totals = []
    for _ in range(5):
        totals.append(race(mh.add_unlocked))
        if totals[-1] < PROCESSES * INCREMENTS:
            return
    pytest.fail(f"no increment was lost in {len(totals)} runs: {totals}")


def test_a_read_and_a_write_are_two_steps():
    # What makes the race, without depending on timing: another process's
    # increment between this one's read and write is lost.
    v, read, written = shoal.Value("i", 0), shoal.Event(), shoal.Event()
    x = v.value
    p = mh.started(mh.increment_after, v, read, written)
    read.set()
    assert written.wait(30)
    assert v.value == 1
    v.value = x + 1  # the other process's update is overwritten
    assert v.value == 1, "two increments, one counted"
    mh.joined(p)
    with v.get_lock():  # held across both steps, nobody can come between
        x = v.value
        v.value = x + 1
    assert v.value == 2


def test_increments_under_get_lock_are_all_counted():
    assert race(mh.add_locked) == PROCESSES * INCREMENTS
