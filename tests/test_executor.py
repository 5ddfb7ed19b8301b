"""``shoal.ProcessPoolExecutor`` and ``shoal.ThreadPoolExecutor``
(``shoal.pool.executor``): drop-ins for the standard executors.

Most tests are CPython's own (``Lib/test/test_concurrent_futures/``:
executor.py, test_as_completed.py, test_wait.py, test_shutdown.py,
test_init.py, test_deadlock.py, test_process_pool.py, test_thread_pool.py),
ported with fewer workers and shorter sleeps. Left out: the tests that read
only the standard executors' private machinery (``_executor_manager_thread``,
``_call_queue``, ``_idle_semaphore``, mocked ``_ThreadWakeup``), and those
about how many workers are started on demand (shoal starts them all at
once). Where shoal behaves differently on purpose -- a worker's death fails
only its task; a task that can't be unpickled fails with its own error
instead of breaking the executor -- the test says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool

import helpers_mod as h
import pytest
import shoal
from shoal import errors

pytestmark = pytest.mark.timeout(60)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
EXECUTORS = {"process": shoal.ProcessPoolExecutor, "thread": shoal.ThreadPoolExecutor}


# ------------------------------------------------------- task functions
def mul(x, y):
    return x * y


def capture(*args, **kwargs):
    return args, kwargs


def sleep_and_raise(t):
    time.sleep(t)
    raise Exception("this is an exception")


INITIALIZER_STATUS = "uninitialized"


def init(x):
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = x


def get_init_status():
    return INITIALIZER_STATUS


def init_fail():
    time.sleep(0.1)  # let some futures be scheduled
    raise ValueError("error in initializer")


class MyObject:
    def my_method(self):
        pass


def make_dummy_object(_):
    return MyObject()


def raise_runtime_error_123():
    raise RuntimeError(123)  # some comment


def crash(delay=None):
    """A segfault."""
    if delay:
        time.sleep(delay)
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


def crash_with_data(data):
    crash()


def exit_1():
    sys.exit(1)


def raise_error(err):
    raise err()


def return_instance(cls):
    return cls()


class CrashAtUnpickle:
    def __reduce__(self):
        return crash, ()


class ExitAtUnpickle:
    def __reduce__(self):
        return exit_1, ()


class ErrorAtPickle:
    def __reduce__(self):
        raise pickle.PicklingError("Error in pickle")


class ErrorAtUnpickle:
    def __reduce__(self):
        return raise_error, (pickle.UnpicklingError,)


class CrashAtPickle:
    def __reduce__(self):
        crash()


def touch(directory, name):
    with open(os.path.join(directory, str(name)), "w"):
        pass


# --------------------------------------------------------------- fixtures
@pytest.fixture(params=sorted(EXECUTORS))
def kind(request):
    return request.param


@pytest.fixture
def make(kind):
    """Factory of executors of the test's kind; all shut down at teardown."""
    made = []

    def factory(*args, **kwargs):
        executor = EXECUTORS[kind](*args, **kwargs)
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def executor(make):
    return make(max_workers=2)


@pytest.fixture
def process_executor():
    executor = shoal.ProcessPoolExecutor(max_workers=2)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that can import the tests' helpers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, *sys.path]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ------------------------------------------------------------ drop-in
def test_they_are_the_standard_executors(kind):
    standard = {"process": cf.ProcessPoolExecutor, "thread": cf.ThreadPoolExecutor}[kind]
    assert issubclass(EXECUTORS[kind], standard)
    assert issubclass(EXECUTORS[kind], cf.Executor)


def test_submit(executor):
    future = executor.submit(pow, 2, 8)
    assert future.result() == 256
    assert isinstance(future, cf.Future)


def test_submit_keyword(executor):
    assert executor.submit(mul, 2, y=8).result() == 16
    assert executor.submit(capture, 1, self=2, fn=3).result() == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=capture, arg=1)
    with pytest.raises(TypeError):
        executor.submit(arg=1)


def test_map(executor):
    assert list(executor.map(pow, range(10), range(10))) == list(map(pow, range(10), range(10)))
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == list(
        map(pow, range(10), range(10))
    )


def test_map_reads_its_input_at_once_as_the_standard_map(executor):
    read = []

    def items():
        for i in range(50):
            read.append(i)
            yield i

    results = executor.map(abs, items(), chunksize=4)
    assert read == list(range(50)), "read at the call"
    assert list(results) == list(range(50))


def test_map_with_buffersize_reads_as_results_are_consumed(executor):
    read = []

    def items():
        for i in itertools.count():
            read.append(i)
            yield i

    squares = executor.map(h.square, items(), buffersize=16)  # endless
    assert [next(squares) for _ in range(100)] == [i * i for i in range(100)]
    assert len(read) < 100 + 64, "bounded read-ahead"
    squares.close()
    # Shutdown runs what was read, and reads no more: an endless input
    # never holds it up.
    executor.map(h.square, itertools.count(), buffersize=8)
    started = time.monotonic()
    executor.shutdown(wait=True)
    assert time.monotonic() - started < 20


def test_an_endless_lazy_map_does_not_hold_up_the_interpreter_s_exit():
    done = run_python(
        """
        import itertools, shoal
        if __name__ == "__main__":
            ex = shoal.ProcessPoolExecutor(2)
            squares = ex.map(abs, itertools.count(), buffersize=8)
            print(next(squares), next(squares), flush=True)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]


def test_map_chunksize(process_executor):
    ref = list(map(pow, range(40), range(40)))
    for chunksize in (6, 50, 40, None):
        assert list(process_executor.map(pow, range(40), range(40), chunksize=chunksize)) == ref
    with pytest.raises(ValueError):
        list(process_executor.map(pow, range(40), range(40), chunksize=-1))


def test_map_exception(executor):
    i = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert i.__next__() == (0, 1)
    assert i.__next__() == (0, 1)
    with pytest.raises(ZeroDivisionError):
        i.__next__()
    # As the standard map: the first error ends the iteration.
    with pytest.raises(StopIteration):
        i.__next__()


def test_map_timeout(executor):
    results = []
    with pytest.raises(cf.TimeoutError):
        for i in executor.map(time.sleep, [0, 0, 2], timeout=0.5):
            results.append(i)
    assert results == [None, None]


def test_map_timeout_counts_from_the_call(make):
    """Each result comes within 0.4 s of the one before, but not all within
    the 0.6 s the call was given."""
    executor = make(max_workers=1)
    executor.submit(abs, 1).result()  # started
    results = executor.map(h.sleep_and_return, range(3), [0.4] * 3, timeout=0.6)
    assert next(results) == 0
    with pytest.raises(TimeoutError):
        next(results)


def test_map_submits_without_iteration(executor, tmp_path):
    executor.map(touch, [str(tmp_path)] * 10, range(10))
    executor.shutdown(wait=True)
    assert sorted(os.listdir(tmp_path)) == sorted(map(str, range(10)))


def test_closing_a_map_cancels_what_no_worker_holds(make, tmp_path):
    """test_executor_map_current_future_cancel: closing the iterator (here
    after a timeout) cancels the tasks not yet started."""
    executor = make(max_workers=1)
    busy, out = tmp_path / "busy", tmp_path / "out"
    busy.mkdir()
    out.mkdir()
    first = executor.submit(h.announce_and_sleep, str(busy), 1.0)
    assert h.wait_until(lambda: any(busy.iterdir()), 20)
    with contextlib.closing(
        executor.map(touch, [str(out)] * 2, ["second", "third"], timeout=0)
    ) as gen:
        with pytest.raises(TimeoutError):
            next(gen)
    first.result(timeout=20)
    executor.shutdown(wait=True)
    assert list(out.iterdir()) == []


def test_shutdown_race_issue12456(executor):
    executor.map(str, [2] * 3)
    executor.shutdown()


def test_no_stale_references(executor):
    my_object = MyObject()
    collected = threading.Event()
    _ref = weakref.ref(my_object, lambda obj: collected.set())
    executor.submit(my_object.my_method)  # the future is dropped
    del my_object
    for _ in range(100):
        gc.collect()
        if collected.wait(0.1):
            break
    assert collected.is_set(), "the executor kept the object alive"


def test_max_workers_negative(kind):
    for number in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            EXECUTORS[kind](max_workers=number)


def test_free_reference(executor):
    for obj in executor.map(make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        gc.collect()
        assert wr() is None


def test_default_workers():
    assert shoal.ProcessPoolExecutor()._max_workers == shoal.cpu_count()
    assert shoal.ThreadPoolExecutor()._max_workers == min(32, shoal.cpu_count() + 4)


def test_nothing_starts_before_the_first_task(kind):
    executor = EXECUTORS[kind](2)
    assert executor.worker_pids() == []
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(abs, 1)


# ---------------------------------------------------- as_completed, wait
def finished(result=None, exception=None) -> cf.Future:
    future = cf.Future()
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
    return future


def cancelled_and_notified() -> cf.Future:
    future = cf.Future()
    future.cancel()
    future.set_running_or_notify_cancel()
    return future


def test_as_completed_no_timeout(executor):
    done = [cancelled_and_notified(), finished(exception=OSError()), finished(42)]
    future1 = executor.submit(mul, 2, 21)
    future2 = executor.submit(mul, 7, 6)
    assert set(cf.as_completed([*done, future1, future2])) == {*done, future1, future2}


def test_as_completed_zero_timeout(executor):
    done = [cancelled_and_notified(), finished(exception=OSError()), finished(42)]
    future1 = executor.submit(time.sleep, 1)
    completed = set()
    with pytest.raises(cf.TimeoutError):
        for future in cf.as_completed([*done, future1], timeout=0):
            completed.add(future)
    assert completed == set(done)


def test_as_completed_duplicate_futures(executor):
    future1 = executor.submit(time.sleep, 0.5)
    assert len(list(cf.as_completed([future1] * 3))) == 1


def test_wait_first_completed(executor):
    cancelled = cf.Future()
    cancelled.cancel()
    future1 = executor.submit(mul, 21, 2)
    future2 = executor.submit(time.sleep, 1.5)
    done, not_done = cf.wait([cancelled, future1, future2], return_when=cf.FIRST_COMPLETED)
    assert done == {future1}
    assert not_done == {cancelled, future2}


def test_wait_first_exception(make):
    executor = make(max_workers=3)
    future1 = executor.submit(mul, 2, 21)
    future2 = executor.submit(sleep_and_raise, 1)
    future3 = executor.submit(time.sleep, 3)
    done, pending = cf.wait([future1, future2, future3], return_when=cf.FIRST_EXCEPTION)
    assert done == {future1, future2}
    assert pending == {future3}


def test_wait_all_completed(executor):
    future1 = executor.submit(divmod, 2, 0)
    future2 = executor.submit(mul, 2, 21)
    done, pending = cf.wait([future1, future2], return_when=cf.ALL_COMPLETED)
    assert done == {future1, future2} and pending == set()
    assert isinstance(future1.exception(), ZeroDivisionError)


def test_wait_timeout(executor):
    future1 = executor.submit(mul, 6, 7)
    future2 = executor.submit(time.sleep, 3)
    done, pending = cf.wait([future1, future2], timeout=1.0, return_when=cf.ALL_COMPLETED)
    assert done == {future1} and pending == {future2}


def test_pending_calls_race(make):
    """Issue #14406: many threads finishing at once while wait() waits."""
    executor = make(max_workers=4)
    event = threading.Event() if executor._kind == "thread" else None
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        if event is not None:
            fs = {executor.submit(event.wait) for _ in range(100)}
            event.set()
        else:
            fs = {executor.submit(abs, -i) for i in range(100)}
        cf.wait(fs, return_when=cf.ALL_COMPLETED)
    finally:
        sys.setswitchinterval(old)
    assert all(f.done() for f in fs)


# ----------------------------------------------------------- futures
def test_cancel_succeeds_only_for_a_task_no_worker_holds(make):
    executor = make(max_workers=1)
    running = executor.submit(time.sleep, 1)
    queued = [executor.submit(time.sleep, 1) for _ in range(3)]
    assert h.wait_until(running.running, 10)
    assert not running.cancel()
    calls = []
    queued[-1].add_done_callback(lambda f: calls.append(f.cancelled()))
    assert queued[-1].cancel()
    assert queued[-1].cancelled() and queued[-1].done()
    assert calls == [True]
    assert queued[-1].cancel()  # again: still cancelled
    with pytest.raises(cf.CancelledError):
        queued[-1].result()
    with pytest.raises(cf.CancelledError):
        queued[-1].exception()
    assert running.result() is None
    assert not running.cancel() and not running.running()  # finished


def test_callbacks_and_exception_as_the_standard_future(executor, caplog):
    seen = []
    future = executor.submit(divmod, 1, 0)
    future.add_done_callback(lambda f: seen.append(type(f.exception()).__name__))
    assert isinstance(future.exception(timeout=20), ZeroDivisionError)
    assert h.wait_until(lambda: seen == ["ZeroDivisionError"], 10)
    future.add_done_callback(lambda f: seen.append("late"))  # already done: runs now
    assert seen == ["ZeroDivisionError", "late"]

    def raising(_):
        raise Exception("doh!")

    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        done = executor.submit(abs, -1)
        done.add_done_callback(raising)
        done.add_done_callback(lambda f: seen.append(f.result()))
        assert done.result() == 1
        assert h.wait_until(lambda: seen[-1] == 1, 10)
    assert "doh!" in caplog.text
    with pytest.raises(cf.TimeoutError):
        executor.submit(time.sleep, 1).result(timeout=0)


def test_a_future_state_in_its_repr(executor):
    future = executor.submit(abs, -5)
    assert future.result() == 5
    assert "state=finished returned int" in repr(future)


# ----------------------------------------------------------- shutdown
def test_run_after_shutdown(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError):
        executor.map(abs, [1])


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_interpreter_shutdown_finishes_submitted_work(kind):
    done = run_python(
        f"""
        import shoal
        from helpers_mod import sleep_and_print
        if __name__ == "__main__":
            t = shoal.{EXECUTORS[kind].__name__}(2)
            t.submit(sleep_and_print, 1.0, "apple")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip().splitlines()[-1].endswith("apple")


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_submit_after_interpreter_shutdown(kind):
    done = run_python(
        f"""
        import atexit
        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise
        import shoal
        if __name__ == "__main__":
            t = shoal.{EXECUTORS[kind].__name__}(2)
            t.submit(id, 42).result()
        """
    )
    assert "RuntimeError: cannot schedule new futures after interpreter shutdown" in done.stderr
    assert done.stdout.strip() == "runtime-error"


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_shutdown_without_wait_at_exit_finishes_the_work(kind):
    """gh-83386 (which hangs the standard ProcessPoolExecutor)."""
    done = run_python(
        f"""
        import shoal
        from helpers_mod import sleep_and_print
        if __name__ == "__main__":
            t = shoal.{EXECUTORS[kind].__name__}(max_workers=3)
            t.submit(sleep_and_print, 1.0, "apple")
            t.shutdown(wait=False)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip().endswith("apple")


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_a_forked_child_does_not_wait_for_its_parent_s_workers(kind):
    done = run_python(
        f"""
        import os, shoal
        if __name__ == "__main__":
            ex = shoal.{EXECUTORS[kind].__name__}(2)
            assert ex.submit(abs, -1).result() == 1
            pid = os.fork()
            if pid == 0:
                print("child done", flush=True)  # then exits normally, atexit and all
            else:
                _, status = os.waitpid(pid, 0)
                print("child exit", os.waitstatus_to_exitcode(status))
                ex.shutdown()
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "child done" in done.stdout and "child exit 0" in done.stdout


def test_hang_issue12364(executor):
    fs = [executor.submit(time.sleep, 0.05) for _ in range(20)]
    executor.shutdown()
    for f in fs:
        f.result()


def prime(executor) -> None:
    """As CPython's tests do: workers ready before the test's own tasks."""
    for f in [executor.submit(time.sleep, 0.05) for _ in range(executor._max_workers)]:
        f.result()


def test_cancel_futures(make):
    executor = make(max_workers=2)
    prime(executor)
    fs = [executor.submit(time.sleep, 0.1) for _ in range(50)]
    assert h.wait_until(fs[0].running, 10)  # handed to a worker: it runs on
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    assert len(cancelled) > 20
    others = [f for f in fs if not f.cancelled()]
    for f in others:
        assert f.done()
        assert f.exception() is None
    assert len(others) > 0


def test_cancel_futures_without_wait_cancels_at_once(make):
    executor = make(max_workers=1)
    prime(executor)
    fs = [executor.submit(time.sleep, 0.2) for _ in range(10)]
    assert h.wait_until(fs[0].running, 10)
    executor.shutdown(wait=False, cancel_futures=True)
    assert sum(f.cancelled() for f in fs) >= 8  # the rest a worker held
    assert fs[0].result(timeout=20) is None


def test_hang_gh94440(make):
    """shutdown(wait=True) does not hang after a future was submitted and
    at once cancelled."""
    executor = make(max_workers=1)
    executor.submit(int).result()
    executor.submit(int).cancel()
    started = time.monotonic()
    executor.shutdown(wait=True)
    assert time.monotonic() - started < 10


def test_context_manager_shutdown(kind):
    with EXECUTORS[kind](max_workers=2) as e:
        executor = e
        assert list(e.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    pids = executor._workers.worker_pids() if kind == "process" else []
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)
    assert executor._workers.join(0.0)  # stopped
    assert not h.wait_pids_gone(pids, 10)


def test_del_shutdown(kind):
    """A dropped executor finishes what it was given, then stops."""
    executor = EXECUTORS[kind](max_workers=2)
    res = executor.map(abs, range(-5, 5))
    workers = executor._workers
    del executor
    gc.collect()
    assert list(res) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert workers.join(20)


def test_shutdown_no_wait(kind):
    executor = EXECUTORS[kind](max_workers=2)
    res = executor.map(abs, range(-5, 5))
    workers = executor._workers
    executor.shutdown(wait=False)
    assert workers.join(20)
    assert list(res) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]


def test_shutdown_from_a_callback_does_not_deadlock(executor):
    stopped = threading.Event()
    future = executor.submit(abs, -1)
    future.add_done_callback(lambda _: (executor.shutdown(wait=True), stopped.set()))
    assert stopped.wait(20)


def test_thread_names():
    executor = shoal.ThreadPoolExecutor(max_workers=3, thread_name_prefix="SpecialPool")
    executor.map(abs, range(-5, 5))
    executor.shutdown()
    threads = executor._threads
    assert len(threads) == 3
    for t in threads:
        assert t.name.startswith("SpecialPool_") and t.name[-1] in "012", t.name
    executor = shoal.ThreadPoolExecutor(max_workers=2)
    names = {executor.submit(lambda: threading.current_thread().name).result() for _ in range(4)}
    executor.shutdown()
    assert all(name.startswith("ThreadPoolExecutor-") for name in names), names


# ----------------------------------------------------------- initializer
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_initializer(kind):
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = "uninitialized"
    with EXECUTORS[kind](2, initializer=init, initargs=("initialized",)) as executor:
        for f in [executor.submit(get_init_status) for _ in range(2)]:
            assert f.result() == "initialized"
    INITIALIZER_STATUS = "uninitialized"


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_failing_initializer_breaks_the_executor(kind, caplog):
    broken = {"process": BrokenProcessPool, "thread": BrokenThreadPool}[kind]
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        executor = EXECUTORS[kind](2, initializer=init_fail)
        try:
            future = executor.submit(get_init_status)
            with pytest.raises(broken) as info:
                future.result(timeout=20)
            assert isinstance(info.value, shoal.WorkerInitError)
            assert h.wait_until(lambda: executor._broken, 10)
            with pytest.raises(BrokenExecutor):
                executor.submit(get_init_status)
        finally:
            executor.shutdown(wait=True)
    assert "ValueError: error in initializer" in caplog.text


def test_initializer_must_be_callable(kind):
    with pytest.raises(TypeError, match="initializer must be a callable"):
        EXECUTORS[kind](initializer=42)


# -------------------------------------------------------- process pools
def test_traceback(process_executor):
    future = process_executor.submit(raise_runtime_error_123)
    with pytest.raises(Exception) as info:
        future.result()
    exc = info.value
    assert type(exc) is RuntimeError
    assert exc.args == (123,)
    assert "raise RuntimeError(123)  # some comment" in str(exc.__cause__)


def test_killed_child_fails_only_its_task(process_executor):
    """test_killed_child: the standard executor breaks for good; shoal's
    fails the task with an error that is also a BrokenProcessPool, and goes
    on with a new worker."""
    process_executor.submit(abs, 1).result()
    future = process_executor.submit(time.sleep, 10)
    assert h.wait_until(future.running, 10)
    victim = next(iter(process_executor._processes.values()))
    others = [process_executor.submit(mul, i, 2) for i in range(6)]
    for p in process_executor._processes.values():
        p.terminate()
    with pytest.raises(BrokenProcessPool) as info:
        future.result(timeout=20)
    error = info.value
    assert isinstance(error, shoal.WorkerLostError) and isinstance(
        error, errors.ExecutorWorkerLostError
    )
    assert error.signal == signal.SIGTERM
    victim.join(10)
    assert not victim.is_alive()
    assert process_executor.submit(pow, 2, 8).result(timeout=20) == 256
    for i, f in enumerate(others):
        with contextlib.suppress(BrokenProcessPool):
            assert f.result(timeout=20) == i * 2


def test_max_tasks_per_child():
    executor = shoal.ProcessPoolExecutor(1, max_tasks_per_child=3)
    try:
        original = executor.submit(os.getpid).result()
        assert executor.submit(os.getpid).result() == original
        assert len(executor._processes) == 1
        assert executor.submit(os.getpid).result() == original
        assert executor.submit(os.getpid).result() != original
        assert len(executor._processes) == 1
    finally:
        executor.shutdown()
    assert executor._mp_context.get_start_method() == "spawn"
    with pytest.raises(ValueError, match=">= 1"):
        shoal.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError):
        shoal.ProcessPoolExecutor(1, max_tasks_per_child=1.5)


def test_max_tasks_early_shutdown():
    executor = shoal.ProcessPoolExecutor(3, max_tasks_per_child=1)
    futures = [executor.submit(mul, i, i) for i in range(6)]
    executor.shutdown()
    assert [f.result() for f in futures] == [i * i for i in range(6)]


def test_mp_context_spawn_and_forkserver_mean_fresh_workers_and_fork_is_refused():
    for method in ("spawn", "forkserver"):
        with shoal.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as ex:
            assert ex.submit(mul, 3, 4).result() == 12
    with pytest.raises(ValueError, match="fresh interpreter.*'fork'"):
        shoal.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with pytest.raises(TypeError, match="multiprocessing context"):
        shoal.ProcessPoolExecutor(1, mp_context="spawn")


def test_terminate_workers_stops_the_pool(process_executor):
    assert process_executor.submit(time.sleep, 0).result() is None
    pids = process_executor.worker_pids()
    hanging = process_executor.submit(time.sleep, 30)
    process_executor.terminate_workers()
    with pytest.raises(RuntimeError):
        process_executor.submit(time.sleep, 0)
    assert hanging.cancelled()
    assert not h.wait_pids_gone(pids, 10)


# A task that can't be pickled, or kills its worker, fails that task only;
# nothing deadlocks (CPython's test_deadlock.py, one executor per case).
DEADLOCK_CASES = [
    # (function, arguments, the standard executor's error, shoal's)
    (id, (ErrorAtPickle(),), pickle.PicklingError, pickle.PicklingError),
    (id, (ExitAtUnpickle(),), BrokenProcessPool, SystemExit),
    (id, (ErrorAtUnpickle(),), BrokenProcessPool, pickle.UnpicklingError),
    (id, (CrashAtUnpickle(),), BrokenProcessPool, BrokenProcessPool),
    (crash, (), BrokenProcessPool, BrokenProcessPool),
    (exit_1, (), SystemExit, SystemExit),
    (raise_error, (RuntimeError,), RuntimeError, RuntimeError),
    (return_instance, (CrashAtPickle,), BrokenProcessPool, BrokenProcessPool),
    (return_instance, (ErrorAtPickle,), pickle.PicklingError, shoal.SerializationError),
    (return_instance, (ErrorAtUnpickle,), BrokenProcessPool, shoal.SerializationError),
    (return_instance, (ExitAtUnpickle,), BrokenProcessPool, shoal.SerializationError),
]


@pytest.mark.isolated
@pytest.mark.timeout(120)
def test_crashes_and_bad_pickles_fail_their_task_and_nothing_hangs():
    with shoal.ProcessPoolExecutor(max_workers=2) as executor:
        for func, args, _standard, expected in DEADLOCK_CASES:
            future = executor.submit(func, *args)
            error = future.exception(timeout=30)
            assert isinstance(error, expected), (func, args, error)
            assert executor.submit(mul, 6, 7).result(timeout=30) == 42  # still usable


@pytest.mark.isolated
def test_shutdown_deadlock():
    """A worker that dies after shutdown() was called."""
    with shoal.ProcessPoolExecutor(max_workers=2) as executor:
        f = executor.submit(crash, delay=0.1)
        executor.shutdown(wait=True)
        with pytest.raises(BrokenProcessPool):
            f.result()


@pytest.mark.isolated
def test_shutdown_deadlock_pickle():
    with shoal.ProcessPoolExecutor(max_workers=2) as executor:
        executor.submit(id, 42).result()
        f = executor.submit(id, ErrorAtPickle())
        executor.shutdown(wait=False)
        with pytest.raises(pickle.PicklingError):
            f.result()


@pytest.mark.isolated
def test_crash_big_data():
    data = "a" * (4 * 1024 * 1024)
    with shoal.ProcessPoolExecutor(max_workers=2) as executor:
        with pytest.raises(BrokenProcessPool):
            list(executor.map(crash_with_data, [data] * 10))


def test_executor_errors_are_defined_once_and_pickle_as_themselves():
    lost = errors.ExecutorWorkerLostError("gone", pid=1, exitcode=None, signal=9)
    again = pickle.loads(pickle.dumps(lost))
    assert type(again) is errors.ExecutorWorkerLostError
    assert (again.pid, again.signal, str(again)) == (1, 9, "gone")
    assert errors.ExecutorWorkerLostError is shoal.errors.ExecutorWorkerLostError
    assert issubclass(errors.ExecutorInitError, BrokenProcessPool)
    assert issubclass(errors.ExecutorInitError, BrokenThreadPool)
    assert issubclass(errors.ExecutorStartError, shoal.WorkerStartError)
    # A pool's own error stays what multiprocessing users know.
    assert not issubclass(shoal.WorkerLostError, RuntimeError)


def test_a_worker_does_not_import_concurrent_futures():
    done = run_python(
        """
        import sys
        import shoal.worker.process, shoal.errors
        assert "concurrent.futures" not in sys.modules, "a worker would pay for it"
        import shoal.errors as e
        assert e.ExecutorWorkerLostError.__module__ == "shoal.errors"
        """
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------- asyncio
async def gather_squares(executor, n):
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*(loop.run_in_executor(executor, h.square, i) for i in range(n)))


def test_run_in_executor_with_a_real_event_loop(executor):
    assert asyncio.run(gather_squares(executor, 50)) == [i * i for i in range(50)]

    async def cancelled_wait():
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(executor, time.sleep, 5)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(task, 0.2)
        return await loop.run_in_executor(executor, abs, -3)

    assert asyncio.run(cancelled_wait()) == 3


def test_a_thread_executor_is_asyncio_s_default_executor():
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(shoal.ThreadPoolExecutor(2))
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        await asyncio.to_thread(time.sleep, 0)
        return name

    assert asyncio.run(main()).startswith("ThreadPoolExecutor-")


# ---------------------------------------------------- shoal's additions
def test_per_task_timeout_and_retries(make, tmp_path):
    executor = make(max_workers=1, timeout=0.5)
    with pytest.raises(shoal.TaskTimeoutError):
        executor.submit(time.sleep, 5).result(timeout=20)
    assert executor.submit(abs, -4).result(timeout=20) == 4
    if executor._kind == "process":
        retrying = make(max_workers=1, retries=1)
        marker = str(tmp_path / "died-once")
        assert retrying.submit(h.exit_once_then_square, marker, 7).result(timeout=30) == 49


def test_progress_counts_submitted_and_mapped_tasks(make):
    seen = []
    executor = make(max_workers=2, on_progress=lambda done, total: seen.append((done, total)))
    for f in [executor.submit(abs, -i) for i in range(5)]:
        f.result()
    assert h.wait_until(lambda: seen and seen[-1] == (5, 5), 10), seen
    seen.clear()
    assert list(executor.map(abs, range(-8, 0), chunksize=2)) == list(range(8, 0, -1))
    assert h.wait_until(lambda: seen and seen[-1] == (8, 8), 10), seen


def test_trace_records_the_executor_s_tasks(make):
    executor = make(max_workers=2, trace=True)
    executor.submit(mul, 2, 3).result()
    list(executor.map(abs, range(-10, 0), chunksize=5))
    trace = executor.trace()
    assert [c.label for c in trace.calls] == ["submit(test_executor.mul)", "map(builtins.abs)"]
    assert all(t.outcome == "ok" for t in trace.tasks)
    assert len(trace.tasks) == 3


def test_large_arrays_travel_through_shared_memory(process_executor):
    np = pytest.importorskip("numpy")
    x = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    assert process_executor.submit(np.sum, x).result() == x.sum()
    doubled = process_executor.submit(np.multiply, x, 2.0).result()
    assert (doubled == 2 * x).all()
    assert list(process_executor.map(np.sum, [x, x + 1])) == [x.sum(), (x + 1).sum()]


def test_cancel_stops_running_tasks(process_executor):
    future = process_executor.submit(time.sleep, 30)
    assert h.wait_until(future.running, 10)
    started = time.monotonic()
    process_executor.cancel(future)
    with pytest.raises(cf.CancelledError):
        future.result(timeout=20)
    assert time.monotonic() - started < 10
    assert process_executor.submit(abs, -1).result(timeout=20) == 1
