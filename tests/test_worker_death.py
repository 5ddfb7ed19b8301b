"""Fault-tolerance tests: dying workers, dying parents, Ctrl-C and leaks.

Every test here must fail (not hang) when the engine misbehaves, hence the
module-wide timeout and the explicit timeouts on every blocking call.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
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

pytestmark = [pytest.mark.timeout(60), pytest.mark.isolated]


def announced_pids(directory):
    return [int(name) for name in os.listdir(directory) if name.isdigit()]


def squares(n):
    return [i * i for i in range(n)]


def wait_for_full_pool(pool, n, excluded=(), timeout=5):
    def ok():
        pids = pool.worker_pids()
        return (
            len(pids) == n and not set(pids) & set(excluded) and all(h.pid_alive(p) for p in pids)
        )

    return h.wait_until(ok, timeout)


# ---------------------------------------------------------------------------
# A worker dies while running a task
# ---------------------------------------------------------------------------


def test_sigkill_worker_during_map(make_pool, tmp_path):
    p = make_pool(2)
    task = functools.partial(h.announce_and_sleep, str(tmp_path))
    killed = {}

    def killer():
        # Wait until both workers are inside a task, then kill one of them.
        if h.wait_until(lambda: len(announced_pids(tmp_path)) >= 2, 15):
            pid = announced_pids(tmp_path)[0]
            killed["pid"] = pid
            killed["at"] = time.monotonic()
            os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(shoal.WorkerLostError) as info:
        p.map(task, [30, 30], chunksize=1)
    raised_at = time.monotonic()
    thread.join(5)
    assert "pid" in killed, "workers never started the tasks"
    assert raised_at - killed["at"] < 5, "WorkerLostError was not raised promptly"

    err = info.value
    assert isinstance(err, shoal.ShoalError)
    assert err.pid == killed["pid"]
    assert err.signal == signal.SIGKILL
    assert str(killed["pid"]) in str(err)

    # The pool is still usable and is refilled with a new worker.
    assert p.map_async(h.square, range(10)).get(timeout=20) == squares(10)
    assert wait_for_full_pool(p, 2, excluded=[killed["pid"]])


def test_worker_exit_in_submit_sets_exitcode(make_pool):
    p = make_pool(2)
    pids = p.worker_pids()
    fut = p.submit(h.exit_process, 3)
    exc = fut.exception(timeout=10)
    assert isinstance(exc, shoal.WorkerLostError), repr(exc)
    assert exc.exitcode == 3
    assert not exc.signal
    assert exc.pid in pids
    with pytest.raises(shoal.WorkerLostError):
        fut.result(timeout=0)
    assert p.submit(h.square, 3).result(timeout=10) == 9
    assert wait_for_full_pool(p, 2, excluded=[exc.pid])


DEATH_CALLS = {
    "apply": lambda p, f, a: p.apply(f, (a,)),
    "apply_async": lambda p, f, a: p.apply_async(f, (a,)).get(timeout=10),
    "map": lambda p, f, a: p.map(f, [a]),
    "map_async": lambda p, f, a: p.map_async(f, [a]).get(timeout=10),
    "starmap": lambda p, f, a: p.starmap(f, [(a,)]),
    "imap": lambda p, f, a: list(p.imap(f, [a])),
    "imap_unordered": lambda p, f, a: list(p.imap_unordered(f, [a])),
    "submit": lambda p, f, a: p.submit(f, a).result(timeout=10),
}


@pytest.mark.parametrize("call", sorted(DEATH_CALLS))
def test_worker_exit_raises_worker_lost_everywhere(make_pool, call):
    p = make_pool(1)
    t0 = time.monotonic()
    with pytest.raises(shoal.WorkerLostError) as info:
        DEATH_CALLS[call](p, h.exit_process, 7)
    assert time.monotonic() - t0 < 5
    assert info.value.exitcode == 7
    assert p.apply(h.square, (5,)) == 25


def test_worker_killed_by_signal_in_task(make_pool):
    p = make_pool(1)
    pid = p.worker_pids()[0]
    res = p.apply_async(h.kill_self, (signal.SIGKILL,))
    with pytest.raises(shoal.WorkerLostError) as info:
        res.get(timeout=10)
    assert info.value.pid == pid
    assert info.value.signal == signal.SIGKILL
    assert res.ready()
    assert res.successful() is False
    assert p.apply(h.square, (2,)) == 4


def test_other_tasks_unaffected_by_worker_death(make_pool):
    p = make_pool(2)
    slow = p.apply_async(h.sleep_and_return, ("survivor", 1.0))
    time.sleep(0.2)
    dead = p.submit(h.exit_process, 5)
    assert isinstance(dead.exception(timeout=10), shoal.WorkerLostError)
    assert slow.get(timeout=10) == "survivor"
    assert p.map(h.square, range(20)) == squares(20)


def test_many_workers_die_in_one_map(make_pool):
    p = make_pool(2)
    with pytest.raises(shoal.WorkerLostError):
        p.map_async(h.exit_process, [3, 3, 3, 3], chunksize=1).get(timeout=15)
    assert p.map_async(h.square, range(10)).get(timeout=20) == squares(10)
    assert wait_for_full_pool(p, 2)
    # close()/join() still work after workers were lost.
    pids = p.worker_pids()
    p.close()
    t0 = time.monotonic()
    p.join()
    assert time.monotonic() - t0 < 10
    assert h.wait_pids_gone(pids, 3) == []


def test_idle_worker_killed_is_replaced(make_pool):
    p = make_pool(2)
    victim = p.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.3)
    assert p.map_async(h.square, range(20), chunksize=1).get(timeout=20) == squares(20)
    assert wait_for_full_pool(p, 2, excluded=[victim])


# ---------------------------------------------------------------------------
# Ctrl-C and death of the parent interpreter (child interpreters)
# ---------------------------------------------------------------------------

CTRL_C_SCRIPT = r"""
import json, sys, time
import shoal

def run(pool):
    print(json.dumps(pool.worker_pids()), flush=True)
    pool.map(time.sleep, [30] * 8, chunksize=1)

if sys.argv[1] == "with":
    with shoal.Pool(2) as pool:
        run(pool)
else:
    pool = shoal.Pool(2)
    run(pool)
"""

PARENT_SCRIPT = r"""
import json, sys, time
import shoal

pool = shoal.Pool(2)
print(json.dumps(pool.worker_pids()), flush=True)
if sys.argv[1] == "busy":
    pool.map_async(time.sleep, [60] * 8, chunksize=1)
time.sleep(60)
"""


def start_child(script, arg):
    return subprocess.Popen(
        [sys.executable, "-c", script, arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def read_worker_pids(proc):
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"child did not report worker pids; stderr:\n{err}")
    pids = json.loads(line)
    assert len(pids) == 2
    return pids


def cleanup_child(proc, pids):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    h.force_kill(pids)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=10)


@pytest.mark.parametrize("target", ["process", "process_group"])
@pytest.mark.parametrize("mode", ["with", "plain"])
def test_ctrl_c_interrupts_map_and_cleans_up(mode, target):
    proc = start_child(CTRL_C_SCRIPT, mode)
    pids = []
    try:
        pids = read_worker_pids(proc)
        time.sleep(1.0)  # let the long map get going
        sent_at = time.monotonic()
        if target == "process":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("child did not exit after SIGINT (map not interruptible)")
        elapsed = time.monotonic() - sent_at
        assert "KeyboardInterrupt" in err, err
        assert proc.returncode != 0
        assert elapsed < 5, f"took {elapsed:.1f}s to exit after SIGINT"
        survivors = h.wait_pids_gone(pids, 3)
        assert survivors == [], f"workers still alive after Ctrl-C: {survivors}"
    finally:
        cleanup_child(proc, pids)


@pytest.mark.parametrize("state", ["idle", "busy"])
def test_sigkill_parent_workers_exit(state):
    proc = start_child(PARENT_SCRIPT, state)
    pids = []
    try:
        pids = read_worker_pids(proc)
        assert all(h.pid_alive(p) for p in pids)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        survivors = h.wait_pids_gone(pids, 3)
        assert survivors == [], f"orphaned workers after parent SIGKILL: {survivors}"
    finally:
        cleanup_child(proc, pids)


# ---------------------------------------------------------------------------
# Resource leaks
# ---------------------------------------------------------------------------


def resource_snapshot():
    return {
        "fds": h.open_fd_count(),
        "threads": threading.active_count(),
        "os_threads": h.os_thread_count(),
        "children": len(h.child_pids()),
    }


def wait_for_no_growth(baseline, timeout=5):
    h.wait_until(lambda: all(resource_snapshot()[k] <= v for k, v in baseline.items()), timeout)
    return resource_snapshot()


def test_no_leaks_creating_and_closing_pools():
    # Warm-up: the first pool may lazily create process-wide resources.
    with shoal.Pool(2) as p:
        p.map(h.square, range(4))
    p.join()
    baseline = wait_for_no_growth(
        {"fds": 10**9, "threads": 10**9, "os_threads": 10**9, "children": 0}, 5
    )

    for i in range(40):
        mode = i % 3
        if mode == 0:
            p = shoal.Pool(2)
            assert p.map(h.square, range(10)) == squares(10)
            p.close()
            p.join()
        elif mode == 1:
            p = shoal.Pool(2)
            assert p.apply(h.square, (3,)) == 9
            p.terminate()
            p.join()
        else:
            with shoal.Pool(2) as p:
                assert p.submit(h.square, 4).result(timeout=10) == 16
    del p

    after = wait_for_no_growth(baseline, 5)
    assert after["fds"] <= baseline["fds"], (baseline, after)
    assert after["threads"] <= baseline["threads"], (baseline, after)
    assert after["os_threads"] <= baseline["os_threads"], (baseline, after)
    assert after["children"] <= baseline["children"], (baseline, after, h.child_pids())


def test_dropped_pool_workers_are_cleaned_up():
    pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(3):
            p = shoal.Pool(2)
            pids.extend(p.worker_pids())
            assert p.map(h.square, range(4)) == squares(4)
            del p
            gc.collect()
    survivors = h.wait_pids_gone(pids, 5)
    try:
        assert survivors == [], f"workers of garbage-collected pools alive: {survivors}"
    finally:
        h.force_kill(survivors)
