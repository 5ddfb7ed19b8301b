"""The call pipeline (``shoal.pool.pipeline``): what happens between a call
and its result object, whatever the call and whatever serves it, and the
behaviours of multiprocessing's Pool that code relies on.

Each test that could hang runs in a fresh interpreter with a time limit
(``isolated``), so a hang fails it instead of stalling the suite.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import helpers_mod as h
import pytest
import shoal
from shoal import _shoal

pytestmark = pytest.mark.timeout(60)


class RebuildsBadly:
    """Pickles in the worker; its pickle calls ``int("x")`` when loaded."""

    def __reduce__(self):
        return (int, ("x",))


def returns_a_bad_result(_=None):
    return RebuildsBadly()


def returns_bad_results_in_a_chunk(x):
    return RebuildsBadly() if x == 3 else x


# ------------------------------------------------------------ no hang, no loss
@pytest.mark.isolated
@pytest.mark.parametrize("pool_kind", ["process"])
def test_a_result_that_cannot_be_rebuilt_fails_its_task_and_the_pool_goes_on(pool_kind):
    with shoal.Pool(2) as pool:
        with pytest.raises(shoal.SerializationError, match=r"builtins\.int") as info:
            pool.apply(returns_a_bad_result, timeout=20)
        assert "apply(returns_a_bad_result)" in str(info.value)
        assert isinstance(info.value.__cause__, ValueError)
        assert pool.apply(abs, (-3,)) == 3  # the result thread is alive
        with pytest.raises(shoal.SerializationError):
            pool.map(returns_bad_results_in_a_chunk, range(8), chunksize=4)
        fut = pool.submit(returns_a_bad_result)
        assert isinstance(fut.exception(timeout=20), shoal.SerializationError)
        it = pool.imap(returns_bad_results_in_a_chunk, range(8), chunksize=1)
        got = []
        for _ in range(8):
            try:
                got.append(next(it))
            except shoal.SerializationError:
                got.append("bad")
        assert got == [0, 1, 2, "bad", 4, 5, 6, 7]
        assert pool.map(abs, range(-3, 0)) == [3, 2, 1]


@pytest.mark.isolated
def test_if_the_result_thread_dies_every_waiting_call_fails_and_new_calls_are_refused():
    from shoal.pool import pipeline

    def broken_delivery(output):
        raise SystemExit("the result thread's delivery broke")

    pipeline.deliver = broken_delivery  # the next output a worker prints kills the thread
    with shoal.Pool(2) as pool:
        waiting = pool.apply_async(h.slow_square, (3,), {"delay": 30})
        started = time.monotonic()
        with pytest.raises(shoal.ShoalError, match="result thread stopped"):
            pool.apply(h.print_and_return, ("hello",))
        with pytest.raises(shoal.ShoalError, match="result thread stopped"):
            waiting.get(timeout=20)
        assert time.monotonic() - started < 10
        with pytest.raises(shoal.ShoalError, match="result thread stopped"):
            pool.map(abs, [1, 2])


@pytest.mark.isolated
def test_ctrl_c_in_a_map_cancels_its_tasks():
    """A map interrupted by Ctrl-C stops its own tasks: the next call does
    not wait for them (as it did for 16 abandoned 1.5 s tasks)."""
    with shoal.Pool(2) as pool:
        pool.apply(abs, (1,))  # workers up
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            pool.map(h.sleep_seconds, [3.0] * 16, chunksize=1)
        started = time.monotonic()
        assert pool.apply(abs, (-2,), timeout=20) == 2
        assert time.monotonic() - started < 2.5, "the next call waited for the interrupted map"


@pytest.mark.isolated
def test_ctrl_c_in_an_imap_cancels_it():
    with shoal.Pool(2) as pool:
        it = pool.imap(h.sleep_seconds, [0.0] + [3.0] * 16, chunksize=1)
        assert next(it) == 0.0
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            next(it)
        started = time.monotonic()
        assert pool.apply(abs, (-2,), timeout=20) == 2
        assert time.monotonic() - started < 2.5


def test_a_call_answered_from_nothing_still_ends(make_pool):
    pool = make_pool(1)
    assert pool.map(abs, []) == []
    assert list(pool.imap(abs, [])) == []
    assert pool.starmap_async(pow, []).get(timeout=10) == []


def test_an_input_that_raises_ends_the_imap_with_its_error(make_pool):
    def items():
        yield 1
        yield 2
        raise RuntimeError("the input broke")

    it = make_pool(2).imap(abs, items(), chunksize=1)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="the input broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_cancel_of_a_finished_result_is_a_no_op(make_pool):
    pool = make_pool(1)
    r = pool.apply_async(abs, (-1,))
    assert r.get(timeout=10) == 1
    pool.cancel(r)
    assert r.get() == 1
    with pytest.raises(TypeError, match="results of this pool"):
        pool.cancel(42)


def test_results_of_another_pool_are_refused(make_pool):
    a, b = make_pool(1), make_pool(1)
    r = a.apply_async(h.slow_square, (2,), {"delay": 2})
    with pytest.raises(ValueError, match="another pool"):
        b.cancel(r)
    a.cancel(r)


# ---------------------------------------------------- the sizing rule, typed
def test_one_chunk_sizing_rule():
    assert _shoal.chunk_size(100, 2, False) == 13  # about four chunks per worker
    assert _shoal.chunk_size(6400, 2, True) == _shoal.chunk_size(6400, 32, True)  # length alone
    assert _shoal.measured_chunk_size(0.0) == 1
    assert _shoal.measured_chunk_size(1_000_000.0) == 5  # ~5 ms of 1 ms items


def test_map_chunks_follow_the_rule(make_pool):
    pool = make_pool(2, trace=True)
    pool.map(abs, range(100))
    (call,) = pool.trace().calls
    assert call.tasks == 8  # ceil(100 / 13)


def test_completions_are_typed():
    c = _shoal.Completion(7, _shoal.Outcome.Lost, pid=12, exitcode=None, signal=9)
    assert (c.task_id, c.outcome, c.pid, c.signal, c.payload) == (
        7,
        _shoal.Outcome.Lost,
        12,
        9,
        None,
    )
    assert c.outcome != _shoal.Outcome.Done


# -------------------------------------------- multiprocessing's Pool behaviours
def test_a_remote_traceback_is_multiprocessings_own(make_pool):
    with pytest.raises(ZeroDivisionError) as info:
        make_pool(1).apply(divmod, (1, 0))
    assert type(info.value.__cause__) is multiprocessing.pool.RemoteTraceback
    assert shoal.RemoteTraceback is multiprocessing.pool.RemoteTraceback
    assert "ZeroDivisionError" in str(info.value.__cause__)


def test_a_running_pool_collected_unclosed_warns():
    pool = shoal.Pool(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught), caught


def test_a_terminated_pool_collected_does_not_warn():
    pool = shoal.ThreadPool(1)
    pool.terminate()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_pool_lists_its_workers_with_their_pids(make_pool):
    pool = make_pool(2, maxtasksperchild=1)
    first = {w.pid for w in pool._pool}
    assert first == set(pool.worker_pids()) and len(first) == 2
    assert all(w.is_alive() for w in pool._pool)
    pool.map(abs, range(10), chunksize=1)
    assert h.wait_until(
        lambda: len(pool._pool) == 2 and not {w.pid for w in pool._pool} & first, 10
    )


def test_a_thread_pool_lists_its_threads():
    with shoal.ThreadPool(2) as pool:
        pool.map(abs, range(4))
        assert len(pool._pool) == 2 and all(t.is_alive() for t in pool._pool)


# ------------------------------------------------------ the worker, alone
def test_a_worker_started_by_hand_says_what_it_is():
    done = subprocess.run(
        [sys.executable, "-m", "shoal.worker"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "started by shoal's engine" in done.stderr


# --------------------------------------------------- futures as the stdlib's
class Holder:
    def method(self):
        return 1


@pytest.mark.parametrize("pool_kind", ["process", "thread"])
def test_a_future_cancels_only_a_task_no_worker_holds(pool_kind):
    """``Future.cancel()`` asks the engine: a task a worker holds runs on
    (cancel is False, running() True), one still queued is cancelled."""
    cls = shoal.Pool if pool_kind == "process" else shoal.ThreadPool
    with cls(1) as pool:
        running = pool.submit(h.sleep_seconds, 1.0)
        queued = pool.submit(h.sleep_seconds, 1.0)
        assert h.wait_until(running.running, 10)
        assert not running.cancel()
        assert queued.cancel() and queued.cancelled()
        assert not queued.running()
        assert running.result(timeout=20) == 1.0
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(timeout=20)
        # pool.cancel() stops even a running task; its future ends cancelled.
        hard = pool.submit(h.sleep_seconds, 30.0)
        assert h.wait_until(hard.running, 10)
        pool.cancel(hard)
        with pytest.raises(concurrent.futures.CancelledError):
            hard.result(timeout=20)


@pytest.mark.parametrize("pool_kind", ["process", "thread"])
def test_the_function_cache_keeps_no_object_alive(pool_kind):
    """``submit(obj.method)``: the function is sent once per object, and
    the object is freed once its tasks are done."""
    import weakref

    cls = shoal.Pool if pool_kind == "process" else shoal.ThreadPool
    with cls(1) as pool:
        obj = Holder()
        alive = weakref.ref(obj)
        assert [pool.submit(obj.method).result(timeout=20) for _ in range(3)] == [1, 1, 1]
        assert pool.apply(obj.method) == 1
        del obj
        gc.collect()
        assert h.wait_until(lambda: alive() is None, 10), "the pool kept the object alive"
        assert pool.submit(abs, -1).result(timeout=20) == 1


def adder(n):
    def add(x):
        return x + n

    return add


def test_the_function_cache_tells_functions_apart_as_they_come_and_go(make_pool):
    """A function used again is sent once, but never mistaken for another:
    a closure freed and another made at its address, and more functions
    than the cache keeps between two calls of the same one."""
    from shoal.pool.pipeline import FUNCTION_CACHE_SIZE

    pool = make_pool(1)
    hot = adder(1000)
    for n in range(2 * FUNCTION_CACHE_SIZE + 5):
        assert pool.submit(hot, 1).result(timeout=20) == 1001
        assert pool.submit(hot, 2).result(timeout=20) == 1002
        passing = adder(n)  # often at the address of the one before it
        assert pool.submit(passing, 1).result(timeout=20) == n + 1
        del passing
    # Bound methods of more objects than the cache keeps evict the function
    # used last; used again, it is sent again.
    assert pool.submit(hot, 3).result(timeout=20) == 1003
    holders = [Holder() for _ in range(FUNCTION_CACHE_SIZE + 1)]
    assert [pool.submit(obj.method).result(timeout=20) for obj in holders] == [1] * len(holders)
    assert pool.submit(hot, 4).result(timeout=20) == 1004
    assert pool.apply(hot, (5,)) == 1005


def test_a_call_may_name_its_task_for_traces_and_messages(make_pool):
    pool = make_pool(1, trace=True)
    pipeline = pool._pipeline
    future = pipeline.submit(h.raise_value_error, ("boom",), {}, pipeline.defaults, name="my-key")
    with pytest.raises(ValueError):
        future.result(timeout=20)
    assert [c.label for c in pool.trace().calls] == ["submit(my-key)"]


class ExitsWhenRebuilt:
    def __reduce__(self):
        return (sys.exit, (3,))


def returns_an_exit_when_rebuilt(_=None):
    return ExitsWhenRebuilt()


def test_a_result_whose_rebuilding_calls_sys_exit_fails_its_task(make_pool):
    pool = make_pool(1)
    with pytest.raises(shoal.SerializationError, match="sys.exit"):
        pool.apply(returns_an_exit_when_rebuilt)
    assert pool.apply(abs, (-2,)) == 2
