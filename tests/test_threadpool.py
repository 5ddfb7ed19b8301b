"""shoal.ThreadPool: Pool's API on threads of this process, driven by the
same engine. Nothing is pickled, stuck threads are abandoned rather than
waited for, and output is the parent's own."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pool():
    with shoal.ThreadPool(4) as p:
        yield p


def test_the_map_family_and_submit_work_on_threads(pool):
    assert pool.map(abs, range(-50, 50)) == [abs(x) for x in range(-50, 50)]
    assert pool.starmap(pow, [(2, k) for k in range(10)]) == [2**k for k in range(10)]
    assert list(pool.imap(str, range(20), chunksize=3)) == [str(x) for x in range(20)]
    assert sorted(pool.imap_unordered(abs, range(-5, 5))) == sorted(map(abs, range(-5, 5)))
    assert pool.apply(divmod, (17, 5)) == (3, 2)
    assert pool.apply_async(max, (3, 9)).get(timeout=10) == 9
    assert pool.map_async(abs, [-1, -2]).get(timeout=10) == [1, 2]
    futures = [pool.submit(pow, 3, k) for k in range(5)]
    assert [f.result(timeout=10) for f in concurrent.futures.as_completed(futures)]
    assert sorted(f.result() for f in futures) == [3**k for k in range(5)]


def test_every_task_runs_once_while_idle_workers_take_queued_ones():
    # Uneven tasks keep the scheduler taking queued tasks back from busy
    # workers for idle ones; a task it takes back after the worker began it
    # would run twice. Threads let the test count every run exactly.
    visits = collections.Counter()
    lock = threading.Lock()

    def visit(i):
        with lock:
            visits[i] += 1
        if i % 7 == 0:
            time.sleep(0.0005)
        return i

    with shoal.ThreadPool(3) as pool:
        for _ in range(300):
            visits.clear()
            assert pool.map(visit, range(12), chunksize=1) == list(range(12))
            assert visits == collections.Counter(range(12))


def test_tasks_run_on_worker_threads_of_this_process(pool):
    where = pool.map(lambda _: (os.getpid(), threading.current_thread().name), range(8))
    assert {pid for pid, _ in where} == {os.getpid()}
    assert all(name.startswith("shoal-thread-") for _, name in where)
    assert pool.worker_pids() == [os.getpid()] * 4
    assert isinstance(pool, shoal.Pool)  # as multiprocessing.pool.ThreadPool is a Pool
    assert "ThreadPool" in repr(pool) and "workers=4" in repr(pool)


def test_waits_overlap():
    with shoal.ThreadPool(8) as pool:
        pool.map(abs, range(8))  # threads up
        started = time.perf_counter()
        pool.map(time.sleep, [0.3] * 8)
        elapsed = time.perf_counter() - started
    assert elapsed < 0.6, f"8 sleeps of 0.3 s on 8 threads took {elapsed:.2f} s"


def test_nothing_is_pickled_workers_see_the_callers_objects(pool):
    lock = threading.Lock()  # unpicklable
    seen: list[int] = []

    def record(x):
        with lock:
            seen.append(x)
        return lock

    results = pool.map(record, range(100))
    assert sorted(seen) == list(range(100))
    assert all(r is lock for r in results)
    # Arguments are the caller's objects, not copies.
    box = {"hits": 0}

    def bump(d):
        d["hits"] += 1
        return d

    assert pool.apply(bump, (box,)) is box and box["hits"] == 1
    gen = (i for i in range(3))
    assert pool.apply(list, (gen,)) == [0, 1, 2]


def test_an_exception_is_the_raised_object_with_its_traceback(pool):
    class Oops(Exception):
        pass

    def fail(x):
        if x == 7:
            raise Oops(f"bad {x}")
        return x

    with pytest.raises(Oops, match="bad 7") as info:
        pool.map(fail, range(10), chunksize=1)
    frames = [entry.name for entry in info.traceback]
    assert "fail" in frames
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=10)
    assert pool.map(abs, [-3]) == [3]


def test_worker_id_and_num_workers(pool):
    def who(_):
        time.sleep(0.05)  # keep all four threads busy at once
        return shoal.worker_id(), shoal.num_workers()

    answers = pool.map(who, range(8), chunksize=1)
    assert {n for _, n in answers} == {4}
    assert {i for i, _ in answers} == {0, 1, 2, 3}
    # Outside a worker: as OpenMP outside a parallel region.
    assert (shoal.worker_id(), shoal.num_workers()) == (0, 1)


def test_initializer_runs_in_each_thread_and_a_failing_one_is_reported():
    local = threading.local()

    def init(value):
        local.value = value

    with shoal.ThreadPool(3, initializer=init, initargs=(42,)) as pool:
        assert pool.map(lambda _: local.value, range(6)) == [42] * 6

    def broken():
        raise RuntimeError("no setup for you")

    with shoal.ThreadPool(2, initializer=broken) as pool:
        with pytest.raises(shoal.WorkerInitError) as info:
            pool.apply(abs, (1,))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_timeout_abandons_the_thread_and_a_new_one_takes_over():
    release = threading.Event()
    with shoal.ThreadPool(1, timeout=0.2) as pool:
        started = time.perf_counter()
        stuck = pool.apply_async(release.wait, (30,))
        after = pool.apply_async(abs, (-5,))
        with pytest.raises(shoal.TaskTimeoutError) as info:
            stuck.get(timeout=10)
        assert time.perf_counter() - started < 5
        assert "abandoned" in str(info.value)
        assert after.get(timeout=10) == 5  # ran on the replacement thread
        assert pool.map(abs, [-1, -2]) == [1, 2]
        abandoned = [t for t in threading.enumerate() if t.name == "shoal-thread-0"]
        assert len(abandoned) == 2  # the stuck one and its replacement
    release.set()


def test_cancel_abandons_a_running_task(pool):
    release = threading.Event()
    running = pool.apply_async(release.wait, (30,))
    time.sleep(0.1)
    pool.cancel(running)
    with pytest.raises(concurrent.futures.CancelledError):
        running.get(timeout=5)
    assert pool.map(abs, [-4]) == [4]
    release.set()


def test_retry_on_reruns_on_threads():
    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return x

    with shoal.ThreadPool(1, retries=3, retry_on=ConnectionError) as pool:
        assert pool.apply(flaky, (9,)) == 9
    assert calls == [9, 9, 9]


def test_terminate_returns_at_once_with_a_stuck_task():
    release = threading.Event()
    pool = shoal.ThreadPool(2)
    stuck = pool.apply_async(release.wait, (30,))
    time.sleep(0.1)
    started = time.perf_counter()
    pool.terminate()
    pool.join()
    assert time.perf_counter() - started < 2
    with pytest.raises(concurrent.futures.CancelledError):
        stuck.get(timeout=5)
    release.set()


def test_close_and_join_finish_the_work_and_end_the_threads():
    before = {t.ident for t in threading.enumerate()}
    pool = shoal.ThreadPool(3)
    result = pool.map_async(time.sleep, [0.05] * 6)
    pool.close()
    pool.join()
    assert result.get(timeout=1) == [None] * 6
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not extra:
            break
        time.sleep(0.02)
    assert not extra, extra


def test_prints_are_the_parents_own(pool, capsys):
    stdout = sys.stdout
    pool.map(print, ["hello from a thread"])
    assert sys.stdout is stdout
    out = capsys.readouterr().out
    assert "hello from a thread" in out and "[worker" not in out


def test_bad_arguments_are_refused():
    for workers in (0, -1):
        with pytest.raises(ValueError, match="workers must be at least 1"):
            shoal.ThreadPool(workers)
    for workers in (1.5, True, "2"):
        with pytest.raises(TypeError, match="workers must be an int"):
            shoal.ThreadPool(workers)
    for workers in (1.5, True, "2"):
        with pytest.raises(TypeError, match="workers must be an int"):
            shoal.ThreadPool(workers)
    with pytest.raises(TypeError, match="initializer"):
        shoal.ThreadPool(1, initializer=3)
    with pytest.raises(TypeError):
        shoal.ThreadPool(1, max_memory="1GB")  # threads share this process's memory
    with shoal.ThreadPool(1) as pool:
        with pytest.raises(TypeError, match="not callable"):
            pool.map(3, [1])
    with pytest.raises(ValueError, match="not running"):
        pool.map(abs, [1])


def test_pools_come_and_go_without_leaking_threads():
    baseline = threading.active_count()
    for _ in range(20):
        with shoal.ThreadPool(3) as pool:
            assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    deadline = time.monotonic() + 5
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= baseline


def test_a_stuck_thread_does_not_hold_up_interpreter_exit():
    script = textwrap.dedent(
        """
        import time, shoal
        pool = shoal.ThreadPool(2, timeout=0.2)
        try:
            pool.apply(time.sleep, (60,))
        except shoal.TaskTimeoutError:
            print("timed out")
        pool.apply_async(time.sleep, (60,))  # still running at exit
        print("leaving")
        """
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timed", "out", "leaving"]
    assert time.perf_counter() - started < 15
    assert "Fatal" not in done.stderr and "panicked" not in done.stderr, done.stderr
