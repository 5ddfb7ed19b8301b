"""Behavioural tests for shoal.Pool.

Modelled on CPython's Lib/test/_test_multiprocessing.py (_TestPool,
_TestPoolWorkerErrors, _TestPoolWorkerLifetime): shoal.Pool is meant to be a
drop-in replacement for multiprocessing.Pool.  All tests use real worker
processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import traceback
import weakref

import helpers_mod as h
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

TEN_MB = 10 * 1024 * 1024


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    """A long-lived pool shared by tests that only submit short tasks."""
    p = shoal.Pool(2)
    yield p
    p.terminate()
    p.join()


# Functions/classes defined in this test module (pickled by reference, so
# workers must be able to import this module).


def module_level_cube(x):
    return x**3


class Multiplier:
    def __init__(self, factor):
        self.factor = factor

    def times(self, x):
        return x * self.factor


def squares(n):
    return [i * i for i in range(n)]


# ---------------------------------------------------------------------------
# Construction / arguments
# ---------------------------------------------------------------------------


def test_exception_hierarchy():
    assert shoal.TimeoutError is multiprocessing.TimeoutError
    assert issubclass(shoal.ShoalError, Exception)
    assert issubclass(shoal.WorkerLostError, shoal.ShoalError)
    assert issubclass(shoal.SerializationError, shoal.ShoalError)
    assert issubclass(shoal.TaskTimeoutError, shoal.ShoalError)
    assert issubclass(shoal.TaskTimeoutError, TimeoutError)
    assert isinstance(shoal.RemoteTraceback, type)


@pytest.mark.parametrize("processes", [0, -1])
def test_invalid_processes(processes):
    with pytest.raises(ValueError):
        shoal.Pool(processes)


@pytest.mark.parametrize("value", [0, -1, 0.5, "12"])
def test_invalid_maxtasksperchild(value):
    with pytest.raises(ValueError):
        shoal.Pool(1, maxtasksperchild=value)


def test_initializer_not_callable():
    with pytest.raises(TypeError):
        shoal.Pool(1, initializer=42)


def test_default_processes_is_cpu_count(make_pool):
    p = make_pool()
    assert len(p.worker_pids()) == shoal.cpu_count()


def test_worker_pids(make_pool):
    p = make_pool(3)
    pids = p.worker_pids()
    assert isinstance(pids, list)
    assert len(pids) == 3
    assert len(set(pids)) == 3
    assert os.getpid() not in pids
    for pid in pids:
        assert isinstance(pid, int)
        assert h.pid_alive(pid), pid


def test_a_worker_imports_only_what_it_needs(pool):
    """A worker's start is paid at every pool start and every replacement:
    it loads shoal's worker side alone, and none of the standard modules a
    parent's pool, its threads or its copies need."""
    modules = set(pool.apply(eval, ("list(__import__('sys').modules)",)))
    parent_side = {"threading", "weakref", "typing", "logging", "concurrent.futures"}
    assert not modules & parent_side
    shoal_modules = {m.split(".")[1] for m in modules if m.startswith("shoal.")}
    assert shoal_modules == {"_shoal", "errors", "wire", "worker"}, shoal_modules
    assert "shoal.wire.kept" not in modules


def test_tasks_run_in_worker_processes(pool):
    pids = set(pool.map(h.get_pid, range(20), chunksize=1))
    assert os.getpid() not in pids
    assert pids <= set(pool.worker_pids())


# ---------------------------------------------------------------------------
# apply / apply_async
# ---------------------------------------------------------------------------


def test_apply(pool):
    assert pool.apply(h.square, (5,)) == 25
    assert pool.apply(h.square, (), {"x": 3}) == 9
    assert pool.apply(h.add, (1,), {"b": 2}) == 3
    assert pool.apply(h.echo_args) == ((), {})


def test_apply_async_get(pool):
    res = pool.apply_async(h.square, (7,))
    assert res.get(timeout=30) == 49
    assert res.ready()
    assert res.successful()
    # get() can be called repeatedly.
    assert res.get() == 49


def test_apply_async_blocking_get_waits(pool):
    res = pool.apply_async(h.sleep_and_return, ("done", 0.3))
    t0 = time.monotonic()
    assert res.get() == "done"
    assert time.monotonic() - t0 >= 0.2


def test_apply_async_get_timeout(make_pool):
    p = make_pool(1)
    res = p.apply_async(h.sleep_and_return, (6, 2.0))
    t0 = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        res.get(timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.5, elapsed
    with pytest.raises(shoal.TimeoutError):
        res.get(timeout=0.05)
    assert not res.ready()
    assert res.get(timeout=30) == 6


def test_apply_async_wait_ready_successful(make_pool):
    p = make_pool(1)
    res = p.apply_async(h.sleep_and_return, ("x", 0.8))
    assert not res.ready()
    with pytest.raises(ValueError):
        res.successful()
    t0 = time.monotonic()
    assert res.wait(0.1) is None
    assert 0.05 <= time.monotonic() - t0 < 0.7
    assert not res.ready()
    res.wait()
    assert res.ready()
    assert res.successful() is True
    assert res.get(timeout=0) == "x"


def test_successful_false_on_error(pool):
    res = pool.apply_async(h.raise_value_error, ("nope",))
    res.wait(30)
    assert res.ready()
    assert res.successful() is False
    with pytest.raises(ValueError, match="nope"):
        res.get()


def test_apply_async_callback(pool):
    seen = []
    callback_pids = []

    def cb(value):
        callback_pids.append(os.getpid())
        seen.append(value)

    res = pool.apply_async(h.square, (4,), callback=cb, error_callback=seen.append)
    assert res.get(timeout=30) == 16
    # As in multiprocessing, the callback has run by the time get() returns.
    assert seen == [16]
    assert callback_pids == [os.getpid()]


@pytest.mark.parametrize("kind", ["apply_async", "map_async", "error"])
def test_callback_finishes_before_result_is_ready(pool, kind):
    # multiprocessing runs the (error) callback *before* marking the result
    # ready, so code like ``r = map_async(f, xs, callback=out.extend);
    # r.wait(); use(out)`` is safe.  A slow callback makes a violation visible.
    done = []

    def slow_callback(value):
        time.sleep(0.3)
        done.append(value)

    if kind == "apply_async":
        res = pool.apply_async(h.square, (3,), callback=slow_callback)
    elif kind == "map_async":
        res = pool.map_async(h.square, [1, 2], callback=slow_callback)
    else:
        res = pool.apply_async(h.raise_value_error, error_callback=slow_callback)
    res.wait(30)
    assert res.ready()
    assert len(done) == 1


def test_apply_async_error_callback(pool):
    scratch = []
    res = pool.apply_async(
        h.raise_key_error, callback=scratch.append, error_callback=scratch.append
    )
    with pytest.raises(KeyError):
        res.get(timeout=30)
    assert len(scratch) == 1
    assert isinstance(scratch[0], KeyError)


# ---------------------------------------------------------------------------
# map / starmap (sync and async)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_map_chunksizes(pool, chunksize):
    data = list(range(100))
    assert pool.map(h.square, data, chunksize=chunksize) == squares(100)
    assert pool.map(h.square, data[:7], chunksize=chunksize) == squares(7)


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_map_async_chunksizes(pool, chunksize):
    res = pool.map_async(h.square, range(50), chunksize=chunksize)
    assert res.get(timeout=30) == squares(50)
    assert res.ready() and res.successful()


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_starmap_chunksizes(pool, chunksize):
    tuples = list(zip(range(100), range(99, -1, -1), strict=True))
    expected = list(itertools.starmap(h.mul, tuples))
    assert pool.starmap(h.mul, tuples, chunksize=chunksize) == expected
    res = pool.starmap_async(h.mul, tuples, chunksize=chunksize)
    assert res.get(timeout=30) == expected


def test_map_async_callbacks(pool):
    calls = []
    pool.map_async(int, ["1"], callback=calls.append, error_callback=calls.append).wait(30)
    assert calls == [[1]]
    pool.map_async(int, ["a"], callback=calls.append, error_callback=calls.append).wait(30)
    assert len(calls) == 2
    assert isinstance(calls[1], ValueError)


def test_starmap_async_callback(pool):
    calls = []
    res = pool.starmap_async(h.add, [(1, 2), (3, 4)], callback=calls.append)
    assert res.get(timeout=30) == [3, 7]
    assert calls == [[3, 7]]


def test_map_builtins(pool):
    assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
    assert pool.map(int, ["1", "22"]) == [1, 22]
    assert pool.map(str.upper, "abc") == ["A", "B", "C"]


def test_map_generator_input(pool):
    assert pool.map(h.square, (i for i in range(50))) == squares(50)
    assert pool.map(h.square, (i for i in range(50)), chunksize=7) == squares(50)
    assert pool.starmap(h.add, ((i, i) for i in range(10))) == [2 * i for i in range(10)]


def test_map_iterator_without_len(pool):
    assert pool.map(h.square, iter(range(30)), 4) == squares(30)
    assert pool.map(h.square, map(int, "0123456789")) == squares(10)


@pytest.mark.parametrize("chunksize", [None, 1])
def test_empty_iterables(pool, chunksize):
    assert pool.map(h.square, [], chunksize=chunksize) == []
    assert pool.starmap(h.add, [], chunksize=chunksize) == []
    assert list(pool.imap(h.square, [], chunksize=chunksize or 1)) == []
    assert list(pool.imap_unordered(h.square, [], chunksize=chunksize or 1)) == []
    assert pool.map(h.square, iter(()), chunksize=chunksize) == []
    # Issue #12157 in CPython: map_async on an empty list must not stall.
    try:
        assert pool.map_async(h.square, [], chunksize=chunksize).get(timeout=5) == []
        assert pool.starmap_async(h.add, [], chunksize=chunksize).get(timeout=5) == []
    except multiprocessing.TimeoutError:
        pytest.fail("map_async stalled on an empty iterable")


def test_map_many_tasks(pool):
    n = 10_000
    assert pool.map(h.square, range(n)) == squares(n)
    assert pool.starmap(h.add, zip(range(n), range(n), strict=True)) == [2 * i for i in range(n)]
    assert list(pool.imap(h.square, range(n), chunksize=50)) == squares(n)
    assert sorted(pool.imap_unordered(h.square, range(n), chunksize=50)) == squares(n)


def test_map_task_exception(pool):
    with pytest.raises(ValueError, match="bad value 5") as info:
        pool.map(h.raise_if_equal, range(10))
    assert isinstance(info.value.__cause__, shoal.RemoteTraceback)
    assert "raise_if_equal" in str(info.value.__cause__)
    # Pool still works afterwards.
    assert pool.map(h.square, range(5)) == squares(5)


def test_map_async_task_exception_error_callback(pool):
    errors = []
    res = pool.map_async(h.raise_if_equal, range(10), chunksize=2, error_callback=errors.append)
    with pytest.raises(ValueError):
        res.get(timeout=30)
    assert res.successful() is False
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_map_no_failfast(make_pool):
    # CPython issue #23992: an exception in map() must not make close()/join()
    # deadlock (large exceptions filling the result pipe).
    p = make_pool(2)
    with pytest.raises(ValueError):
        p.map(h.raise_large_value_error, [0, 0.2])
    p.close()
    t0 = time.monotonic()
    p.join()
    assert time.monotonic() - t0 < 10


def test_map_handle_iterable_exception(pool):
    # Error raised by the input iterable before the first item.
    with pytest.raises(h.SayWhenError) as info:
        pool.map(h.square, h.exception_throwing_generator(1, -1), 1)
    # The iterable's own exception is not wrapped as a remote error.
    assert info.value.__cause__ is None
    # Reentrant.
    with pytest.raises(h.SayWhenError):
        pool.map(h.square, h.exception_throwing_generator(1, -1), 1)
    # Error in the middle of the iterable.
    with pytest.raises(h.SayWhenError):
        pool.map(h.square, h.exception_throwing_generator(10, 3), 1)
    with pytest.raises(h.SayWhenError):
        pool.map_async(h.square, h.exception_throwing_generator(10, 3), 1).get(timeout=30)

    class SpecialIterable:
        def __iter__(self):
            return self

        def __next__(self):
            raise h.SayWhenError

        def __len__(self):
            return 1

    with pytest.raises(h.SayWhenError):
        pool.map(h.square, SpecialIterable(), 1)
    with pytest.raises(h.SayWhenError):
        pool.map(h.square, SpecialIterable(), 1)
    # Pool still usable.
    assert pool.map(h.square, range(3)) == [0, 1, 4]


def test_map_unpicklable_argument(make_pool):
    pool = make_pool(2)

    # CPython issue #19425: failure to pickle must not cause a hang.
    class A:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises((RuntimeError, shoal.SerializationError)):
        pool.map(h.square, [A()] * 10)
    assert pool.map(h.square, range(3)) == [0, 1, 4]


def test_apply_unpicklable_argument(make_pool):
    pool = make_pool(2)
    with pytest.raises((TypeError, shoal.SerializationError)) as info:
        pool.apply(h.identity, (threading.Lock(),))
    assert "lock" in str(info.value).lower()
    assert pool.apply(h.square, (3,)) == 9


def test_release_task_refs(pool):
    # CPython issue #29861: task arguments and results must not be kept alive.
    objs = [h.CountedObject() for _ in range(10)]
    refs = [weakref.ref(o) for o in objs]
    pool.map(h.identity, objs)
    del objs
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        gc.collect()
        if {r() for r in refs} == {None} and h.CountedObject.n_instances == 0:
            break
        time.sleep(0.05)
    assert {r() for r in refs} == {None}
    assert h.CountedObject.n_instances == 0


# ---------------------------------------------------------------------------
# imap / imap_unordered
# ---------------------------------------------------------------------------


def test_imap(pool):
    assert list(pool.imap(h.square, range(10))) == squares(10)

    it = pool.imap(h.square, list(range(10)))
    assert iter(it) is it
    for i in range(10):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)

    it = pool.imap(h.square, list(range(1000)), chunksize=100)
    for i in range(1000):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_imap_chunksizes(pool, chunksize):
    assert list(pool.imap(h.square, range(100), chunksize=chunksize or 1)) == squares(100)
    if chunksize is None:
        assert list(pool.imap(h.square, range(100))) == squares(100)
        assert sorted(pool.imap_unordered(h.square, range(100))) == squares(100)
    else:
        assert sorted(pool.imap_unordered(h.square, range(100), chunksize=chunksize)) == squares(
            100
        )


def test_imap_unordered(pool):
    assert sorted(pool.imap_unordered(h.square, range(10))) == squares(10)
    assert sorted(pool.imap_unordered(h.square, range(1000), chunksize=100)) == squares(1000)


def test_imap_generator_input(pool):
    assert list(pool.imap(h.square, (i for i in range(40)), 3)) == squares(40)
    assert sorted(pool.imap_unordered(h.square, (i for i in range(40)), 3)) == squares(40)


def test_imap_is_ordered_and_imap_unordered_is_not(make_pool):
    p = make_pool(2)
    items = [(0, 1.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)]
    assert list(p.imap(h.sleep_pair, items, chunksize=1)) == [0, 1, 2, 3, 4]
    got = list(p.imap_unordered(h.sleep_pair, items, chunksize=1))
    assert sorted(got) == [0, 1, 2, 3, 4]
    # Item 0 sleeps for a second while the other worker finishes the rest.
    assert got[0] != 0
    assert got[-1] == 0


def test_imap_handle_iterable_exception(pool):
    # Error before the first item: raised while iterating, not at call time.
    it = pool.imap(h.square, h.exception_throwing_generator(1, -1), 1)
    with pytest.raises(h.SayWhenError):
        next(it)
    it = pool.imap(h.square, h.exception_throwing_generator(1, -1), 1)
    with pytest.raises(h.SayWhenError):
        next(it)

    it = pool.imap(h.square, h.exception_throwing_generator(10, 3), 1)
    for i in range(3):
        assert next(it) == i * i
    with pytest.raises(h.SayWhenError):
        next(it)

    # With larger chunks the error surfaces at the latest when the item that
    # failed would have been produced; everything before it is correct.
    for chunksize in (2, 4):
        it = pool.imap(h.square, h.exception_throwing_generator(20, 7), chunksize)
        got = []
        with pytest.raises(h.SayWhenError):
            for _ in range(20):
                got.append(next(it))
        assert got == squares(len(got))
        assert len(got) <= 7


def test_imap_unordered_handle_iterable_exception(pool):
    it = pool.imap_unordered(h.square, h.exception_throwing_generator(1, -1), 1)
    with pytest.raises(h.SayWhenError):
        next(it)
    it = pool.imap_unordered(h.square, h.exception_throwing_generator(1, -1), 1)
    with pytest.raises(h.SayWhenError):
        next(it)

    for total, when, chunksize in [(10, 3, 1), (20, 7, 2)]:
        it = pool.imap_unordered(h.square, h.exception_throwing_generator(total, when), chunksize)
        expected = squares(total)
        with pytest.raises(h.SayWhenError):
            for _ in range(total):
                value = next(it)
                assert value in expected
                expected.remove(value)


def test_imap_task_exception(pool):
    it = pool.imap(h.raise_if_equal, range(8), 1)
    assert [next(it) for _ in range(5)] == squares(5)
    with pytest.raises(ValueError, match="bad value 5") as info:
        next(it)
    assert isinstance(info.value.__cause__, shoal.RemoteTraceback)


def test_imap_continues_after_task_exception(pool):
    # multiprocessing semantics: an item's exception is raised for that item
    # only; subsequent next() calls keep yielding the remaining results.
    it = pool.imap(h.raise_if_equal, range(8), 1)
    out = []
    for _ in range(8):
        try:
            out.append(next(it))
        except ValueError:
            out.append("error")
    assert out == [0, 1, 4, 9, 16, "error", 36, 49]
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_infinite_generator(make_pool, method):
    p = make_pool(2)
    it = getattr(p, method)(h.square, itertools.count())
    got = list(itertools.islice(it, 100))
    if method == "imap":
        assert got == squares(100)
    else:
        assert len(set(got)) == 100
        roots = [round(v**0.5) for v in got]
        assert all(r * r == v for r, v in zip(roots, got, strict=True))
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 10


class CountingIterator:
    """Infinite iterator that records how many items were pulled from it."""

    def __init__(self):
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        value = self.pulled
        self.pulled += 1
        return value


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [None, 4])
def test_imap_bounded_read_ahead(make_pool, method, chunksize):
    p = make_pool(2)
    source = CountingIterator()
    kwargs = {} if chunksize is None else {"chunksize": chunksize}
    it = getattr(p, method)(h.square, source, **kwargs)
    got = [next(it) for _ in range(10)]
    if method == "imap":
        assert got == squares(10)
    # Give any background feeder time to run ahead if it is unbounded.
    time.sleep(0.5)
    pulled = source.pulled
    assert pulled >= 10
    assert pulled < 10_000, f"imap read {pulled} items ahead of a consumer at 10"
    p.terminate()
    p.join()


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_next_timeout(make_pool, method):
    p = make_pool(1)
    func = functools.partial(h.slow_square, delay=1.0)
    it = getattr(p, method)(func, [3], 1)
    t0 = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.2)
    assert time.monotonic() - t0 < 0.9
    with pytest.raises(shoal.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=30) == 9
    with pytest.raises(StopIteration):
        it.next(timeout=5)


# ---------------------------------------------------------------------------
# submit (concurrent.futures integration)
# ---------------------------------------------------------------------------


def test_submit_returns_future(pool):
    fut = pool.submit(h.square, 6)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 36
    assert fut.done()
    assert fut.exception() is None


def test_submit_args_and_kwargs(pool):
    fut = pool.submit(h.echo_args, 1, 2, x=3, y="z")
    assert fut.result(timeout=30) == ((1, 2), {"x": 3, "y": "z"})
    assert pool.submit(h.add, 1, b=41).result(timeout=30) == 42
    assert pool.submit(h.slow_square, 5, delay=0.01).result(timeout=30) == 25


def test_submit_kwarg_named_fn(pool):
    # fn is positional-only, so a keyword called "fn" goes to the function.
    fut = pool.submit(h.echo_args, fn=1, args=2, kwargs=3)
    assert fut.result(timeout=30) == ((), {"fn": 1, "args": 2, "kwargs": 3})


def test_submit_as_completed_and_wait(pool):
    futs = [pool.submit(h.square, i) for i in range(20)]
    done = {f.result() for f in concurrent.futures.as_completed(futs, timeout=30)}
    assert done == set(squares(20))

    futs = [pool.submit(h.square, i) for i in range(20)]
    done, not_done = concurrent.futures.wait(futs, timeout=30)
    assert not not_done
    assert [f.result() for f in futs] == squares(20)


def test_a_finished_futures_result_is_read_without_the_pools_lock(pool):
    """A pool's futures share one condition. A finished future's result and
    exception are read without it, so holding it (a callback of another
    future may) holds up no reader of a finished one."""
    ok = pool.submit(abs, -3)
    failed = pool.submit(h.raise_value_error, "x")
    assert ok.result(timeout=20) == 3
    assert isinstance(failed.exception(timeout=20), ValueError)
    got = []
    with ok._condition:
        reader = threading.Thread(
            target=lambda: got.append((ok.result(), type(failed.exception()))), daemon=True
        )
        reader.start()
        reader.join(5)
        assert got == [(3, ValueError)]


def test_submit_exception(pool):
    fut = pool.submit(h.raise_custom_error, "in future")
    exc = fut.exception(timeout=30)
    assert type(exc) is h.CustomError
    assert exc.args == ("in future",)
    assert isinstance(exc.__cause__, shoal.RemoteTraceback)
    assert "raise_custom_error" in str(exc.__cause__)
    with pytest.raises(h.CustomError):
        fut.result()


def test_submit_done_callback(pool):
    event = threading.Event()
    seen = []

    def cb(f):
        seen.append(f.result())
        event.set()

    pool.submit(h.square, 9).add_done_callback(cb)
    assert event.wait(30)
    assert seen == [81]


def test_submit_asyncio_wrap_future(pool):
    async def main():
        futs = [asyncio.wrap_future(pool.submit(h.square, i)) for i in range(10)]
        return await asyncio.wait_for(asyncio.gather(*futs), timeout=30)

    assert asyncio.run(main()) == squares(10)


def test_submit_asyncio_exception(pool):
    async def main():
        return await asyncio.wait_for(
            asyncio.wrap_future(pool.submit(h.raise_value_error, "async")), timeout=30
        )

    with pytest.raises(ValueError, match="async"):
        asyncio.run(main())


# ---------------------------------------------------------------------------
# Lifecycle: close / join / terminate / context manager
# ---------------------------------------------------------------------------

AFTER_CLOSE_CALLS = {
    "apply": lambda p: p.apply(h.square, (1,)),
    "apply_async": lambda p: p.apply_async(h.square, (1,)),
    "map": lambda p: p.map(h.square, [1]),
    "map_async": lambda p: p.map_async(h.square, [1]),
    "starmap": lambda p: p.starmap(h.add, [(1, 2)]),
    "starmap_async": lambda p: p.starmap_async(h.add, [(1, 2)]),
    "imap": lambda p: list(p.imap(h.square, [1])),
    "imap_unordered": lambda p: list(p.imap_unordered(h.square, [1])),
    "submit": lambda p: p.submit(h.square, 1),
}


@pytest.mark.parametrize("how", ["close", "terminate"])
@pytest.mark.parametrize("call", sorted(AFTER_CLOSE_CALLS))
def test_calls_after_close_raise(make_pool, how, call):
    p = make_pool(1)
    getattr(p, how)()
    with pytest.raises(ValueError):
        AFTER_CLOSE_CALLS[call](p)
    p.join()


def test_join_while_running_raises(make_pool):
    p = make_pool(1)
    with pytest.raises(ValueError):
        p.join()


def test_close_join_completes_pending_work(make_pool):
    p = make_pool(2)
    results = [p.apply_async(h.sleep_and_return, (i, 0.1)) for i in range(6)]
    futs = [p.submit(h.square, i) for i in range(6)]
    mres = p.map_async(h.square, range(20))
    p.close()
    p.join()
    assert [r.get(timeout=0) for r in results] == list(range(6))
    assert [f.result(timeout=0) for f in futs] == squares(6)
    assert mres.get(timeout=0) == squares(20)


def test_join_reaps_workers(make_pool):
    p = make_pool(2)
    pids = p.worker_pids()
    p.map(h.square, range(10))
    p.close()
    p.join()
    assert h.wait_pids_gone(pids, 3) == []


def test_close_and_terminate_idempotent(make_pool):
    p = make_pool(1)
    assert p.apply(h.square, (2,)) == 4
    p.close()
    p.close()
    p.join()
    p.join()
    p.terminate()
    p.terminate()


def test_terminate_with_pending_long_tasks(make_pool):
    # Port of CPython's test_terminate: "slow tasks which take forever".
    p = make_pool(2)
    pids = p.worker_pids()
    p.map_async(time.sleep, [30] * 10_000, chunksize=1)
    time.sleep(0.3)
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 5
    assert h.wait_pids_gone(pids, 3) == []


def test_context_manager_terminates(make_pool):
    p = make_pool(2)
    with p as entered:
        assert entered is p
        pids = p.worker_pids()
        assert p.map_async(h.square, range(10)).get(timeout=30) == squares(10)
        p.apply_async(time.sleep, (30,))
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5
    assert h.wait_pids_gone(pids, 3) == []
    with pytest.raises(ValueError):
        p.map_async(h.square, range(10))
    p.join()


def test_enter_terminated_pool_raises(make_pool):
    p = make_pool(1)
    with p:
        pass
    with pytest.raises(ValueError), p:
        pass
    p.join()


# ---------------------------------------------------------------------------
# Function kinds (cloudpickle)
# ---------------------------------------------------------------------------


def test_lambda(pool):
    assert pool.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
    assert pool.apply(lambda: "lam") == "lam"
    assert pool.submit(lambda a, b=0: a - b, 5, b=2).result(timeout=30) == 3


def test_closure(pool):
    offset = 100
    data = {"k": 7}

    def shifted(x):
        return x + offset + data["k"]

    assert pool.map(shifted, range(3)) == [107, 108, 109]
    assert list(pool.imap(shifted, range(3))) == [107, 108, 109]


def test_function_defined_in_test_module(pool):
    assert pool.map(module_level_cube, range(5)) == [0, 1, 8, 27, 64]
    assert pool.apply(squares, (4,)) == [0, 1, 4, 9]


def test_bound_method_and_partial(pool):
    m = Multiplier(3)
    assert pool.map(m.times, range(4)) == [0, 3, 6, 9]
    assert pool.map(functools.partial(h.add, 10), range(3)) == [10, 11, 12]


# ---------------------------------------------------------------------------
# initializer / initargs
# ---------------------------------------------------------------------------


def test_initializer_sets_worker_global(make_pool):
    p = make_pool(2, initializer=h.set_init_value, initargs=("hello",))
    assert p.map(h.get_init_value, range(8), chunksize=1) == ["hello"] * 8
    # The parent is unaffected.
    assert h.INIT_VALUE is None


def test_initializer_multiple_initargs(make_pool):
    p = make_pool(1, initializer=h.set_init_value, initargs=("a", "-b"))
    assert p.apply(h.get_init_value) == "a-b"


def test_initializer_runs_once_per_worker(make_pool):
    p = make_pool(2, initializer=h.set_init_value, initargs=("x",))
    states = p.map(h.get_init_state, range(40), chunksize=1)
    for pid, value, calls in states:
        assert value == "x"
        assert calls == 1, (pid, calls)


def test_initializer_lambda(make_pool):
    p = make_pool(1, initializer=lambda: h.set_init_value("from-lambda"))
    assert p.apply(h.get_init_value) == "from-lambda"


def test_initializer_runs_in_replacement_workers(make_pool):
    p = make_pool(2, initializer=h.set_init_value, initargs=("again",), maxtasksperchild=1)
    results = [p.apply_async(h.get_init_state) for _ in range(8)]
    states = [r.get(timeout=30) for r in results]
    assert all(value == "again" and calls == 1 for _, value, calls in states)
    assert len({pid for pid, _, _ in states}) == 8


# ---------------------------------------------------------------------------
# maxtasksperchild
# ---------------------------------------------------------------------------


def test_maxtasksperchild_replaces_workers(make_pool):
    p = make_pool(2, maxtasksperchild=2)
    orig = p.worker_pids()
    assert len(orig) == 2
    results = [p.apply_async(h.square_with_pid, (i,)) for i in range(20)]
    values = [r.get(timeout=30) for r in results]
    assert [v for v, _ in values] == squares(20)
    per_pid = {}
    for _, pid in values:
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert max(per_pid.values()) <= 2, per_pid
    assert len(per_pid) >= 10

    def refilled():
        pids = p.worker_pids()
        return len(pids) == 2 and all(h.pid_alive(x) for x in pids)

    assert h.wait_until(refilled, 5)
    final = p.worker_pids()
    assert sorted(final) != sorted(orig)
    assert h.wait_pids_gone(orig, 3) == []


def test_maxtasksperchild_map_results_correct(make_pool):
    p = make_pool(2, maxtasksperchild=1)
    assert p.map(h.square, range(30), chunksize=1) == squares(30)
    assert list(p.imap(h.square, range(30))) == squares(30)


def test_maxtasksperchild_early_close(make_pool):
    # CPython issue #10332: close() before limited-lifetime workers finished
    # all tasks must not make join() hang.
    p = make_pool(3, maxtasksperchild=1)
    results = [p.apply_async(h.slow_square, (i, 0.2)) for i in range(6)]
    p.close()
    p.join()
    assert [r.get(timeout=0) for r in results] == squares(6)


# ---------------------------------------------------------------------------
# Exceptions raised by tasks
# ---------------------------------------------------------------------------


def test_exception_type_args_and_remote_traceback(pool):
    with pytest.raises(ValueError) as info:
        pool.apply(h.raise_value_error, ("boom!",))
    exc = info.value
    assert type(exc) is ValueError
    assert exc.args == ("boom!",)
    cause = exc.__cause__
    assert type(cause) is shoal.RemoteTraceback
    text = str(cause)
    assert "raise_value_error" in text
    assert "Traceback" in text
    assert "ValueError" in text
    # The remote traceback shows up when the exception is formatted.
    formatted = "".join(traceback.format_exception(exc))
    assert "raise_value_error" in formatted


def test_custom_exception_type_preserved(pool):
    with pytest.raises(h.CustomError, match="custom"):
        pool.apply(h.raise_custom_error)
    res = pool.apply_async(h.raise_key_error)
    with pytest.raises(KeyError) as info:
        res.get(timeout=30)
    assert info.value.args == ("key",)


def test_exception_from_lambda_has_remote_traceback(pool):
    with pytest.raises(ZeroDivisionError) as info:
        pool.apply(lambda: 1 / 0)
    assert isinstance(info.value.__cause__, shoal.RemoteTraceback)
    assert "ZeroDivisionError" in str(info.value.__cause__)


def test_unpicklable_result_raises_serialization_error(make_pool):
    pool = make_pool(2)
    with pytest.raises(shoal.SerializationError) as info:
        pool.apply(h.return_lock)
    assert isinstance(info.value, shoal.ShoalError)
    assert "lock" in str(info.value).lower()
    assert pool.apply(h.square, (3,)) == 9


def test_unpicklable_result_does_not_lose_workers(make_pool):
    p = make_pool(2)
    for _ in range(20):
        errors = []
        res = p.apply_async(h.return_lock, error_callback=errors.append)
        with pytest.raises(shoal.SerializationError):
            res.get(timeout=10)
        assert len(errors) == 1
        assert isinstance(errors[0], shoal.SerializationError)
    assert len(p.worker_pids()) == 2
    assert p.map(h.square, range(10)) == squares(10)


def test_unpicklable_result_in_map_and_submit(make_pool):
    pool = make_pool(2)
    with pytest.raises(shoal.SerializationError):
        pool.map(h.return_lock_if, range(6), chunksize=1)
    with pytest.raises(shoal.SerializationError):
        list(pool.imap(h.return_lock_if, range(6)))
    exc = pool.submit(h.return_lock).exception(timeout=10)
    assert isinstance(exc, shoal.SerializationError)
    assert pool.map(h.return_lock_if, [0, 1, 2]) == [0, 1, 2]


def test_unpicklable_exception_argument(make_pool):
    pool = make_pool(2)
    # The worker raises ValueError("...", <lock>): it cannot be pickled as is.
    # The parent must get an error (the original type rebuilt, or a
    # ShoalError explaining the problem), not hang.
    with pytest.raises((ValueError, shoal.ShoalError)) as info:
        pool.apply(h.raise_unpicklable_exception)
    assert str(info.value)
    assert pool.apply(h.square, (4,)) == 16


def test_exception_that_cannot_be_unpickled(make_pool):
    pool = make_pool(2)
    with pytest.raises((h.BadInitError, shoal.ShoalError)):
        pool.apply(h.raise_bad_init_error)
    assert pool.apply(h.square, (4,)) == 16


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

NON_CALLABLE_CALLS = {
    "apply": lambda p: p.apply(42, (1,)),
    "apply_async": lambda p: p.apply_async(42, (1,)),
    "map": lambda p: p.map(42, [1]),
    "map_async": lambda p: p.map_async(42, [1]),
    "starmap": lambda p: p.starmap(42, [(1,)]),
    "starmap_async": lambda p: p.starmap_async(42, [(1,)]),
    "imap": lambda p: list(p.imap(42, [1])),
    "imap_unordered": lambda p: list(p.imap_unordered(42, [1])),
    "submit": lambda p: p.submit(42, 1),
}


@pytest.mark.parametrize("call", sorted(NON_CALLABLE_CALLS))
def test_non_callable_func_raises_type_error(pool, call):
    with pytest.raises(TypeError):
        NON_CALLABLE_CALLS[call](pool)


BAD_CHUNKSIZE_CALLS = {
    "map": lambda p, c: p.map(h.square, [1, 2], c),
    "map_async": lambda p, c: p.map_async(h.square, [1, 2], c),
    "starmap": lambda p, c: p.starmap(h.add, [(1, 2)], c),
    "starmap_async": lambda p, c: p.starmap_async(h.add, [(1, 2)], c),
    "imap": lambda p, c: list(p.imap(h.square, [1, 2], c)),
    "imap_unordered": lambda p, c: list(p.imap_unordered(h.square, [1, 2], c)),
}


@pytest.mark.parametrize("chunksize", [0, -1])
@pytest.mark.parametrize("call", sorted(BAD_CHUNKSIZE_CALLS))
def test_bad_chunksize_raises_value_error(pool, call, chunksize):
    with pytest.raises(ValueError):
        BAD_CHUNKSIZE_CALLS[call](pool, chunksize)


# ---------------------------------------------------------------------------
# Big payloads
# ---------------------------------------------------------------------------


def test_big_result_round_trip(pool):
    payload = h.big_bytes(TEN_MB)
    assert len(payload) == TEN_MB
    result = pool.apply(h.identity, (payload,))
    assert type(result) is bytes
    assert result == payload
    assert pool.apply(h.big_bytes, (TEN_MB,)) == payload
    assert pool.apply(h.payload_len, (payload,)) == TEN_MB


def test_big_results_in_map(pool):
    sizes = [TEN_MB // 4, 1, TEN_MB // 2, 0]
    out = pool.map(h.big_bytes, sizes, chunksize=1)
    assert [len(x) for x in out] == sizes
    assert out[2] == h.big_bytes(TEN_MB // 2)
    fut = pool.submit(h.identity, bytearray(h.big_bytes(TEN_MB)))
    assert fut.result(timeout=30) == bytearray(h.big_bytes(TEN_MB))


def test_numpy_array_round_trip(pool):
    np = pytest.importorskip("numpy")
    arr = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    out = pool.apply(h.identity, (arr,))
    assert isinstance(out, np.ndarray)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr)
    assert pool.map(np.sum, [arr[:10], arr[10:20]]) == [arr[:10].sum(), arr[10:20].sum()]


# ---------------------------------------------------------------------------
# Odd values and concurrency
# ---------------------------------------------------------------------------


def test_exception_instances_as_return_values(pool):
    # Returning (not raising) an exception must not be mistaken for a failure.
    out = pool.apply(h.identity, (ValueError("returned"),))
    assert type(out) is ValueError
    assert out.args == ("returned",)
    res = pool.map(h.identity, [KeyError("k"), None, 1])
    assert type(res[0]) is KeyError and res[1:] == [None, 1]
    assert pool.submit(h.identity, RuntimeError("x")).exception(timeout=30) is None


def test_odd_values_round_trip(pool):
    values = [None, (), [], {}, {"a": [1, (2, 3)]}, 1.5, -(10**40), "ü" * 10, b"", {1, 2}]
    assert pool.map(h.identity, values, chunksize=3) == values


def test_system_exit_in_task(make_pool):
    # SystemExit raised by a task must neither hang nor break the pool.
    p = make_pool(1)
    with pytest.raises((SystemExit, shoal.WorkerLostError)):
        p.apply_async(h.exit_via_system_exit, (2,)).get(timeout=10)
    assert p.apply(h.square, (3,)) == 9


def test_concurrent_use_from_threads(pool):
    results = {}
    errors = []

    def worker(k):
        try:
            if k % 3 == 0:
                results[k] = pool.starmap(h.add, [(i, k) for i in range(200)])
            elif k % 3 == 1:
                results[k] = list(pool.imap(functools.partial(h.add, k), range(200)))
            else:
                futs = [pool.submit(h.add, i, k) for i in range(200)]
                results[k] = [f.result(timeout=30) for f in futs]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors, errors
    for k in range(6):
        assert results[k] == [i + k for i in range(200)], k


MAIN_FUNCTIONS_SCRIPT = r"""
import shoal

def triple(x):
    return 3 * x

if __name__ == "__main__":
    with shoal.Pool(2) as p:
        print(p.map(triple, range(5)))
        print(p.map(lambda x: x - 1, range(3)))
        print(p.submit(triple, 4).result(timeout=30))
"""

MAIN_CLASSES_SCRIPT = r"""
import shoal

class Box:
    def __init__(self, v):
        self.v = v

def unbox(b):
    return b.v

if __name__ == "__main__":
    with shoal.Pool(2) as p:
        print(p.map(unbox, [Box(7), Box(8)]))
        print(p.apply(Box, (9,)).v)
"""


def run_script(tmp_path, text):
    script = tmp_path / "main_script.py"
    script.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_functions_defined_in_main_module(tmp_path):
    assert run_script(tmp_path, MAIN_FUNCTIONS_SCRIPT) == ["[0, 3, 6, 9, 12]", "[-1, 0, 1]", "12"]


def test_instances_of_classes_defined_in_main_module(tmp_path):
    # Arguments and results whose class lives in __main__ (works with
    # multiprocessing's fork and spawn start methods).
    assert run_script(tmp_path, MAIN_CLASSES_SCRIPT) == ["[7, 8]", "9"]
