"""The report's advice: each rule fires on its pattern, cites its numbers, and
stays quiet otherwise."""

from __future__ import annotations

import pytest
import shoal
from shoal.trace.advice import advise
from trace_factory import Call, make_trace

pytestmark = pytest.mark.timeout(60)


def advice_for(calls, **kwargs) -> dict[str, str]:
    trace = shoal.Trace.from_dict(make_trace(calls, **kwargs))
    return {a.topic: a.text for a in advise(trace.summary())}


def test_a_balanced_run_gets_nothing_to_tune_with_its_numbers():
    advice = advice_for([Call([0.1] * 8)], workers=2)
    assert list(advice) == ["ok"]
    assert "busy 89% of the run" in advice["ok"]
    assert "speed-up of 1.78x on 2 workers (89% efficiency)" in advice["ok"]


def test_an_empty_trace_says_so():
    expected = "The pool ran no tasks: there is nothing to measure yet."
    assert advice_for([], workers=2) == {"ok": expected}


def test_tiny_tasks_get_a_chunksize():
    advice = advice_for([Call([0.0001] * 3000, function="m.tiny", transport=3e-5)], workers=4)
    text = advice["small-tasks"]
    assert text.startswith("map(m.tiny): the median task took 100 µs")
    assert "cost about 30 µs more to hand over" in text
    assert "Pass chunksize=32 so that each task runs about 3.2 ms" in text


def test_a_chunksize_keeps_four_tasks_per_worker():
    # 5 ms / 10 µs = 500 per task would leave 2 tasks per worker: 4000 / (4 x 4) = 250.
    call = Call([1e-5] * 4000, transport=4e-5)
    text = advice_for([call], workers=4)["small-tasks"]
    assert "chunksize=128" in text  # 4000 / (4 workers x 4) = 250 -> 128


def test_tiny_tasks_in_a_short_call_are_not_worth_tuning():
    assert "small-tasks" not in advice_for([Call([0.0001] * 100)], workers=2)


def test_fewer_tasks_than_workers():
    text = advice_for([Call([0.2] * 3, items_per_task=10)], workers=4)["few-tasks"]
    assert "map(mymod.work) had 3 tasks for 4 workers, so 1 of them had nothing to do" in text
    assert "pass chunksize=1, for at least 16 tasks (4 per worker)" in text


def test_a_single_task_call_is_not_told_it_has_few_tasks():
    """A submit (an executor's task, a dask task) is one task by design."""
    assert "few-tasks" not in advice_for([Call([0.2], method="submit")], workers=4)


def test_imbalance_suggests_a_dynamic_schedule():
    text = advice_for([Call([1.0, 0.1, 0.1, 0.1])], workers=2)["imbalance"]
    assert "workers sat idle for 35% of the call" in text
    assert "2.0 tasks per worker; the longest ran 1 s, the median 100 ms" in text
    assert "sort the inputs" in text and "dynamic schedule" in text


def test_imbalance_with_big_chunks_suggests_smaller_ones():
    call = Call([1.0, 0.1, 0.1, 0.1], items_per_task=50)
    text = advice_for([call], workers=2)["imbalance"]
    assert "pass chunksize=6" in text  # 200 items / (2 workers x 16)


def test_one_worker_has_no_imbalance():
    assert "imbalance" not in advice_for([Call([1.0, 0.1, 0.1, 0.1])], workers=1)


def test_time_spent_pickling_points_to_shared_memory():
    call = Call([0.01] * 20, ser=0.002, deser=0.002, result_ser=0.001, bytes_in=5_000_000)
    text = advice_for([call], workers=2)["pickling"]
    assert text.startswith("Pickling took 100 ms, 50% of the 200 ms your function ran")
    assert "40 ms pickling arguments in the parent, 40 ms unpickling them in workers" in text
    assert "tasks carried 100 MB of arguments" in text
    assert "shared memory" in text
    assert "shoal.shared" in text  # shoal's own, not multiprocessing.shared_memory


def test_pickling_many_tiny_objects_does_not_point_to_numpy():
    # map over plain integers in chunks of 1000: little data, many objects.
    call = Call([0.001] * 40, ser=0.0005, deser=0.0005, items_per_task=1000, bytes_in=5_000)
    text = advice_for([call], workers=2)["pickling"]
    assert "numpy" not in text and "shared memory" not in text
    assert "per object, not per byte" in text
    assert "1 µs per item" in text
    assert "(start, stop) ranges" in text


def test_slow_start_suggests_reusing_the_pool():
    text = advice_for([Call([0.01] * 8)], workers=2, start_up=0.5)["start-up"]
    assert text.startswith("Workers waited 500 ms on average before their first task, 93%")


def test_tasks_that_wait_instead_of_computing():
    text = advice_for([Call([0.2] * 4)], workers=2, cpu_share=0.1)["waiting"]
    assert text.startswith("Workers used 80 ms of CPU in 800 ms of running tasks (10%)")


def test_thread_workers_are_not_judged_on_cpu_time():
    assert "waiting" not in advice_for([Call([0.2] * 4)], workers=2, kind="thread")


def test_failures_are_listed_by_outcome():
    call = Call([0.1] * 10, outcomes={2: "error", 3: "timeout", 4: "error"})
    text = advice_for([call], workers=2)["failures"]
    assert text == "3 of 10 tasks did not complete: 2 raised an exception, 1 timed out."
