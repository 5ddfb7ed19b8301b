"""``shoal.Lock``, ``shoal.Value``, ``shoal.Queue`` and ``shoal.Process``
across real processes."""

from __future__ import annotations

import ctypes
import os
import pickle
import queue
import re
import signal
import sys
import threading
import time

import helpers_mod as h
import numpy as np
import pytest
import shm_helpers as sh
import shoal

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------- Lock


def test_lock_basics():
    lock = shoal.Lock()
    assert not lock.locked()
    assert lock.acquire()
    assert lock.locked()
    assert not lock.acquire(block=False)
    t0 = time.monotonic()
    assert not lock.acquire(timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    lock.release()
    with pytest.raises(ValueError, match="not held"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_a_lock_excludes_across_processes(make_pool):
    pool = make_pool(2)
    lock = shoal.Lock()
    log = shoal.Queue()
    pool.starmap(sh.hold_lock, [(lock, 0.05, log)] * 6, chunksize=1)
    events = sorted((log.get(timeout=5) for _ in range(12)), key=lambda e: e[2])
    # Strictly alternating in/out: no two holders at once.
    assert [e[0] for e in events] == ["in", "out"] * 6
    for enter, leave in zip(events[::2], events[1::2], strict=True):
        assert enter[1] == leave[1]


def test_a_lock_held_by_the_parent_blocks_a_worker(make_pool):
    pool = make_pool(1)
    lock = shoal.Lock()
    lock.acquire()
    result = pool.apply_async(sh.hold_lock, (lock, 0))
    time.sleep(0.3)
    assert not result.ready()
    lock.release()
    assert result.get(timeout=10) == pool.worker_pids()[0]


def test_a_lock_whose_holder_was_killed_is_taken_over(make_pool):
    pool = make_pool(1)
    lock = shoal.Lock()
    pool.apply_async(sh.hold_lock, (lock, 60))
    assert h.wait_until(lock.locked, 10)
    os.kill(pool.worker_pids()[0], signal.SIGKILL)
    assert lock.acquire(timeout=10), "the dead holder's lock was not taken over"
    lock.release()


def test_a_lock_held_by_a_killed_unreaped_process_is_taken_over():
    # A killed child stays a zombie until joined; it holds nothing any more.
    lock = shoal.Lock()
    child = shoal.Process(target=sh.hold_lock, args=(lock, 60))
    child.start()
    try:
        assert h.wait_until(lock.locked, 10)
        os.kill(child.pid, signal.SIGKILL)
        assert lock.acquire(timeout=5), "waited on a zombie's lock"
        lock.release()
    finally:
        child.join(10)


def test_huge_timeouts_mean_no_timeout():
    lock, queue = shoal.Lock(), shoal.Queue()
    queue.put("item")
    assert lock.acquire(timeout=1e19)
    assert queue.get(timeout=1e300) == "item"


def test_shoal_objects_refuse_plain_pickle():
    for obj in (shoal.Lock(), shoal.Value("i"), shoal.Queue()):
        with pytest.raises(TypeError, match="not pickled otherwise"):
            pickle.dumps(obj)


# --------------------------------------------------------------------- Value


def test_value_types():
    assert shoal.Value("i").value == 0
    assert shoal.Value("d", 2.5).value == 2.5
    assert shoal.Value(ctypes.c_double, 1.5).value == 1.5
    assert shoal.Value(ctypes.c_bool, True).value is True
    v = shoal.Value("q", 2**40)
    v.value += 1
    assert v.value == 2**40 + 1
    with pytest.raises(TypeError, match="bad typecode"):
        shoal.Value("x")
    assert "get_lock" in dir(shoal.Value("i"))
    raw = shoal.Value("i", 7, lock=False)  # as multiprocessing: a RawValue, no lock
    assert isinstance(raw, ctypes.c_int) and raw.value == 7
    assert not hasattr(raw, "get_lock")
    own = shoal.Lock()
    assert shoal.Value("i", lock=own).get_lock() is own


def test_a_value_set_in_a_process_is_seen_by_the_parent():
    v = shoal.Value("d", 0.0)
    p = shoal.Process(target=sh.set_value, args=(v, 42.5))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert v.value == 42.5


def run_increments(pool, use_lock):
    """2,000 increments from two overlapping tasks; returns the final value."""
    value, gate = shoal.Value("i", 0), shoal.Value("i", 0)
    pool.starmap(sh.increment, [(value, 1000, use_lock, gate)] * 2, chunksize=1)
    return value.value


def test_the_race_condition_lesson(make_pool):
    """Without a lock, concurrent ``value += 1`` lose updates; with
    ``get_lock()`` they don't. A race is a matter of timing, so the unlocked
    run gets a few tries to show it."""
    pool = make_pool(2)
    unlocked = [run_increments(pool, use_lock=False) for _ in range(5)]
    assert min(unlocked) < 2000, f"no update was lost in 5 runs: {unlocked}"
    assert all(run_increments(pool, use_lock=True) == 2000 for _ in range(3))
    many = shoal.Value("i", 0)
    pool.starmap(sh.increment, [(many, 20, True)] * 100, chunksize=1)
    assert many.value == 2000


# --------------------------------------------------------------------- Queue


def test_queue_in_one_process():
    q = shoal.Queue()
    assert q.empty()
    q.put(1)
    q.put({"two": [2]})
    q.put_nowait(np.arange(100_000))
    assert not q.empty()
    assert q.get() == 1
    assert q.get(timeout=1) == {"two": [2]}
    assert q.get_nowait().sum() == np.arange(100_000).sum()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_queue_many_producers_many_consumers(make_pool):
    pool = make_pool(2)
    q = shoal.Queue()
    producers = [shoal.Process(target=sh.produce, args=(q, k * 1000, 250)) for k in range(3)]
    for p in producers:
        p.start()
    consumer = pool.apply_async(sh.consume, (q, 400))
    mine = [q.get(timeout=10) for _ in range(350)]
    for p in producers:
        p.join(10)
        assert p.exitcode == 0
    theirs = consumer.get(timeout=20)
    got = sorted(mine + theirs)
    assert got == sorted(k * 1000 + i for k in range(3) for i in range(250))


def test_queue_items_carry_shared_memory_and_shoal_objects(make_pool):
    pool = make_pool(1)
    q = shoal.Queue()
    pool.apply(sh.put_array, (q, 500_000))
    a = q.get(timeout=10)
    assert sh.segment_of(a) is not None and a[-1] == 499_999
    inbox, outbox = shoal.Queue(), shoal.Queue()
    lock = shoal.Lock()
    inbox.put(lock)
    pool.apply(sh.echo_through, (inbox, outbox))
    back = outbox.get(timeout=10)
    back.acquire()
    assert lock.locked()


def test_close_drains_then_get_raises():
    q = shoal.Queue()
    q.put("last")
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put("more")
    assert q.get(timeout=1) == "last"
    with pytest.raises(ValueError, match="closed shoal.Queue"):
        q.get(timeout=1)
    assert q.empty()


def test_closing_in_another_process_wakes_a_blocked_get():
    q = shoal.Queue()
    p = shoal.Process(target=q.close)
    threading.Timer(0.2, p.start).start()
    with pytest.raises(ValueError, match="closed"):
        q.get(timeout=10)
    p.join(10)


# ------------------------------------------------------------------- Process


def test_process_exit_codes():
    ok = shoal.Process(target=h.square, args=(3,))
    assert ok.pid is None and ok.exitcode is None and not ok.is_alive()
    ok.start()
    ok.join(10)
    assert ok.exitcode == 0 and not ok.is_alive()

    raised = shoal.Process(target=h.raise_value_error, name="boom")
    raised.start()
    raised.join(10)
    assert raised.exitcode == 1

    exited = shoal.Process(target=sys.exit, args=(7,))
    exited.start()
    exited.join(10)
    assert exited.exitcode == 7

    hard = shoal.Process(target=os._exit, args=(4,))
    hard.start()
    hard.join(10)
    assert hard.exitcode == 4


def test_lambdas_and_subclasses():
    v = shoal.Value("i", 0)
    p = shoal.Process(target=lambda: setattr(v, "value", 5))
    p.start()
    p.join(10)
    assert (p.exitcode, v.value) == (0, 5)

    class Worker(shoal.Process):
        def __init__(self, value):
            super().__init__()
            self.target_value = value

        def run(self):
            self.target_value.value = 9

    w = Worker(v)
    w.start()
    w.join(10)
    assert (w.exitcode, v.value) == (0, 9)


def test_join_timeout_terminate_and_kill():
    p = shoal.Process(target=sh.sleep_forever, daemon=True)
    p.start()
    assert p.pid > 0 and p.is_alive() and h.pid_alive(p.pid)
    t0 = time.monotonic()
    p.join(0.2)
    assert p.is_alive() and time.monotonic() - t0 < 5
    p.terminate()
    p.join(10)
    assert p.exitcode == -signal.SIGTERM
    q = shoal.Process(target=sh.sleep_forever)
    q.start()
    q.kill()
    q.join(10)
    assert q.exitcode == -signal.SIGKILL
    q.kill()  # after it is gone: nothing happens


def test_misuse_is_reported():
    p = shoal.Process(target=h.square, args=(1,))
    with pytest.raises(ValueError, match="start"):
        p.join()
    p.start()
    with pytest.raises(RuntimeError, match="already started"):
        p.start()
    p.join(10)
    p.close()
    assert "closed" in repr(p)
    for misuse in (p.start, p.join):
        with pytest.raises(ValueError, match="closed"):
            misuse()
    with pytest.raises(TypeError, match="callable"):
        shoal.Process(target=42)


def test_a_process_started_from_a_short_lived_thread_lives_on():
    started = []
    t = threading.Thread(target=lambda: started.append(_start(sh.sleep_forever)))
    t.start()
    t.join()
    p = started[0]
    time.sleep(0.3)
    assert p.is_alive(), "the child died with the thread that started it"
    p.kill()
    p.join(10)


def _start(target, *args):
    p = shoal.Process(target=target, args=args)
    p.start()
    return p


def test_the_race_condition_example_shows_the_race_and_its_fix():
    import subprocess

    example = os.path.join(os.path.dirname(__file__), "..", "examples", "race_condition.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    lost = []
    for _ in range(5):  # the workshop's numbers: 4 processes x 20,000 increments
        done = subprocess.run(
            [sys.executable, example], capture_output=True, text=True, timeout=50, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "with get_lock(): 80,000 of 80,000 increments" in done.stdout
        found = re.search(
            r"without a lock: [\d,]+ of 80,000 increments \(([\d,]+) lost\)", done.stdout
        )
        assert found, done.stdout
        lost.append(int(found.group(1).replace(",", "")))
        if lost[-1] > 0:
            break  # (a busy machine may now and then let the processes take turns)
    assert lost[-1] > 0, f"the race did not show in {len(lost)} runs"
