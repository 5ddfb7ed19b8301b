"""Per-task options the engine enforces: ``timeout=`` and ``retries=``."""

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
