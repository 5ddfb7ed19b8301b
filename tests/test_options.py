"""Per-task options the engine enforces: ``timeout=``, ``retries=``,
``retry_on=``, and the pool's ``max_memory=``."""

from __future__ import annotations

import functools
import time

import helpers_mod as h
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


def test_pool_timeout_kills_only_the_slow_task():
    with shoal.Pool(2, timeout=1.0) as pool:
        started = time.monotonic()
        fast = pool.apply_async(h.sleep_and_return, (1, 0.05))
        slow = pool.apply_async(h.sleep_and_return, (2, 30))
        with pytest.raises(shoal.TaskTimeoutError) as info:
            slow.get(timeout=20)
        assert time.monotonic() - started < 10
        assert isinstance(info.value, TimeoutError)
        assert "timeout of 1 s" in str(info.value)
        assert fast.get(timeout=10) == 1
        # The killed worker was replaced; the pool keeps working.
        assert pool.map(h.square, range(5)) == [0, 1, 4, 9, 16]
        assert len(pool.worker_pids()) == 2


def test_per_call_timeout_overrides_the_pool():
    with shoal.Pool(2) as pool:
        with pytest.raises(shoal.TaskTimeoutError):
            pool.map(functools.partial(h.sleep_and_return, seconds=30), [1], timeout=0.5)
        assert pool.apply(h.sleep_and_return, (3, 0.2)) == 3  # no timeout by default


def test_retries_rerun_a_task_whose_worker_died(tmp_path):
    marker = str(tmp_path / "crashed")
    with shoal.Pool(1, retries=1) as pool:
        out = pool.map(functools.partial(h.exit_once_then_square, marker), [1, 2, 3], chunksize=1)
    assert out == [1, 4, 9]


def test_without_retries_the_death_is_reported(tmp_path):
    marker = str(tmp_path / "crashed")
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.WorkerLostError) as info:
            pool.apply(h.exit_once_then_square, (marker, 2))
        assert info.value.exitcode == 7
        assert pool.apply(h.exit_once_then_square, (marker, 2), retries=0) == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"timeout": -1}, {"timeout": "1"}, {"retries": -1}, {"retries": 1.5}],
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError, match="timeout|retries"):
        shoal.Pool(1, **kwargs)
    with shoal.Pool(1) as pool:
        with pytest.raises(ValueError, match="timeout|retries"):
            pool.map(h.square, [1], **kwargs)


# ---------------------------------------------------------------------------
# retry_on: exceptions raised by user code are retried only when named
# ---------------------------------------------------------------------------


def attempts(path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()]


def test_retry_on_reruns_a_task_that_raised_a_named_exception(tmp_path):
    log = tmp_path / "attempts"
    with shoal.Pool(1, retries=3, retry_on=h.Flaky) as pool:
        assert pool.apply(h.fail_until, (str(log), 3)) == 3
    assert len(attempts(log)) == 3
    assert len(set(attempts(log))) == 1, "a raised exception needs no new worker"


def test_retry_on_gives_up_after_the_retries(tmp_path):
    log = tmp_path / "attempts"
    with shoal.Pool(1) as pool:
        with pytest.raises(h.Flaky, match="attempt 3"):
            pool.map(
                functools.partial(h.fail_until, str(log)), [10], retries=2, retry_on=(h.Flaky,)
            )
    assert len(attempts(log)) == 3


def test_exceptions_not_named_are_not_retried(tmp_path):
    log = tmp_path / "attempts"
    with shoal.Pool(1, retries=3, retry_on=(KeyError,)) as pool:
        with pytest.raises(h.Flaky):
            pool.apply(h.fail_until, (str(log), 2))
        assert len(attempts(log)) == 1
        # Nor without retry_on, whatever retries says (only deaths are).
        with pytest.raises(h.Flaky):
            pool.apply(h.fail_until, (str(log), 5), retry_on=())
        assert len(attempts(log)) == 2


def test_retry_on_per_call_and_for_subclasses(tmp_path):
    log = tmp_path / "attempts"
    with shoal.Pool(2) as pool:
        got = pool.apply_async(h.fail_until, (str(log), 2), retries=1, retry_on=Exception).get(
            timeout=20
        )
        assert got == 2
        it = pool.imap(
            functools.partial(h.fail_until, str(tmp_path / "imap")),
            [2],
            retries=1,
            retry_on=Exception,
        )
        assert list(it) == [2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"retry_on": h.Flaky}, ValueError, "needs retries=N"),
        ({"retries": 1, "retry_on": "Flaky"}, TypeError, "exception class"),
        ({"retries": 1, "retry_on": (h.Flaky, int)}, TypeError, "exception class"),
    ],
)
def test_bad_retry_on_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        shoal.Pool(1, **kwargs)
    with shoal.Pool(1) as pool:
        with pytest.raises(error, match=match):
            pool.map(h.square, [1], **kwargs)


# ---------------------------------------------------------------------------
# max_memory: a worker over it is killed mid-task or replaced when idle
# ---------------------------------------------------------------------------


@pytest.mark.isolated
def test_a_task_over_max_memory_fails_and_says_why():
    with shoal.Pool(1, max_memory="150MB") as pool:
        first = pool.worker_pids()[0]
        started = time.monotonic()
        with pytest.raises(shoal.WorkerLostError) as info:
            pool.apply(h.hold_memory, (400, 30))
        assert time.monotonic() - started < 10, "killed at the first check, not after 30 s"
        err = info.value
        assert err.reason == "memory"
        assert err.pid == first
        assert "max_memory=150 MB" in str(err)
        assert "apply(hold_memory)" in str(err)
        # Replaced; the pool goes on.
        assert pool.map(h.square, range(4)) == [0, 1, 4, 9]
        assert pool.worker_pids() != [first]


@pytest.mark.isolated
def test_max_memory_kills_count_against_retries():
    with shoal.Pool(1, max_memory=150 * 10**6, retries=1) as pool:
        pids = set(pool.worker_pids())
        with pytest.raises(shoal.WorkerLostError, match="max_memory"):
            pool.apply(h.hold_memory, (400, 30))
        pids.update(pool.worker_pids())
        assert len(pids) >= 2


@pytest.mark.isolated
def test_an_idle_worker_over_max_memory_is_replaced_and_nothing_fails():
    with shoal.Pool(1, max_memory="150MB") as pool:
        first = pool.apply(h.leak_memory_later, (300, 0.2))
        assert h.wait_until(lambda: pool.worker_pids() not in ([], [first]), 15)
        assert pool.map(h.square, range(10), chunksize=1) == [i * i for i in range(10)]


@pytest.mark.parametrize(
    ("value", "match"),
    [(0, "positive"), (-5, "positive"), ("lots", "size like"), ("2 parsecs", "unknown unit")],
)
def test_bad_max_memory_is_refused(value, match):
    with pytest.raises(ValueError, match=match):
        shoal.Pool(1, max_memory=value)
