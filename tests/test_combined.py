"""Features together: large arrays in shared memory under traces,
progress, checkpoints, ThreadPool and loops, retries after kill -9,
timeouts, cancel, max_memory, shared primitives and worker output."""

from __future__ import annotations

import functools
import gc
import os
import re
import threading
from concurrent.futures import CancelledError

import combined_helpers as ch
import helpers_mod as h
import numpy as np
import pytest
import shm_helpers as sh
import shoal
from shoal.parallel import auto as _backend
from shoal.wire import transfer as _transfer

pytestmark = pytest.mark.timeout(60)

NBYTES = ch.N * 8  # one array of combined_helpers.big()
assert NBYTES >= _transfer.THRESHOLD  # every such array travels in shared memory
#: What a payload may carry besides its arrays: pickles, headers, a trailer.
OVERHEAD = 4096


def arrays(n: int, first_seed: int = 0) -> list:
    return [ch.big(first_seed + i) for i in range(n)]


def same_arrays(got, want) -> bool:
    return len(got) == len(want) and all(
        g.dtype == w.dtype and np.array_equal(g, w) for g, w in zip(got, want, strict=True)
    )


def log_dir(tmp_path) -> str:
    path = tmp_path / "calls"
    path.mkdir(exist_ok=True)
    return str(path)


# ---------------------------------------------------------------------------
# traces: every call kind with large arguments and results
# ---------------------------------------------------------------------------


def test_every_call_kind_with_large_arrays_is_traced_once_with_its_array_bytes(make_pool, tmp_path):
    xs = arrays(4)
    pool = make_pool(2, trace=True)
    assert same_arrays(pool.map(ch.double, xs, chunksize=1), [x * 2 for x in xs])
    pairs = [(x, ch.big(10 + i)) for i, x in enumerate(xs)]
    assert same_arrays(pool.starmap(ch.add_arrays, pairs, chunksize=1), [a + b for a, b in pairs])
    assert same_arrays(list(pool.imap(ch.double, xs, chunksize=1)), [x * 2 for x in xs])
    totals = sorted(pool.imap_unordered(ch.total, xs, chunksize=1))
    assert totals == sorted(float(x.sum()) for x in xs)
    assert np.array_equal(pool.apply_async(ch.double, (xs[0],)).get(20), xs[0] * 2)
    assert np.array_equal(pool.submit(ch.double, xs[1]).result(20), xs[1] * 2)
    trace = pool.trace()

    methods = [c.method for c in trace.calls]
    assert methods == ["map", "starmap", "imap", "imap_unordered", "apply", "submit"]
    tasks = {c.method: [t for t in trace.tasks if t.call == c.id] for c in trace.calls}
    assert [len(tasks[m]) for m in methods] == [4, 4, 4, 4, 1, 1]
    ids = [t.id for t in trace.tasks]
    assert len(ids) == len(set(ids)) == 18, "every task once"
    assert all(t.outcome == "ok" and t.items == 1 for t in trace.tasks)

    def carries(size: int, arrays: int) -> bool:
        return arrays * NBYTES <= size < arrays * NBYTES + OVERHEAD

    for method, ins, outs in [
        ("map", 1, 1),
        ("starmap", 2, 1),
        ("imap", 1, 1),
        ("apply", 1, 1),
        ("submit", 1, 1),
    ]:
        for t in tasks[method]:
            assert carries(t.bytes_in, ins), (method, t)
            assert carries(t.bytes_out, outs), (method, t)
    for t in tasks["imap_unordered"]:
        assert carries(t.bytes_in, 1)
        assert 0 < t.bytes_out < OVERHEAD  # a float back

    page = tmp_path / "run.html"
    assert shoal.report(trace, page) == str(page)
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "combined_helpers.double" in html
    trace.save(tmp_path / "run.json")
    assert shoal.Trace.load(tmp_path / "run.json").tasks == trace.tasks


def test_a_thread_pool_traces_large_array_tasks_without_pickling(tmp_path):
    xs = arrays(3)
    with shoal.ThreadPool(2, trace=True) as pool:
        got = pool.map(ch.same, xs, chunksize=1)
        trace = pool.trace()
    assert all(g is x for g, x in zip(got, xs, strict=True)), "handed over, not copied"
    assert len(trace.tasks) == 3
    assert all(t.outcome == "ok" and t.bytes_in == 0 for t in trace.tasks)
    assert shoal.report(trace, tmp_path / "threads.html")


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------


class Counts:
    """An on_progress callback that keeps every ``(done, total)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int | None]] = []
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        with self.lock:
            self.seen.append((done, total))

    def reached(self, total: int) -> bool:
        dones = [d for d, _ in self.seen]
        return bool(self.seen) and self.seen[-1] == (total, total) and dones == sorted(dones)


@pytest.mark.parametrize("method", ["map", "starmap", "imap", "imap_unordered"])
def test_progress_reaches_the_total_on_large_array_maps(make_pool, method):
    xs = arrays(6)
    counts = Counts()
    pool = make_pool(2)
    if method == "starmap":
        out = pool.starmap(ch.add_arrays, [(x, x) for x in xs], 2, on_progress=counts)
    else:
        out = list(getattr(pool, method)(ch.double, xs, 2, on_progress=counts, progress=True))
    assert len(out) == 6
    assert counts.reached(6), counts.seen


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------


def test_a_checkpointed_map_stores_large_results_and_reloads_them_without_running(tmp_path):
    calls = log_dir(tmp_path)
    store = tmp_path / "run.sqlite"
    args = [(seed, calls) for seed in range(6)]
    want = [ch.big(seed) for seed in range(6)]
    with shoal.Pool(2) as pool:
        first = pool.map(ch.ramp_logged, args, checkpoint=store)
    assert same_arrays(first, want)
    assert ch.calls(calls) == 6
    counts = Counts()
    with shoal.Pool(2) as pool:
        again = pool.map(ch.ramp_logged, args, checkpoint=store, on_progress=counts)
    assert same_arrays(again, want)
    assert ch.calls(calls) == 6, "nothing ran again"
    assert counts.reached(6), counts.seen


def test_a_checkpointed_starmap_of_large_arguments_resumes_and_is_traced(tmp_path):
    calls = log_dir(tmp_path)
    store = tmp_path / "run.sqlite"
    xs = arrays(4)
    counts = Counts()
    with shoal.Pool(2, trace=True) as pool:
        first = pool.starmap(
            ch.double_logged, [(x, calls) for x in xs], checkpoint=store, on_progress=counts
        )
        trace = pool.trace()
    assert same_arrays(first, [x * 2 for x in xs])
    assert ch.calls(calls) == 4
    assert counts.reached(4), counts.seen
    (call,) = trace.calls
    assert (call.method, call.function) == ("starmap", "combined_helpers.double_logged")
    assert sum(t.items for t in trace.tasks) == 4
    assert all(t.outcome == "ok" for t in trace.tasks)
    assert sum(t.bytes_in for t in trace.tasks) >= 4 * NBYTES
    assert sum(t.bytes_out for t in trace.tasks) >= 4 * NBYTES
    with shoal.Pool(2) as pool:
        again = pool.starmap(ch.double_logged, [(x, calls) for x in xs], checkpoint=store)
    assert same_arrays(again, first)
    assert ch.calls(calls) == 4


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_a_checkpointed_imap_stores_each_large_result(tmp_path, method):
    calls = log_dir(tmp_path)
    store = tmp_path / "run.sqlite"
    args = [(seed, calls) for seed in range(5)]
    want = {seed: ch.big(seed) for seed in range(5)}

    def run(pool, **options):
        out = list(getattr(pool, method)(ch.ramp_logged, args, 2, checkpoint=store, **options))
        return sorted(out, key=lambda a: float(a.sum())) if method == "imap_unordered" else out

    expected = list(want.values())
    if method == "imap_unordered":
        expected.sort(key=lambda a: float(a.sum()))
    with shoal.Pool(2) as pool:
        assert same_arrays(run(pool), expected)
    assert ch.calls(calls) == 5
    counts = Counts()
    with shoal.Pool(2, trace=True) as pool:
        assert same_arrays(run(pool, on_progress=counts), expected)
        assert pool.trace().tasks == (), "everything came from the store"
    assert ch.calls(calls) == 5
    assert counts.reached(5), counts.seen


def test_checkpointed_calls_send_large_arguments_in_shared_memory(tmp_path):
    xs = arrays(3)
    store = tmp_path / "run.sqlite"
    with shoal.Pool(2) as pool:
        seen = [
            pool.map(sh.describe, xs, checkpoint=store),
            pool.map(sh.describe, xs, checkpoint=store, checkpoint_key=id),
            list(pool.imap(sh.describe, xs, checkpoint=store)),
        ]
    for described in seen:
        assert [d["sum"] for d in described] == [float(x.sum()) for x in xs]
        assert all(d["segment"] is not None for d in described), described


def test_a_checkpointed_map_sends_a_shared_array_as_a_handle(tmp_path):
    out = shoal.shared.zeros(40)
    with shoal.Pool(2) as pool:
        pool.starmap(ch.square_into, [(out, i) for i in range(40)], checkpoint=tmp_path / "s")
    assert np.array_equal(out, np.arange(40.0) ** 2), "the tasks wrote into the shared array"


def test_a_lock_in_a_checkpointed_call_needs_a_checkpoint_key(tmp_path):
    """A Lock has nothing to hash: the error says to key tasks by hand, and
    with checkpoint_key= the Lock and Value reach the workers as handles."""
    lock, value = shoal.Lock(), shoal.Value("i", 0)
    store = tmp_path / "l.sqlite"
    args = [(lock, value, n) for n in (10, 20, 30)]
    with shoal.Pool(2) as pool:
        with pytest.raises(shoal.SerializationError, match="checkpoint_key="):
            pool.starmap(ch.add_under_lock, args, checkpoint=store)
        assert pool.starmap(
            ch.add_under_lock, args, checkpoint=store, checkpoint_key=lambda a: a[2]
        ) == [10, 20, 30]
        assert value.value == 60
        it = pool.imap(
            ch.add_under_lock_pair, args, checkpoint=store, checkpoint_key=lambda a: -a[2]
        )
        with pytest.raises(shoal.SerializationError, match="checkpoint_key="):
            list(pool.imap(ch.add_under_lock_pair, args, checkpoint=store))
        assert list(it) == [10, 20, 30]
        assert value.value == 120
        # Stored: nothing runs again.
        assert pool.starmap(
            ch.add_under_lock, args, checkpoint=store, checkpoint_key=lambda a: a[2]
        ) == [10, 20, 30]
    assert value.value == 120


def test_per_item_checkpoints_send_shared_and_large_arrays_as_without_one(tmp_path):
    out = shoal.shared.zeros(8)
    xs = arrays(3)
    with shoal.Pool(2) as pool:
        got = pool.starmap(
            ch.fill_and_double,
            [(out, i, xs[i % 3]) for i in range(8)],
            checkpoint=tmp_path / "k.sqlite",
            checkpoint_key=lambda a: a[1],
        )
        assert same_arrays(got, [xs[i % 3] * 2 for i in range(8)])
        assert list(pool.imap(ch.total, [out], checkpoint=tmp_path / "i.sqlite")) == [
            float(sum(range(8)))
        ]
    assert np.array_equal(out, np.arange(8.0)), "written through handles, not into copies"


def test_a_thread_pool_checkpoint_hands_over_the_arrays_themselves(tmp_path):
    xs = arrays(3)
    ids = [[id(x)] for x in xs]
    with shoal.ThreadPool(2, trace=True) as pool:
        assert pool.map(ch.identity_of, xs, checkpoint=tmp_path / "a") == ids
        keyed = pool.map(ch.identity_of, xs, checkpoint=tmp_path / "b", checkpoint_key=ch.total)
        assert keyed == ids
        assert list(pool.imap(ch.identity_of, xs, checkpoint=tmp_path / "c")) == ids
        # Stored: the ids of the first run come back, nothing runs.
        assert pool.map(ch.identity_of, arrays(3), checkpoint=tmp_path / "a") == ids
        assert [c.method for c in pool.trace().calls] == ["map", "map", "imap"]


def test_cancel_stops_checkpointed_maps_and_imaps(tmp_path):
    a = ch.big(1)
    store = tmp_path / "run.sqlite"
    with shoal.Pool(2) as pool:
        result = pool.starmap_async(ch.sleep_holding, [(a, 30)] * 4, chunksize=1, checkpoint=store)
        assert h.wait_until(lambda: len(pool.worker_pids()) == 2, 10)
        pool.cancel(result)
        with pytest.raises(CancelledError):
            result.get(10)
        it = pool.imap(ch.sleep_holding, [(a, 30)] * 4, checkpoint=store)
        pool.cancel(it)
        with pytest.raises(CancelledError):
            it.next(timeout=10)
        assert pool.map(ch.total, [a, a]) == [float(a.sum())] * 2


def test_cached_large_results_inside_pool_workers(tmp_path):
    calls = log_dir(tmp_path)
    ramp = shoal.cached(tmp_path / "cache.sqlite")(ch.ramp_logged)
    args = [(seed, calls) for seed in (1, 2, 3)]
    want = [ch.big(seed) for seed in (1, 2, 3)]
    with shoal.Pool(2) as pool:
        assert same_arrays(pool.map(ramp, args, chunksize=1), want)
    assert ch.calls(calls) == 3
    with shoal.Pool(2) as pool:
        assert same_arrays(pool.map(ramp, args, chunksize=1), want)
        assert np.array_equal(pool.apply(ramp, (args[0],)), want[0])
    assert np.array_equal(ramp(args[2]), want[2])
    assert ch.calls(calls) == 3, "every later call came from the store"


# ---------------------------------------------------------------------------
# ThreadPool, loops and backend="auto"
# ---------------------------------------------------------------------------


def test_a_thread_pool_hands_over_shared_and_large_arrays_themselves():
    shared = shoal.shared.zeros(ch.N)
    xs = arrays(3)
    with shoal.ThreadPool(2) as pool:
        assert pool.apply(ch.identity_of, (shared, *xs)) == [id(shared)] + [id(x) for x in xs]
        assert all(g is x for g, x in zip(pool.map(ch.same, xs), xs, strict=True))
        assert same_arrays(pool.map(ch.double, xs, chunksize=1), [x * 2 for x in xs])
        pool.starmap(ch.square_into, [(shared, i) for i in range(100)])
        assert pool.submit(ch.same, shared).result(10) is shared
    assert np.array_equal(shared[:100], np.arange(100.0) ** 2)


def test_parallel_for_on_threads_sees_the_callers_arrays():
    shared = shoal.shared.zeros(ch.N)
    src = ch.big(7)
    seen = set()

    def body(start, stop):
        seen.add((id(shared), id(src)))
        ch.scale_rows(shared, src, start, stop)

    shoal.parallel_for(ch.N, body, backend="threads", workers=2, schedule="dynamic", chunk=5000)
    assert seen == {(id(shared), id(src))}
    assert np.array_equal(shared, src * 3.0)


@pytest.mark.parametrize("schedule", ["static", "dynamic", "guided"])
def test_parallel_for_on_processes_writes_into_a_shared_array(schedule):
    out = shoal.shared.zeros(ch.N)
    src = ch.big(8)  # a large array in the closure: one read-only segment
    result = shoal.parallel_for(
        ch.N,
        lambda start, stop: ch.scale_rows(out, src, start, stop),
        schedule=schedule,
        chunk=4000,
        workers=2,
    )
    assert result.backend == "processes"
    assert np.array_equal(out, src * 3.0)
    total = shoal.parallel_reduce(ch.N, lambda i: float(out[i]), workers=2, schedule=schedule)
    assert total == pytest.approx(float(out.sum()))


def test_auto_with_large_array_arguments_gives_the_right_results():
    xs = arrays(6)
    assert shoal.map(ch.total, xs, backend="auto", workers=2) == [float(x.sum()) for x in xs]
    assert shoal.last_choice() is not None


def test_auto_that_moves_to_processes_sends_large_arrays_there(monkeypatch):
    """The measure depends on the machine's load: here it is made to pick
    processes, so the items after the probe's go to a process pool."""
    monkeypatch.setattr(_backend, "decide", lambda *_: ("processes", "forced by the test"))
    monkeypatch.setattr(_backend, "PROBE_SECONDS", 0.001)
    xs = arrays(40)
    got = shoal.map(ch.python_total, xs, backend="auto", workers=2)
    assert got == pytest.approx([float(x.sum()) for x in xs])
    choice = shoal.last_choice()
    assert choice.backend == "processes" and choice.probe_items < 40, choice


# ---------------------------------------------------------------------------
# faults: kill -9 with retries, timeouts, cancel, max_memory
# ---------------------------------------------------------------------------


def open_fds(pid="self") -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return out


def memfd_count(pid="self") -> tuple[int, int]:
    """Descriptors and mappings of memfds (shoal's segments and pages)."""
    fds = sum(link.startswith("/memfd:") for link in open_fds(pid))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum("memfd:" in line for line in f)
    return fds, maps


def settled(before: tuple[int, int, int]) -> bool:
    gc.collect()
    now = (len(open_fds()), *memfd_count())
    return all(n <= b for n, b in zip(now, before, strict=True))


@pytest.mark.isolated
def test_a_retry_after_kill_9_holding_a_large_array_succeeds_and_leaks_nothing(tmp_path):
    a = ch.big(3, 1 << 20)  # 8 MB
    with shoal.Pool(2, trace=True) as pool:
        # Warm: the workers and their descriptors exist, and so do the
        # pool's kept copy of `a` and the mapping it compares `a` with.
        pool.map(ch.total, [a, a])
        pool.map(ch.total, [a, a])
        gc.collect()
        before = (len(open_fds()), *memfd_count())
        total, doubled = pool.apply(ch.die_once_then_total, (a, str(tmp_path / "m1")), retries=1)
        assert total == float(a.sum()) and np.array_equal(doubled, a * 2)
        # One read-only segment shared by two tasks of a call, each dying once.
        out = pool.starmap(
            ch.die_once_then_total, [(a, str(tmp_path / m)) for m in ("m2", "m3")], 1, retries=1
        )
        assert [t for t, _ in out] == [float(a.sum())] * 2
        assert all(np.array_equal(d, a * 2) for _, d in out)
        killed = {int((tmp_path / m).read_text()) for m in ("m1", "m2", "m3")}
        assert len(killed) == 3 and not h.wait_pids_gone(killed, 10)
        assert h.wait_until(lambda: len(pool.worker_pids()) == 2, 10)
        assert not killed & set(pool.worker_pids())
        trace = pool.trace()
        del total, doubled, out
        assert h.wait_until(lambda: settled(before), 10), (before, open_fds())
    ids = [t.id for t in trace.tasks]
    assert len(ids) == len(set(ids)) == 7  # 4 warming, 3 with a death each
    assert all(t.outcome == "ok" for t in trace.tasks)


def test_a_timeout_on_a_task_with_a_large_argument_and_the_pool_goes_on(make_pool):
    a = ch.big(4, 1 << 20)
    pool = make_pool(2)
    with pytest.raises(shoal.TaskTimeoutError):
        pool.apply(ch.sleep_holding, (a, 30), timeout=0.5)
    with pytest.raises(shoal.TaskTimeoutError):
        pool.starmap(ch.sleep_holding, [(a, 30), (a, 0)], 1, timeout=0.5)
    assert pool.map(ch.total, [a, a]) == [float(a.sum())] * 2


def test_cancel_tasks_holding_large_arguments(make_pool):
    a = ch.big(5, 1 << 20)
    pool = make_pool(2)
    # An imap whose input goes on, then long tasks: the imap's queued chunks wait.
    it = pool.imap(functools.partial(ch.sleep_holding, seconds=0.2), [a] * 1000, chunksize=1)
    assert next(it) == float(a.sum())
    running = pool.starmap_async(ch.sleep_holding, [(a, 30)] * 4, chunksize=1)
    future = pool.submit(ch.sleep_holding, a, 30)
    pool.cancel(running, future, it)
    with pytest.raises(CancelledError):
        running.get(10)
    with pytest.raises(CancelledError):
        future.result(10)
    with pytest.raises(CancelledError):
        for _ in range(1001):
            it.next(timeout=10)
    assert pool.map(ch.total, [a, a]) == [float(a.sum())] * 2


def test_max_memory_does_not_count_shared_memory_the_worker_maps(make_pool):
    """A worker's own memory is what max_memory limits: a 160 MB shared
    array, or a large argument mapped read-only by every task of a call, is
    allocated once (in the parent), however many workers map it."""
    shared = shoal.shared.full(20_000_000, 1.0)  # 160 MB
    pool = make_pool(2, max_memory="120MB", trace=True)
    assert pool.starmap(ch.sleep_holding, [(shared, 0.3)] * 4, 1) == [2e7] * 4
    big = np.ones(20_000_000)
    assert pool.starmap(ch.sleep_holding, [(big, 0.3)] * 4, 1) == [2e7] * 4
    del big
    xs = arrays(4)
    assert same_arrays(pool.map(ch.double, xs, 1), [x * 2 for x in xs])  # large results
    assert all(t.outcome == "ok" for t in pool.trace().tasks)


# ---------------------------------------------------------------------------
# shared primitives and worker output
# ---------------------------------------------------------------------------


def test_queue_lock_and_value_in_thread_pool_tasks():
    queue, lock, value = shoal.Queue(), shoal.Lock(), shoal.Value("i", 0)
    with shoal.ThreadPool(2) as pool:
        assert pool.apply(ch.put_many, (queue, [1, ch.big(1)])) == 2
        assert pool.starmap(ch.add_under_lock, [(lock, value, 200)] * 4) == [200] * 4
    assert queue.get(timeout=5) == 1
    assert np.array_equal(queue.get(timeout=5), ch.big(1))
    assert value.value == 800


def test_queue_lock_and_value_in_parallel_for_on_processes():
    queue, lock, value = shoal.Queue(), shoal.Lock(), shoal.Value("i", 0)
    shoal.parallel_for(8, lambda i: ch.add_under_lock(lock, value, 50), workers=2)
    assert value.value == 400
    shoal.parallel_for(4, lambda i: queue.put((i, ch.big(i))), workers=2, schedule="dynamic")
    got = sorted((queue.get(timeout=10) for _ in range(4)), key=lambda p: p[0])
    assert [i for i, _ in got] == [0, 1, 2, 3]
    assert same_arrays([a for _, a in got], arrays(4))


def test_prints_from_tasks_given_large_arrays_arrive_tagged(make_pool, capsys):
    a = ch.big(9, 1 << 20)
    pool = make_pool(2)
    pool.starmap(ch.print_and_total, [(a, "first"), (a, "second")], chunksize=1)
    pool.apply(ch.print_and_total, (a, "third"))
    lines = capsys.readouterr().out.splitlines()
    want = f"got {a.size} values summing to {float(a.sum()):.6f}"
    assert len(lines) == 3
    by_tag = sorted(lines, key=lambda s: ["first", "second", "third"].index(s.split()[2]))
    for line, tag in zip(by_tag, ["first", "second", "third"], strict=True):
        assert re.fullmatch(rf"\[worker [01]\] {tag} {want}", line), line
