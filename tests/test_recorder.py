"""``Pool(trace=True)`` and ``pool.trace()`` (``shoal.trace.recorder``): every
task once, times in order, workers and sizes as they really were."""

from __future__ import annotations

import functools
import json
import time

import helpers_mod as h
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


def traced_run():
    with shoal.Pool(2, trace=True) as p:
        assert p.map(h.slow_square, range(12), chunksize=3) == [i * i for i in range(12)]
        assert p.apply(h.square, (3,)) == 9
        assert p.submit(h.square, 4).result(timeout=10) == 16
        assert sorted(p.imap_unordered(h.square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
        pids = set(p.worker_pids())
    return p.trace(), pids


def test_every_task_once_with_ordered_times_and_valid_workers():
    trace, pids = traced_run()
    assert [c.method for c in trace.calls] == ["map", "apply", "submit", "imap_unordered"]
    assert [c.tasks for c in trace.calls] == [4, 1, 1, 3]
    assert [c.items for c in trace.calls] == [12, 1, 1, 5]
    assert trace.calls[0].function == "helpers_mod.slow_square"
    assert trace.calls[0].chunksize == 3
    assert len(trace.tasks) == 9
    assert len({t.id for t in trace.tasks}) == 9
    for t in trace.tasks:
        assert t.outcome == "ok"
        assert t.worker in (0, 1)
        assert t.pid in pids
        assert 0 <= t.queued <= t.start <= t.end <= trace.wall
        assert t.bytes_in > 0 and t.bytes_out > 0
        assert min(t.ser, t.deser, t.run, t.result_ser) >= 0
        assert t.deser + t.run + t.result_ser <= (t.end - t.start) * 1.001
        call = trace.calls[t.call]
        assert call.start <= t.queued and t.end <= call.end
    assert sum(t.items for t in trace.tasks) == 12 + 1 + 1 + 5
    assert {w.pid for w in trace.workers} == pids
    assert {w.worker for w in trace.workers} == {0, 1}
    assert all(w.cpu > 0 for w in trace.workers)


def test_the_trace_shows_where_time_went():
    with shoal.Pool(1, trace=True) as p:
        p.map(functools.partial(h.sleep_and_return, seconds=0.05), range(4), chunksize=1)
    trace = p.trace()
    for t in trace.tasks:
        assert 0.05 <= t.run < 1.0, t
        assert t.deser < 0.05 and t.result_ser < 0.05
    # Sleeping uses no CPU: the worker's CPU time is far below its busy time.
    (worker,) = trace.workers
    assert worker.cpu < sum(t.run for t in trace.tasks)


def test_failed_lost_and_cancelled_tasks_are_recorded():
    with shoal.Pool(1, trace=True) as p:
        with pytest.raises(ValueError):
            p.apply(h.raise_value_error, ("boom",))
        with pytest.raises(shoal.WorkerLostError):
            p.apply(h.exit_process, (3,))
        r = p.apply_async(h.sleep_and_return, (1, 30))
        time.sleep(0.5)  # running, so cancelling it replaces its worker
        p.cancel(r)
        with pytest.raises(Exception, match="cancelled"):
            r.get(timeout=10)
        assert p.apply(h.square, (2,)) == 4
    outcomes = [t.outcome for t in p.trace().tasks]
    assert outcomes == ["error", "lost", "cancelled", "ok"]
    lost = p.trace().tasks[1]
    assert lost.start is None and lost.worker is None
    workers = p.trace().workers
    assert len(workers) >= 3, "the dead and the cancelled worker were replaced"
    assert sum(w.end is not None for w in workers) >= 2


def test_the_trace_saves_as_json_and_loads_back(tmp_path):
    trace, _ = traced_run()
    path = tmp_path / "run.json"
    trace.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "shoal-trace" and data["version"] == 1
    assert data["pool"] == {"kind": "process", "workers": 2}
    assert shoal.Trace.load(path) == trace


def test_a_pool_without_trace_says_how_to_get_one(make_pool):
    p = make_pool(1)
    with pytest.raises(ValueError, match="trace=True"):
        p.trace()
