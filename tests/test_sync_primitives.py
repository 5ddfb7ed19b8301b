"""``shoal.Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``,
``Condition``, ``Event`` and ``Barrier`` across real processes, ported from
CPython's ``Lib/test/_test_multiprocessing.py`` (``_TestLock``,
``_TestSemaphore``, ``_TestCondition``, ``_TestEvent``, ``_TestBarrier``),
plus what CPython cannot promise: a holder killed while it holds a lock or a
semaphore does not wedge the others."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import mp_helpers as mh
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.1


started, joined = mh.started, mh.joined


class Timing:
    def __init__(self, func):
        self.func = func
        self.elapsed = None

    def __call__(self, *args, **kwargs):
        t = time.monotonic()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.elapsed = time.monotonic() - t


# ---------------------------------------------------------------------- locks


def test_lock():
    lock = shoal.Lock()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    assert lock.release() is None
    assert not lock.locked()
    with pytest.raises((ValueError, threading.ThreadError)):
        lock.release()


@pytest.mark.parametrize("make", [shoal.Lock, shoal.RLock])
def test_lock_locked_2processes(make):
    lock, event, res = make(), shoal.Event(), shoal.Value("b", 0)
    p = started(mh.acquire_and_report, lock, event, res)
    assert event.wait(30)
    assert lock.locked()
    assert res.value
    joined(p)


def test_rlock():
    lock = shoal.RLock()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire() is True
    assert lock.acquire() is True
    assert lock.release() is None
    assert lock.locked()
    assert lock.release() is None
    assert lock.release() is None
    assert not lock.locked()
    with pytest.raises((AssertionError, RuntimeError)):
        lock.release()


def test_an_rlock_belongs_to_one_thread():
    lock = shoal.RLock()
    lock.acquire()
    errors = []

    def other():
        errors.append(lock.acquire(timeout=0.05))
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors == [False, "cannot release un-acquired lock"]
    lock.release()


@pytest.mark.parametrize("make", [shoal.Lock, shoal.RLock])
def test_lock_context(make):
    with make() as locked:
        assert locked


@pytest.mark.parametrize("make", [shoal.Lock, shoal.RLock])
def test_a_holder_killed_while_holding_is_taken_over(make):
    lock, event = make(), shoal.Event()
    p = started(mh.hold_forever, lock, event)
    assert event.wait(30)
    assert not lock.acquire(timeout=0.2), "held by the child"
    p.kill()
    joined(p)
    t = time.monotonic()
    assert lock.acquire(timeout=10), "the dead holder's lock is taken over"
    assert time.monotonic() - t < 2
    lock.release()


def test_a_holder_that_exits_holding_is_taken_over():
    lock = shoal.Lock()
    p = started(mh.hold_lock_then_exit, lock)
    joined(p)
    assert lock.acquire(timeout=10)


# ------------------------------------------------------------------ semaphore


def check_semaphore(sem):
    assert sem.get_value() == 2
    assert sem.acquire() is True
    assert sem.get_value() == 1
    assert sem.acquire() is True
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    assert sem.get_value() == 0
    assert sem.release() is None
    assert sem.get_value() == 1
    assert sem.release() is None
    assert sem.get_value() == 2


def test_semaphore():
    sem = shoal.Semaphore(2)
    check_semaphore(sem)
    assert sem.release() is None
    assert sem.get_value() == 3
    assert sem.release() is None
    assert sem.get_value() == 4


def test_bounded_semaphore():
    sem = shoal.BoundedSemaphore(2)
    check_semaphore(sem)
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert sem.get_value() == 2


def test_semaphore_timeout():
    sem = shoal.Semaphore(0)
    acquire = Timing(sem.acquire)
    assert acquire(False) is False
    assert acquire.elapsed < 0.05
    assert acquire(False, None) is False
    assert acquire(False, TIMEOUT) is False
    assert acquire.elapsed < 0.05
    assert acquire(True, TIMEOUT) is False
    assert acquire.elapsed >= TIMEOUT - 0.01
    assert acquire(timeout=TIMEOUT) is False
    assert acquire.elapsed >= TIMEOUT - 0.01


def test_semaphore_arguments():
    with pytest.raises(ValueError, match=">= 0"):
        shoal.Semaphore(-1)
    with pytest.raises(TypeError, match="int"):
        shoal.Semaphore(1.5)


@pytest.mark.parametrize("make", [shoal.Semaphore, shoal.BoundedSemaphore])
def test_units_of_a_killed_holder_come_back(make):
    sem, event = make(3), shoal.Event()
    p = started(mh.hold_units, sem, 2, event)
    assert event.wait(30)
    assert sem.acquire(timeout=5)  # the third unit
    assert not sem.acquire(timeout=0.2), "the child holds the other two"
    p.kill()
    joined(p)
    t = time.monotonic()
    assert sem.acquire(timeout=10)
    assert sem.acquire(timeout=10)
    assert time.monotonic() - t < 2
    assert sem.get_value() == 0
    for _ in range(3):
        sem.release()
    assert sem.get_value() == 3


def test_a_killed_consumer_of_signals_makes_no_spurious_ones():
    # A semaphore made with 0 is a signal: what a consumer took is gone
    # with it, not handed to the next consumer.
    sem, event = shoal.Semaphore(0), shoal.Event()
    for _ in range(2):
        sem.release()
    p = started(mh.hold_units, sem, 2, event)
    assert event.wait(30)
    p.kill()
    joined(p)
    assert not sem.acquire(timeout=0.3)
    assert sem.get_value() == 0


# ------------------------------------------------------------------ condition


def test_notify():
    cond = shoal.Condition()
    sleeping, woken = shoal.Semaphore(0), shoal.Semaphore(0)
    p = started(mh.condition_sleeper, cond, sleeping, woken)
    t = threading.Thread(target=mh.condition_sleeper, args=(cond, sleeping, woken), daemon=True)
    t.start()
    # wait for both children to start sleeping
    assert sleeping.acquire(timeout=30)
    assert sleeping.acquire(timeout=30)
    time.sleep(TIMEOUT)
    assert woken.get_value() == 0
    for expected in (1, 2):
        with cond:
            cond.notify()
        assert woken.acquire(timeout=10)
        time.sleep(TIMEOUT)
        assert woken.get_value() == 0, f"notify() woke more than one (after {expected})"
    t.join(10)
    joined(p)


def test_notify_all():
    cond = shoal.Condition()
    sleeping, woken = shoal.Semaphore(0), shoal.Semaphore(0)
    workers = []
    # some which will time out
    for _ in range(3):
        workers.append(started(mh.condition_sleeper, cond, sleeping, woken, TIMEOUT))
        t = threading.Thread(
            target=mh.condition_sleeper, args=(cond, sleeping, woken, TIMEOUT), daemon=True
        )
        t.start()
        workers.append(t)
    for _ in range(6):
        assert sleeping.acquire(timeout=30)
    for _ in range(6):
        assert woken.acquire(timeout=30), "they all time out"
    assert woken.get_value() == 0
    assert cond._cv.counts() == (0, 0), "timed-out waiters leave no trace"
    # some more which will not
    for _ in range(3):
        workers.append(started(mh.condition_sleeper, cond, sleeping, woken))
        t = threading.Thread(target=mh.condition_sleeper, args=(cond, sleeping, woken), daemon=True)
        t.start()
        workers.append(t)
    for _ in range(6):
        assert sleeping.acquire(timeout=30)
    time.sleep(TIMEOUT)
    assert woken.get_value() == 0
    with cond:
        cond.notify_all()
    for _ in range(6):
        assert woken.acquire(timeout=30)
    assert woken.get_value() == 0
    for w in workers:
        w.join(30)
    assert cond._cv.counts() == (0, 0)


def test_notify_n():
    cond = shoal.Condition()
    sleeping, woken = shoal.Semaphore(0), shoal.Semaphore(0)
    workers = []
    for _ in range(3):
        workers.append(started(mh.condition_sleeper, cond, sleeping, woken))
        t = threading.Thread(target=mh.condition_sleeper, args=(cond, sleeping, woken), daemon=True)
        t.start()
        workers.append(t)
    for _ in range(6):
        assert sleeping.acquire(timeout=30)
    time.sleep(TIMEOUT)
    assert woken.get_value() == 0
    with cond:
        cond.notify(n=2)
    deadline = time.monotonic() + 10
    while woken.get_value() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(TIMEOUT)
    assert woken.get_value() == 2
    with cond:
        cond.notify(n=4)
    deadline = time.monotonic() + 10
    while woken.get_value() < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert woken.get_value() == 6
    with cond:
        cond.notify(n=3)  # nobody is left: does nothing
    assert woken.get_value() == 6
    for w in workers:
        w.join(30)
    assert cond._cv.counts() == (0, 0)


def test_condition_timeout():
    cond = shoal.Condition()
    wait = Timing(cond.wait)
    cond.acquire()
    res = wait(TIMEOUT)
    cond.release()
    assert res is False
    assert wait.elapsed >= TIMEOUT - 0.01


def test_waitfor():
    cond = shoal.Condition()
    state = shoal.Value("i", -1)
    p = started(mh.wait_for_four, cond, state)
    with cond:
        assert cond.wait_for(lambda: state.value == 0, timeout=30)
        assert state.value == 0
    for _ in range(4):
        time.sleep(0.01)
        with cond:
            state.value += 1
            cond.notify()
    assert joined(p) == [0]


def test_waitfor_timeout():
    cond = shoal.Condition()
    state, success, sem = shoal.Value("i", 0), shoal.Value("i", False), shoal.Semaphore(0)
    p = started(mh.wait_for_timeout, cond, state, success, sem)
    assert sem.acquire(timeout=30)
    # Only increment 3 times, so state == 4 is never reached.
    for _ in range(3):
        time.sleep(0.01)
        with cond:
            state.value += 1
            cond.notify()
    joined(p)
    assert success.value


def test_wait_result_and_ctrl_c():
    c = shoal.Condition()
    with c:
        assert not c.wait(0)
        assert not c.wait(0.1)
        p = started(mh.notify_then_interrupt, c, os.getpid())
        assert c.wait(60)
        with pytest.raises(KeyboardInterrupt):
            c.wait(60)
        assert c._lock._is_owned(), "the lock is held again after the interrupt"
    joined(p)
    assert c._cv.counts() == (0, 0)


def test_condition_on_a_plain_lock_and_its_errors():
    lock = shoal.Lock()
    cond = shoal.Condition(lock)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with cond:
        assert lock.locked()
        assert not cond.wait(0.01)
    with pytest.raises(TypeError, match=r"shoal.Lock or shoal.RLock"):
        shoal.Condition(threading.Lock())


# ---------------------------------------------------------------------- event


def test_event():
    event = shoal.Event()
    wait = Timing(event.wait)
    assert event.is_set() is False
    assert wait(0.0) is False
    assert wait.elapsed < 0.05
    assert wait(TIMEOUT) is False
    assert wait.elapsed >= TIMEOUT - 0.01
    event.set()
    assert event.is_set() is True
    assert wait() is True
    assert wait.elapsed < 0.05
    assert wait(TIMEOUT) is True
    event.clear()
    assert event.is_set() is False
    p = started(mh.set_later, event)
    assert wait(30) is True
    joined(p)


def test_event_repr():
    event = shoal.Event()
    assert repr(event) == "<shoal.Event unset>"
    event.set()
    assert repr(event) == "<shoal.Event set>"


# -------------------------------------------------------------------- barrier


class Bunch:
    """N-1 processes running ``f(*args)`` (the test runs it too)."""

    def __init__(self, f, args, n):
        self.n = n
        self.started, self.finished = mh.DummyList(), mh.DummyList()
        self.can_exit = shoal.Event()
        self.can_exit.set()
        self.processes = [
            started(mh.bunch_task, f, args, self.started, self.finished, self.can_exit)
            for _ in range(n)
        ]

    def wait_for_finished(self):
        deadline = time.monotonic() + 40
        while len(self.finished) < self.n:
            assert time.monotonic() < deadline, "parties did not finish"
            time.sleep(0.01)

    def close(self):
        joined(*self.processes)


N = mh.N


@pytest.fixture
def barrier():
    b = shoal.Barrier(N, timeout=30.0)
    yield b
    b.abort()


def run_parties(f, args):
    b = Bunch(f, args, N - 1)
    try:
        f(*args)
        b.wait_for_finished()
    finally:
        b.close()
    return b


@pytest.mark.parametrize("passes", [1, 10])
def test_barrier(barrier, passes):
    results = [mh.DummyList(), mh.DummyList()]
    b = run_parties(mh.multipass, (barrier, results, passes))
    assert all(code == 0 for code in joined(*b.processes))


def test_barrier_wait_return(barrier):
    queue = shoal.Queue()
    run_parties(mh.wait_return, (barrier, queue))
    results = [queue.get(timeout=10) for _ in range(N)]
    assert results.count(0) == 1
    assert sorted(results) == list(range(N))


def test_barrier_action():
    results = mh.DummyList()
    barrier = shoal.Barrier(N, action=mh.AppendTrue(results))
    b = run_parties(mh.action_check, (barrier, results))
    assert len(results) == 1
    assert all(code == 0 for code in joined(*b.processes))


def test_barrier_abort(barrier):
    results1, results2 = mh.DummyList(), mh.DummyList()
    run_parties(mh.abort_f, (barrier, results1, results2))
    assert len(results1) == 0
    assert len(results2) == N - 1
    assert barrier.broken


def test_barrier_reset(barrier):
    results1, results2, results3 = mh.DummyList(), mh.DummyList(), mh.DummyList()
    run_parties(mh.reset_f, (barrier, results1, results2, results3))
    assert len(results1) == 0
    assert len(results2) == N - 1
    assert len(results3) == N


def test_barrier_abort_and_reset(barrier):
    results1, results2, results3 = mh.DummyList(), mh.DummyList(), mh.DummyList()
    barrier2 = shoal.Barrier(N)
    run_parties(mh.abort_and_reset_f, (barrier, barrier2, results1, results2, results3))
    assert len(results1) == 0
    assert len(results2) == N - 1
    assert len(results3) == N


def test_barrier_timeout(barrier):
    results = mh.DummyList()
    run_parties(mh.timeout_f, (barrier, results))
    assert len(results) == barrier.parties


def test_barrier_default_timeout():
    barrier = shoal.Barrier(N, timeout=0.5)
    results = mh.DummyList()
    run_parties(mh.default_timeout_f, (barrier, results))
    assert len(results) == barrier.parties


def test_barrier_single_party():
    b = shoal.Barrier(1)
    assert b.wait() == 0
    assert b.wait() == 0


def test_barrier_thousand(barrier):
    passes = 1000
    lock = shoal.Lock()
    conn, child_conn = shoal.Pipe(False)
    processes = [started(mh.thousand_f, barrier, passes, child_conn, lock) for _ in range(N)]
    for i in range(passes):
        for _ in range(N):
            assert conn.poll(30)
            assert conn.recv() == i
    joined(*processes)


def test_a_party_killed_while_waiting_still_counts(barrier):
    small = shoal.Barrier(2, timeout=30)
    p = started(small.wait)
    deadline = time.monotonic() + 30
    while small.n_waiting < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    joined(p)
    assert small.wait(timeout=5) == 1, "its arrival still counts"


# --------------------------------------------------------------- travelling


@pytest.mark.parametrize(
    "make",
    [
        shoal.Lock,
        shoal.RLock,
        shoal.Semaphore,
        shoal.BoundedSemaphore,
        shoal.Event,
        shoal.Condition,
        lambda: shoal.Barrier(2),
    ],
)
def test_primitives_refuse_plain_pickle_and_travel_to_workers(make, make_pool):
    obj = make()
    with pytest.raises(TypeError, match="not pickled otherwise"):
        pickle.dumps(obj)
    pool = make_pool(1)
    back = pool.apply(mh.process_name, (obj,))  # travels as an argument
    assert back == "shoal-worker-0"
