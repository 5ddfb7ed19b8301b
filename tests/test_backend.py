"""backend= and backend="auto": the measured choice between threads and
processes, shoal.map, and shoal.last_choice()."""

from __future__ import annotations

import threading
import time

import helpers_mod as h
import pytest
import shoal
from shoal.parallel import auto as _backend

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------- the decision
def test_decide_threads_for_waits():
    backend, reason = _backend.decide(used=0.04, wanted=0.05, threads=8, cores=2)
    assert backend == "threads" and "waits" in reason and "0.04 cores" in reason


def test_decide_threads_when_calls_run_in_parallel():
    backend, reason = _backend.decide(used=1.9, wanted=1.95, threads=2, cores=2)
    assert backend == "threads" and "parallel" in reason
    # More threads than cores: judged against the cores.
    assert _backend.decide(used=1.8, wanted=7.9, threads=8, cores=2)[0] == "threads"
    # One thread cannot do better than one core.
    assert _backend.decide(used=0.95, wanted=0.97, threads=1, cores=4)[0] == "threads"


def test_decide_processes_when_the_gil_serialises():
    backend, reason = _backend.decide(used=0.98, wanted=1.1, threads=2, cores=2)
    assert backend == "processes" and "GIL" in reason
    assert _backend.decide(used=1.0, wanted=2.5, threads=8, cores=8)[0] == "processes"
    # Other programs hold the cores: the GIL still keeps one thread ready,
    # so a slow GIL-bound function does not look like one that waits.
    assert _backend.decide(used=0.3, wanted=1.0, threads=2, cores=2)[0] == "processes"


def test_decide_threads_on_one_core():
    backend, reason = _backend.decide(used=1.0, wanted=1.0, threads=2, cores=1)
    assert backend == "threads" and "one core" in reason


def test_a_threads_run_time_counts_work_not_waits():
    event = threading.Event()
    sleeper = threading.Thread(target=event.wait, args=(5,))
    worker = threading.Thread(target=h.spin_until, args=(event, 5))
    sleeper.start()
    worker.start()
    before = {t: _backend._ran_and_queued(t) for t in (sleeper, worker)}
    time.sleep(0.1)
    after = {t: _backend._ran_and_queued(t) for t in (sleeper, worker)}
    event.set()
    worker.join()
    sleeper.join()
    ran, queued = (b - a for a, b in zip(before[sleeper], after[sleeper], strict=True))
    assert ran < 0.01 and queued < 0.01  # waiting is neither running nor ready
    ran, queued = (b - a for a, b in zip(before[worker], after[worker], strict=True))
    assert ran + queued > 0.05  # running or ready to run nearly all the time


def test_an_ended_threads_clock_reads_as_none():
    thread = threading.Thread(target=int)
    thread.start()
    thread.join()
    assert _backend._ran_and_queued(thread) is None
    assert _backend._sample({0: thread}) == {}


# ----------------------------------------------------------- measured, live
needs_two_cores = pytest.mark.skipif(shoal.cpu_count() < 2, reason="needs two cores")


def test_auto_picks_threads_for_a_function_that_waits():
    started = time.perf_counter()
    out = shoal.map(h.sleep_pair, [(i, 0.2) for i in range(16)], workers=8, backend="auto")
    assert out == list(range(16))
    assert time.perf_counter() - started < 1.0  # two rounds of eight waits
    choice = shoal.last_choice()
    assert choice.backend == "threads", choice


@needs_two_cores
def test_auto_picks_processes_for_a_gil_holding_function():
    out = shoal.map(h.busy_python, [20_000] * 400, workers=2, backend="auto")
    assert out == [h.busy_python(20_000)] * 400
    choice = shoal.last_choice()
    assert choice.backend == "processes", choice
    assert "GIL" in choice.reason and 0 < choice.probe_items < 400
    assert choice.cores_used is not None and choice.cores_used < 1.5


@needs_two_cores
def test_auto_picks_threads_for_a_gil_releasing_function():
    # hashlib releases the GIL on large inputs.
    def run():
        out = shoal.map(h.digest_rounds, [20] * 32, workers=2, backend="auto")
        assert out == [h.digest_rounds(20)] * 32
        choice = shoal.last_choice()
        # Whatever the machine gave the threads, the choice follows the measure.
        parallel = choice.cores_used >= _backend.PARALLEL_SHARE * 2
        assert (choice.backend == "threads") == parallel, choice

    h.auto_picks_threads(run, h.digest_rounds, 20)


def test_auto_runs_every_item_exactly_once(tmp_path):
    log = tmp_path / "calls"
    items = [(str(log), i) for i in range(300)]
    out = shoal.map(h.log_call_busy, items, workers=2, backend="auto")
    assert out == list(range(300))
    calls = sorted(int(x) for x in log.read_text().split())
    assert calls == list(range(300)), "an item ran twice or never"


def test_a_function_that_raises_during_the_measure_raises():
    with pytest.raises(ValueError, match="bad value 5"):
        shoal.map(h.raise_if_equal, range(10), backend="auto")


def test_explicit_backends_and_pools():
    assert shoal.map(abs, [-1, -2], backend="threads") == [1, 2]
    assert shoal.last_choice().backend == "threads"
    assert "asked for" in shoal.last_choice().reason
    assert shoal.map(h.square, [1, 2, 3], backend="processes", workers=1) == [1, 4, 9]
    assert shoal.last_choice().backend == "processes"
    with shoal.ThreadPool(2) as pool:
        assert shoal.map(abs, [-3], backend=pool) == [3]
        assert "passed as backend" in shoal.last_choice().reason
        assert shoal.parallel_reduce(10, abs, backend=pool) == 45
        assert shoal.last_choice().backend == "threads"


def test_nothing_to_run_starts_no_pool():
    before = threading.active_count()
    assert shoal.map(abs, [], backend="processes") == []
    assert shoal.last_choice().reason == "there was nothing to run"
    assert shoal.parallel_for(0, abs, backend="auto").values == []
    assert threading.active_count() == before


def test_last_choice_is_per_thread():
    shoal.map(abs, [-1], backend="threads")
    seen = []
    t = threading.Thread(target=lambda: seen.append(shoal.last_choice()))
    t.start()
    t.join()
    assert seen == [None]
    assert shoal.last_choice() is not None


def test_loops_on_auto():
    result = shoal.parallel_for(40, h.sleep_index_ms, workers=4, backend="auto")
    assert result.values == list(range(40))
    assert result.backend == "threads" and result.choice is shoal.last_choice()
    total = shoal.parallel_reduce(400, h.busy_python_index, workers=2, backend="auto")
    assert total == sum(h.busy_python_index(i) for i in range(400))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        shoal.map(abs, [1], backend="fibers")
    with pytest.raises(ValueError, match="workers"):
        shoal.map(abs, [1], workers=0)
    with pytest.raises(TypeError, match="not callable"):
        shoal.map(None, [1])
    pool = shoal.ThreadPool(1)
    pool.terminate()
    with pytest.raises(ValueError, match="not running"):
        shoal.map(abs, [1], backend=pool)
