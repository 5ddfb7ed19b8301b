"""``pool.cancel(...)`` stops queued and running tasks; ``Future.cancel()``
withdraws queued ones only."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time

import helpers_mod as h
import pytest

pytestmark = pytest.mark.timeout(60)

CancelledError = concurrent.futures.CancelledError


def wait_running(pool, result, seconds=0.3):
    """Gives a just-submitted task time to start in its worker."""
    time.sleep(seconds)
    assert not result.ready()


def test_cancel_stops_a_running_apply_and_the_pool_goes_on(make_pool):
    p = make_pool(1)
    first = p.worker_pids()
    r = p.apply_async(h.sleep_and_return, (1, 30))
    wait_running(p, r)
    started = time.monotonic()
    p.cancel(r)
    with pytest.raises(CancelledError, match="cancelled"):
        r.get(timeout=10)
    assert time.monotonic() - started < 5
    assert p.map(h.square, range(5)) == [0, 1, 4, 9, 16]
    assert h.wait_until(lambda: p.worker_pids() not in ([], first), 10), "worker replaced"


def test_cancel_a_map_stops_every_chunk(make_pool):
    p = make_pool(2)
    r = p.map_async(h.sleep_seconds, [30] * 6, chunksize=1)
    wait_running(p, r)
    started = time.monotonic()
    p.cancel(r)
    with pytest.raises(CancelledError):
        r.get(timeout=10)
    assert time.monotonic() - started < 5
    assert p.apply(h.square, (3,)) == 9


def test_cancel_leaves_other_tasks_alone(make_pool):
    p = make_pool(2)
    doomed = p.apply_async(h.sleep_and_return, ("doomed", 30))
    kept = p.apply_async(h.sleep_and_return, ("kept", 1.0))
    wait_running(p, doomed)
    p.cancel(doomed)
    assert kept.get(timeout=20) == "kept"
    with pytest.raises(CancelledError):
        doomed.get(timeout=10)


def test_cancel_a_future_marks_it_cancelled(make_pool):
    p = make_pool(1)
    f = p.submit(h.sleep_and_return, 1, 30)
    time.sleep(0.3)
    p.cancel(f)
    done, _ = concurrent.futures.wait([f], timeout=10)
    assert f in done
    assert f.cancelled()
    with pytest.raises(CancelledError):
        f.result(timeout=1)


def test_future_cancel_only_withdraws_queued_tasks(make_pool):
    p = make_pool(1)
    running = p.submit(h.sleep_and_return, "ran", 0.5)
    queued = p.submit(h.sleep_and_return, "never", 0.5)
    time.sleep(0.2)
    assert queued.cancel()
    assert running.result(timeout=10) == "ran"
    assert queued.cancelled()


def test_cancel_an_imap_stops_reading_its_input(make_pool):
    p = make_pool(2)
    read = itertools.count()
    lock = threading.Lock()

    def source():
        for i in range(10_000):
            with lock:
                next(read)
            yield 30 if i >= 2 else 0

    it = p.imap(h.sleep_seconds, source(), chunksize=1)
    assert next(it) == 0
    assert next(it) == 0
    p.cancel(it)
    with pytest.raises(CancelledError):
        next(it)
    # The feeder may be inside a read as the cancel lands: wait for the
    # count to settle, then check it settled long before the input's end.
    deadline = time.monotonic() + 5
    with lock:
        seen = next(read)
    while True:
        time.sleep(0.3)
        with lock:
            now = next(read)
        if now == seen + 1:  # only our own read since the last look
            break
        assert time.monotonic() < deadline, "the input is still being read"
        seen = now
    assert seen < 1_000, f"read {seen} items of an imap cancelled after 2"
    assert p.apply(h.square, (4,)) == 16


def test_cancel_finished_results_is_harmless(make_pool):
    p = make_pool(1)
    r = p.apply_async(h.square, (3,))
    assert r.get(timeout=10) == 9
    p.cancel(r)
    assert r.get() == 9


def test_cancel_refuses_what_is_not_a_result(make_pool):
    p = make_pool(1)
    with pytest.raises(TypeError, match="results of this pool"):
        p.cancel(42)
