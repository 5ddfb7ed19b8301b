"""``shoal.Queue`` (with ``maxsize``, ``qsize``, ``full``, ``close``,
``join_thread``), ``JoinableQueue`` and ``SimpleQueue``, ported from
CPython's ``_TestQueue``."""

from __future__ import annotations

import pickle
import queue as pyqueue
import time

import mp_helpers as mh
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.1


started = mh.started


def test_put():
    maxsize = 6
    queue = shoal.Queue(maxsize=maxsize)
    child_can_start, parent_can_continue = shoal.Event(), shoal.Event()
    proc = started(mh.get_six_then_signal, queue, child_can_start, parent_can_continue)
    assert queue.empty() is True
    assert queue.full() is False
    queue.put(1)
    queue.put(2, True)
    queue.put(3, True, None)
    queue.put(4, False)
    queue.put(5, False, None)
    queue.put_nowait(6)
    assert queue.empty() is False
    assert queue.full() is True
    assert queue.qsize() == 6
    with pytest.raises(pyqueue.Full):
        queue.put(7, False)
    with pytest.raises(pyqueue.Full):
        queue.put(7, False, None)
    with pytest.raises(pyqueue.Full):
        queue.put_nowait(7)
    t = time.monotonic()
    with pytest.raises(pyqueue.Full):
        queue.put(7, True, TIMEOUT)
    assert time.monotonic() - t >= TIMEOUT - 0.01
    t = time.monotonic()
    with pytest.raises(pyqueue.Full):
        queue.put(7, False, TIMEOUT)
    assert time.monotonic() - t < 0.05
    with pytest.raises(pyqueue.Full):
        queue.put(7, True, timeout=TIMEOUT)
    child_can_start.set()
    assert parent_can_continue.wait(30)
    assert queue.empty() is True
    assert queue.full() is False
    assert queue.qsize() == 0
    proc.join(30)


def test_a_put_waits_for_room():
    queue = shoal.Queue(1)
    queue.put("a")
    child_can_start, parent_can_continue = shoal.Event(), shoal.Event()
    proc = started(mh.get_six_then_signal, queue, child_can_start, parent_can_continue)
    child_can_start.set()
    for item in "bcdef":
        queue.put(item, timeout=30)  # each waits for the child to take one
    assert parent_can_continue.wait(30)
    proc.join(30)


def test_get():
    queue = shoal.Queue()
    child_can_start, parent_can_continue = shoal.Event(), shoal.Event()
    proc = started(mh.put_four_then_signal, queue, child_can_start, parent_can_continue)
    assert queue.empty() is True
    child_can_start.set()
    assert parent_can_continue.wait(30)
    assert queue.empty() is False
    assert queue.get(True, None) == 2
    assert queue.get(True) == 3
    assert queue.get(timeout=1) == 4
    assert queue.get_nowait() == 5
    assert queue.empty() is True
    for call in (
        lambda: queue.get(False),
        lambda: queue.get(False, None),
        queue.get_nowait,
        lambda: queue.get(False, TIMEOUT),
    ):
        t = time.monotonic()
        with pytest.raises(pyqueue.Empty):
            call()
        assert time.monotonic() - t < 0.05
    for call in (lambda: queue.get(True, TIMEOUT), lambda: queue.get(timeout=TIMEOUT)):
        t = time.monotonic()
        with pytest.raises(pyqueue.Empty):
            call()
        assert time.monotonic() - t >= TIMEOUT - 0.01
    proc.join(30)


def test_items_from_parent_and_child_all_arrive():
    # CPython's test_fork: items put by two processes all come out.
    queue = shoal.Queue()
    for i in range(10):
        queue.put(i)
    p = started(mh.put_range, queue, 10, 20)
    assert sorted(queue.get(timeout=30) for _ in range(20)) == list(range(20))
    with pytest.raises(pyqueue.Empty):
        queue.get(False)
    p.join(30)


def test_qsize():
    q = shoal.Queue()
    assert q.qsize() == 0
    q.put(1)
    assert q.qsize() == 1
    q.put(5)
    assert q.qsize() == 2
    q.get()
    assert q.qsize() == 1
    q.get()
    assert q.qsize() == 0
    q.close()
    q.join_thread()


def test_task_done():
    queue = shoal.JoinableQueue()
    workers = [started(mh.task_done_worker, queue) for _ in range(4)]
    for i in range(10):
        queue.put(i)
    assert queue.join(timeout=30)
    for _ in workers:
        queue.put(None)
    for p in workers:
        p.join(30)
        assert p.exitcode == 0


def test_join_waits_for_every_task_done():
    q = shoal.JoinableQueue()
    done = shoal.Event()
    q.put("work")
    joiner = started(mh.join_queue, q, done)
    assert q.get(timeout=10) == "work"
    assert not done.wait(0.3), "join() returned before task_done()"
    q.task_done()
    assert done.wait(30)
    joiner.join(30)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    assert q.join(timeout=0)


def test_queue_timeout():
    q = shoal.Queue()
    start = time.monotonic()
    with pytest.raises(pyqueue.Empty):
        q.get(True, 0.200)
    assert time.monotonic() - start >= 0.100


def test_unpicklable_item_leaves_the_queue_working():
    class NotSerializable:
        def __reduce__(self):
            raise AttributeError

    for q in (shoal.Queue(), shoal.Queue(maxsize=1)):
        with pytest.raises(AttributeError):
            q.put(NotSerializable())
        q.put(True)
        assert q.qsize() == 1
        assert q.get(timeout=10) is True
        assert q.empty()


def test_closed_queue_put_get_exceptions():
    for q in (shoal.Queue(), shoal.JoinableQueue()):
        q.close()
        with pytest.raises(ValueError, match="is closed"):
            q.put("foo")
        with pytest.raises(ValueError, match="is closed"):
            q.get()
        q.join_thread()
        q.cancel_join_thread()
        assert q.empty()


def test_simple_queue():
    q = shoal.SimpleQueue()
    assert q.empty()
    p = started(mh.put_range, q, 0, 5)
    assert [q.get() for _ in range(5)] == list(range(5))
    p.join(30)
    assert q.empty()
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.get()


def test_queues_in_pool_tasks_and_plain_pickle(make_pool):
    q = shoal.JoinableQueue(3)
    pool = make_pool(2)
    pool.starmap(mh.put_range, [(q, 0, 2), (q, 2, 3)])
    assert sorted(q.get(timeout=10) for _ in range(3)) == [0, 1, 2]
    for _ in range(3):
        q.task_done()
    assert q.join(timeout=5)
    with pytest.raises(TypeError, match="not pickled otherwise"):
        pickle.dumps(q)


def test_maxsize_is_checked():
    with pytest.raises(TypeError, match="maxsize"):
        shoal.Queue("3")
    q = shoal.Queue(-5)  # as multiprocessing: no limit
    for i in range(100):
        q.put_nowait(i)
    assert q.qsize() == 100 and not q.full()
