"""``shoal.Trace``: the format's checks, save/load, and the numbers a report uses."""

from __future__ import annotations

import copy
import json
import math

import pytest
import shoal
from trace_factory import Call, make_trace

pytestmark = pytest.mark.timeout(60)


def two_calls() -> dict:
    return make_trace(
        [
            Call([0.1] * 8, function="mymod.square"),
            Call([0.01, 0.2, 0.01], function="mymod.<lambda>", outcomes={1: "error"}),
        ],
        workers=2,
        tail=0.1,
    )


# ------------------------------------------------------------------ format


def test_save_and_load_round_trip_every_field(tmp_path):
    data = two_calls()
    trace = shoal.Trace.from_dict(data)
    path = tmp_path / "t.json"
    trace.save(path)
    again = shoal.Trace.load(path)
    assert again == trace
    assert json.loads(path.read_text()) == data == trace.to_dict()
    assert again.tasks[9].outcome == "error" and again.calls[1].function == "mymod.<lambda>"


def test_saved_file_has_one_record_per_line(tmp_path):
    trace = shoal.Trace.from_dict(two_calls())
    trace.save(tmp_path / "t.json")
    lines = (tmp_path / "t.json").read_text().splitlines()
    task_lines = [line for line in lines if '"queued"' in line]
    assert len(task_lines) == len(trace.tasks) == 11


def test_records_are_typed_objects():
    trace = shoal.Trace.from_dict(two_calls())
    task = trace.tasks[0]
    assert (task.worker, task.pid, task.call, task.items) == (0, 1000, 0, 1)
    assert task.end - task.start == pytest.approx(0.1)
    assert trace.pool.kind == "process" and trace.pool.workers == 2
    assert [w.worker for w in trace.workers] == [0, 1]
    assert "11 tasks in 2 calls on 2 process workers" in repr(trace)


def test_tasks_that_never_ran_may_have_nulls_or_no_times_at_all():
    data = make_trace([Call([0.1, 0.1, 0.1], outcomes={2: "cancelled"})])
    del data["tasks"][2]["start"], data["tasks"][2]["end"]  # missing means null
    trace = shoal.Trace.from_dict(data)
    assert trace.tasks[2].start is None and trace.tasks[2].worker is None


def test_keys_a_later_writer_adds_are_ignored():
    data = two_calls()
    data["gpu"] = "none"
    data["tasks"][0]["memory"] = 123
    assert shoal.Trace.from_dict(data).tasks[0].id == 0


def test_an_empty_trace_is_valid():
    trace = shoal.Trace.from_dict(make_trace([], workers=3))
    assert trace.tasks == () and trace.summary().speedup == 0


def test_errors_are_shoal_errors_and_value_errors():
    assert issubclass(shoal.TraceFormatError, shoal.ShoalError)
    assert issubclass(shoal.TraceFormatError, ValueError)


def test_unknown_format_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "chrome-trace", "version": 1}))
    with pytest.raises(shoal.TraceFormatError) as e:
        shoal.Trace.load(path)
    assert str(path) in str(e.value)
    assert "not a shoal trace" in str(e.value) and "'chrome-trace'" in str(e.value)


def test_newer_version_is_rejected_with_what_to_do(tmp_path):
    data = two_calls()
    data["version"] = 2
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(shoal.TraceFormatError, match="version 2 is newer") as e:
        shoal.Trace.load(path)
    assert str(path) in str(e.value) and "upgrade shoal" in str(e.value)


def test_a_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "shoal-trace", ')
    with pytest.raises(shoal.TraceFormatError, match="broken.json: not a JSON file"):
        shoal.Trace.load(path)


_DELETE = object()


def _set(path: str, value):
    """An edit of the trace dict at a path like 'tasks.3.start' (_DELETE: remove the key)."""

    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        key = int(last) if isinstance(target, list) else last
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("format", _DELETE), "no 'format' field"),
        (_set("version", "1"), "version: expected a positive integer"),
        (_set("tasks.3.start", "soon"), "tasks[3].start: expected a non-negative number or null"),
        (_set("tasks.3.run", -0.5), "tasks[3].run: expected a non-negative number or null"),
        (_set("tasks.3.ser", math.nan), "tasks[3].ser: expected a non-negative number, got nan"),
        (_set("tasks.3.queued", _DELETE), "tasks[3].queued: missing"),
        (_set("tasks.3.bytes_in", None), "tasks[3].bytes_in: must not be null"),
        (_set("tasks.3.items", True), "tasks[3].items: expected a non-negative integer"),
        (_set("tasks.3.outcome", "exploded"), "tasks[3].outcome: expected one of"),
        (_set("tasks.3.call", 7), "tasks[3].call: no call has id 7"),
        (_set("tasks.3.worker", 2), "tasks[3].worker: slot 2 but the pool has 2 workers"),
        (_set("workers.1.worker", 5), "workers[1].worker: slot 5"),
        (_set("calls.0.function", 3), "calls[0].function: expected a string"),
        (_set("pool.kind", "gpu"), "pool.kind: expected one of"),
        (_set("pool.workers", 0), "pool.workers: expected at least 1"),
        (_set("tasks", {}), "tasks: expected a list, got {}"),
        (_set("calls.0", [1, 2]), "calls[0]: expected an object"),
        (_set("host", None), "host: must not be null"),
    ],
)
def test_malformed_content_is_rejected_naming_the_field(edit, message):
    data = copy.deepcopy(two_calls())
    edit(data)
    with pytest.raises(shoal.TraceFormatError) as e:
        shoal.Trace.from_dict(data, source="run.json")
    assert str(e.value).startswith("run.json: ")
    assert message in str(e.value)


def test_a_json_list_is_not_a_trace():
    with pytest.raises(shoal.TraceFormatError, match="expected a JSON object, got list"):
        shoal.Trace.from_dict([1, 2])


def test_a_trace_taken_mid_run_has_pending_tasks():
    import helpers_mod as h

    with shoal.Pool(1, trace=True) as pool:
        results = [pool.apply_async(h.sleep_and_return, (i, 0.2)) for i in range(2)]
        during = pool.trace()
        assert [r.get(timeout=30) for r in results] == [0, 1]
        after = pool.trace()
    assert [t.outcome for t in during.tasks] == ["pending", "pending"]
    assert during.summary().outcomes == {"pending": 2}
    assert [t.outcome for t in after.tasks] == ["ok", "ok"]
    assert after.summary().run_total >= 0.4


# ------------------------------------------------------------------ numbers


def test_speedup_utilisation_and_breakdown_add_up():
    # 8 x 0.1 s on 2 workers from 0.05 s: each worker busy 0.4 s, done at 0.45 s.
    trace = shoal.Trace.from_dict(make_trace([Call([0.1] * 8)], workers=2, tail=0.05))
    s = trace.summary()
    assert s.wall == pytest.approx(0.5)
    assert s.run_total == pytest.approx(0.8)
    assert s.speedup == pytest.approx(0.8 / 0.5)
    assert s.efficiency == pytest.approx(0.8)
    assert s.utilisation == pytest.approx(0.8)
    assert s.imbalance == pytest.approx(0.0)
    assert [lane.busy for lane in s.lanes] == pytest.approx([0.4, 0.4])
    assert [lane.tasks for lane in s.lanes] == [4, 4]
    t = s.time
    assert (t.before_first, t.between, t.after_last) == pytest.approx((0.1, 0.0, 0.1))
    worker_time = t.run + t.deser + t.result_ser + t.other
    worker_time += t.before_first + t.between + t.after_last
    assert worker_time == pytest.approx(2 * s.wall)


def test_overheads_are_split_into_their_parts():
    call = Call([0.01] * 10, ser=0.001, deser=0.002, result_ser=0.003, transport=0.004, gap=0.005)
    s = shoal.Trace.from_dict(make_trace([call], workers=1)).summary()
    t = s.time
    # The hand-over before each task but the first (start-up comes before that).
    assert (t.run, t.deser, t.result_ser, t.other) == pytest.approx((0.1, 0.02, 0.03, 0.036))
    assert t.parent_ser == pytest.approx(0.01)
    assert t.between == pytest.approx(0.045)  # waiting for the next task, 9 times
    assert s.calls[0].handoff == pytest.approx(0.002 + 0.003 + 0.004 + 0.001)
    worker_time = t.run + t.deser + t.result_ser + t.other
    worker_time += t.before_first + t.between + t.after_last
    assert worker_time == pytest.approx(s.wall)


def test_gaps_between_tasks_already_handed_over_are_hand_over_not_idle():
    # Every task was handed to the engine when the call began (as map does):
    # the gaps between them are the cost of handing each one over.
    s = shoal.Trace.from_dict(make_trace([Call([0.01] * 10, transport=0.002)], workers=1))
    t = s.summary().time
    assert t.other == pytest.approx(9 * 0.002)
    assert t.between == pytest.approx(0.0)
    assert s.summary().calls[0].handoff == pytest.approx(0.002)


def test_a_real_pools_hand_over_is_counted():
    with shoal.Pool(1, trace=True) as pool:
        pool.map(abs, range(2000), chunksize=1)
        s = pool.trace().summary()
    other, tasks = s.time.other, s.tasks
    # Each task costs microseconds to hand over, not nothing (it was booked
    # as idle time before).
    assert other > tasks * 1e-7, other
    assert other < s.wall
    (call,) = s.calls
    assert call.handoff > 1e-7
    assert s.time.between < other, "the worker was never short of queued work for long"


def test_imbalance_and_idle_at_the_end_of_a_call():
    # Worker 0 runs the 1 s task; worker 1 runs three 0.1 s tasks and waits 0.7 s.
    s = shoal.Trace.from_dict(make_trace([Call([1.0, 0.1, 0.1, 0.1])], workers=2)).summary()
    assert [lane.busy for lane in s.lanes] == pytest.approx([1.0, 0.3])
    assert s.imbalance == pytest.approx(1.0 / 0.65 - 1)
    stats = s.calls[0]
    assert stats.window == pytest.approx(1.0)
    assert stats.idle_at_end == pytest.approx(0.7 / 2.0)
    assert (stats.median_run, stats.max_run, stats.workers_used) == pytest.approx((0.1, 1.0, 2))


def test_worker_cpu_time_is_summed_per_slot_and_none_for_threads():
    process = shoal.Trace.from_dict(make_trace([Call([0.2] * 4)], cpu_share=0.25)).summary()
    assert process.cpu_total == pytest.approx(0.2)
    assert [lane.cpu for lane in process.lanes] == pytest.approx([0.1, 0.1])
    thread = shoal.Trace.from_dict(make_trace([Call([0.2] * 4)], kind="thread")).summary()
    assert thread.cpu_total is None and thread.lanes[0].cpu is None


def test_failed_cancelled_and_lost_tasks_are_counted_and_placed():
    data = make_trace([Call([0.1] * 6, outcomes={1: "lost", 4: "cancelled", 5: "timeout"})])
    lost = data["tasks"][1]
    lost["end"] = None  # lost with its worker: no end; lasts until the slot's next task
    trace = shoal.Trace.from_dict(data)
    s = trace.summary()
    assert s.outcomes == {"ok": 3, "lost": 1, "cancelled": 1, "timeout": 1}
    from shoal.trace.summary import lanes

    slot = lanes(trace, s.wall)[lost["worker"]]
    lost_interval = next(iv for iv in slot if iv.task.id == lost["id"])
    following = slot[slot.index(lost_interval) + 1]
    assert lost_interval.end == following.start
    assert sum(len(v) for v in lanes(trace, s.wall).values()) == 5  # the cancelled one is nowhere


def test_a_wall_shorter_than_the_tasks_is_stretched_to_cover_them():
    data = make_trace([Call([0.1] * 2)], workers=1)
    data["wall"] = 0.01
    assert shoal.Trace.from_dict(data).summary().wall == pytest.approx(0.25)
