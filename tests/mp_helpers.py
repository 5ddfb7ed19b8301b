"""Targets for the tests of multiprocessing's API on shoal (ported from
CPython's ``Lib/test/_test_multiprocessing.py``): importable by workers and
``shoal.Process`` children, so they pickle by reference."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import shoal

DELTA = 0.1


def started(target, *args, daemon=True, name=None):
    """A ``shoal.Process`` running ``target(*args)``, started."""
    p = shoal.Process(target=target, args=args, daemon=daemon, name=name)
    p.start()
    return p


def joined(*processes, timeout=30):
    """Their exit codes, once each has ended (fails if one has not)."""
    for p in processes:
        p.join(timeout)
        assert p.exitcode is not None, f"{p} still running"
    return [p.exitcode for p in processes]


class DummyList:
    """A shared counter that looks like a list (``append``, ``len``), as
    CPython's barrier tests use."""

    def __init__(self) -> None:
        self._n = shoal.Value("i", 0)

    def append(self, _item) -> None:
        with self._n.get_lock():
            self._n.value += 1

    def __len__(self) -> int:
        return self._n.value

    def _shoal_share_(self, attach):
        return (_rebuild_dummy, self._n)


def _rebuild_dummy(attachments, n) -> DummyList:
    d = DummyList.__new__(DummyList)
    d._n = n
    return d


class AppendTrue:
    def __init__(self, obj) -> None:
        self.obj = obj

    def __call__(self) -> None:
        self.obj.append(True)

    def _shoal_share_(self, attach):
        return (_rebuild_append_true, self.obj)


def _rebuild_append_true(attachments, obj) -> AppendTrue:
    return AppendTrue(obj)


# ------------------------------------------------------------------ locks


def acquire_and_report(lock, event, result):
    lock.acquire()
    result.value = lock.locked()
    event.set()


def hold_forever(lock, event):
    """Takes ``lock``, says so, and waits to be killed."""
    lock.acquire()
    event.set()
    time.sleep(60)


def hold_units(sem, n, event):
    for _ in range(n):
        sem.acquire()
    event.set()
    time.sleep(60)


def hold_lock_then_exit(lock):
    lock.acquire()
    os._exit(0)


# -------------------------------------------------------------- condition


def condition_sleeper(cond, sleeping, woken, timeout=None):
    cond.acquire()
    sleeping.release()
    cond.wait(timeout)
    woken.release()
    cond.release()


def wait_for_four(cond, state):
    with cond:
        state.value = 0
        cond.notify()
        result = cond.wait_for(lambda: state.value == 4)
        if not result or state.value != 4:
            sys.exit(1)


def wait_for_timeout(cond, state, success, sem):
    sem.release()
    with cond:
        expected = 0.1
        t = time.monotonic()
        result = cond.wait_for(lambda: state.value == 4, timeout=expected)
        dt = time.monotonic() - t
        if not result and expected - 0.1 <= dt:
            success.value = True


def notify_then_interrupt(cond, pid):
    with cond:
        cond.notify()
    time.sleep(1)
    os.kill(pid, signal.SIGINT)


# ------------------------------------------------------------------ event


def set_later(event, delay=DELTA):
    time.sleep(delay)
    event.set()


# ---------------------------------------------------------------- barrier

N = 5


def bunch_task(f, args, started, finished, can_exit):
    started.append(os.getpid())
    try:
        f(*args)
    finally:
        finished.append(os.getpid())
        can_exit.wait(30)


def multipass(barrier, results, n):
    m = barrier.parties
    assert m == N
    for i in range(n):
        results[0].append(True)
        assert len(results[1]) == i * m
        barrier.wait()
        results[1].append(True)
        assert len(results[0]) == (i + 1) * m
        barrier.wait()
    assert barrier.n_waiting == 0
    assert not barrier.broken


def wait_return(barrier, queue):
    queue.put(barrier.wait())


def action_check(barrier, results):
    barrier.wait()
    if len(results) != 1:
        raise RuntimeError


def abort_f(barrier, results1, results2):
    try:
        i = barrier.wait()
        if i == N // 2:
            raise RuntimeError
        barrier.wait()
        results1.append(True)
    except threading.BrokenBarrierError:
        results2.append(True)
    except RuntimeError:
        barrier.abort()


def reset_f(barrier, results1, results2, results3):
    i = barrier.wait()
    if i == N // 2:
        # Wait until the other parties are all in the barrier.
        while barrier.n_waiting < N - 1:
            time.sleep(0.001)
        barrier.reset()
    else:
        try:
            barrier.wait()
            results1.append(True)
        except threading.BrokenBarrierError:
            results2.append(True)
    # Now, pass the barrier again
    barrier.wait()
    results3.append(True)


def abort_and_reset_f(barrier, barrier2, results1, results2, results3):
    try:
        i = barrier.wait()
        if i == N // 2:
            raise RuntimeError
        barrier.wait()
        results1.append(True)
    except threading.BrokenBarrierError:
        results2.append(True)
    except RuntimeError:
        barrier.abort()
    # Synchronize and reset the barrier. Must synchronize first so that
    # everyone has left it when we reset, and after so that no one enters
    # it before the reset.
    if barrier2.wait() == N // 2:
        barrier.reset()
    barrier2.wait()
    barrier.wait()
    results3.append(True)


def timeout_f(barrier, results):
    i = barrier.wait()
    if i == N // 2:
        time.sleep(1.0)  # one party is late
    try:
        barrier.wait(0.5)
    except threading.BrokenBarrierError:
        results.append(True)


def default_timeout_f(barrier, results):
    i = barrier.wait(30)
    if i == N // 2:
        time.sleep(1.0)  # later than the barrier's default timeout
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        results.append(True)


def thousand_f(barrier, passes, conn, lock):
    for i in range(passes):
        barrier.wait()
        with lock:
            conn.send(i)


# ----------------------------------------------------------- values, arrays

CODES_VALUES = [
    ("i", 4343, 24234),
    ("d", 3.625, -4.25),
    ("h", -232, 234),
    ("q", 2**33, 2**34),
    ("c", b"x", b"y"),
]


def set_values(values):
    for sv, cv in zip(values, CODES_VALUES, strict=True):
        sv.value = cv[2]


def running_sum(seq):
    for i in range(1, len(seq)):
        seq[i] += seq[i - 1]


def add_unlocked(counter, gate, times):
    """The workshops' race: ``counter.value += 1`` without the lock, every
    process let go at once."""
    gate.wait(timeout=30)
    for _ in range(times):
        counter.value += 1


def increment_after(counter, go, done):
    go.wait(30)
    counter.value += 1
    done.set()


def add_locked(counter, gate, times):
    gate.wait(timeout=30)
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


# ------------------------------------------------------------------ queues


def get_six_then_signal(queue, child_can_start, parent_can_continue):
    child_can_start.wait()
    for _ in range(6):
        queue.get()
    parent_can_continue.set()


def put_four_then_signal(queue, child_can_start, parent_can_continue):
    child_can_start.wait()
    for i in (2, 3, 4, 5):
        queue.put(i)
    parent_can_continue.set()


def put_range(queue, start, stop):
    for i in range(start, stop):
        queue.put(i)


def task_done_worker(q):
    for _obj in iter(q.get, None):
        time.sleep(DELTA)
        q.task_done()


def join_queue(q, done):
    q.join()
    done.set()


# ------------------------------------------------------------------- pipes


def echo(conn):
    for msg in iter(conn.recv_bytes, b""):
        conn.send_bytes(msg)
    conn.close()


def send_strings(conn, strings):
    for s in strings:
        time.sleep(0.1)
        conn.send_bytes(s)
    conn.close()


def dont_merge(b):
    b.send_bytes(b"a")
    b.send_bytes(b"b")
    b.send_bytes(b"cd")


def upper_server(conn):
    for s in iter(conn.recv, None):
        conn.send(s.upper())
    conn.close()


def array_sum_back(conn):
    a = conn.recv()
    conn.send((float(a.sum()), a * 2))


# ----------------------------------------------------------------- manager


def manager_work(d, lst, ns, i):
    d[i] = i * i
    lst.append(i)
    ns.last = i
    return i


def manager_locked_add(d, lock, times):
    for _ in range(times):
        with lock:
            d["n"] = d["n"] + 1


def use_manager_dict(d):
    return d["k"]


# ----------------------------------------------------------------- naming


def process_name(_=None):
    import multiprocessing

    return multiprocessing.current_process().name


def put_process_name(q):
    import multiprocessing

    q.put(multiprocessing.current_process().name)
