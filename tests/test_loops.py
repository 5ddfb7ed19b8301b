"""shoal.parallel_for and shoal.parallel_reduce: OpenMP's schedules as pure
functions, and loops that visit every index exactly once on processes and
threads."""

from __future__ import annotations

import collections
import math
import operator
import threading

import helpers_mod as h
import pytest
import shoal
from shoal.parallel import loops as _loops

pytestmark = pytest.mark.timeout(120)

SIZES = (0, 1, 2, 7, 10, 37)
CHUNKS = (None, 1, 3, 8, 100)  # 100 is more than any size


def covered(chunks) -> list[int]:
    return [i for start, stop in chunks for i in range(start, stop)]


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("schedule", _loops.SCHEDULES)
@pytest.mark.parametrize("workers", (1, 2, 3, 8))
def test_every_schedule_covers_each_index_exactly_once(schedule, workers):
    for n in SIZES:
        for chunk in CHUNKS:
            tasks = _loops.plan(schedule, n, workers, chunk)
            indices = covered(c for task in tasks for c in task)
            assert sorted(indices) == list(range(n)), (n, chunk, tasks)
            assert all(task and all(b > a for a, b in task) for task in tasks)


def test_static_blocks_are_contiguous_and_even():
    assert _loops.static_chunks(10, 4) == [[(0, 3)], [(3, 6)], [(6, 8)], [(8, 10)]]
    assert _loops.static_chunks(2, 3) == [[(0, 1)], [(1, 2)], []]
    for n in SIZES:
        for workers in (1, 2, 3, 5):
            sizes = [sum(b - a for a, b in share) for share in _loops.static_chunks(n, workers)]
            assert max(sizes) - min(sizes) <= 1
    # One task per worker: a worker's share never moves to another.
    assert len(_loops.plan("static", 100, 4)) == 4


def test_static_with_a_chunk_deals_round_robin():
    assert _loops.static_chunks(10, 3, 2) == [[(0, 2), (6, 8)], [(2, 4), (8, 10)], [(4, 6)]]
    assert _loops.static_chunks(3, 2, 5) == [[(0, 3)], []]
    assert len(_loops.plan("static", 100, 4, chunk=1)) == 4


def test_dynamic_hands_out_chunks_of_the_size_asked():
    assert _loops.dynamic_chunks(5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert _loops.dynamic_chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert _loops.dynamic_chunks(2, 10) == [(0, 2)]
    assert _loops.plan("dynamic", 7, 2, 3) == [[(0, 3)], [(3, 6)], [(6, 7)]]


def test_guided_chunks_shrink_to_the_minimum():
    chunks = _loops.guided_chunks(100, 4)
    sizes = [b - a for a, b in chunks]
    assert sizes[0] == 25  # ceil(100 / 4)
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 1
    # Each is ceil(remaining / workers), but at least the minimum chunk.
    start = 0
    for a, b in _loops.guided_chunks(100, 4, chunk=5):
        assert a == start
        assert b - a == min(max(math.ceil((100 - a) / 4), 5), 100 - a)
        start = b
    assert _loops.guided_chunks(3, 2, chunk=10) == [(0, 3)]


# ---------------------------------------------------------------- parallel_for
@pytest.fixture(scope="module")
def processes():
    with shoal.Pool(2) as p:
        yield p


@pytest.fixture(scope="module")
def threads():
    with shoal.ThreadPool(3) as p:
        yield p


@pytest.mark.parametrize("schedule", _loops.SCHEDULES)
@pytest.mark.parametrize("chunk", (None, 1, 4, 50))
def test_parallel_for_visits_every_index_once_on_processes(processes, schedule, chunk):
    for n in (0, 1, 2, 9, 31):
        result = shoal.parallel_for(
            n, h.index_and_worker, schedule=schedule, chunk=chunk, backend=processes
        )
        assert [i for i, _, _ in result.values] == list(range(n))
        assert all(0 <= w < 2 and size == 2 for _, w, size in result.values)
        assert result.backend == "processes" and result.schedule == schedule


@pytest.mark.parametrize("schedule", _loops.SCHEDULES)
@pytest.mark.parametrize("chunk", (None, 1, 4, 50))
def test_parallel_for_visits_every_index_once_on_threads(threads, schedule, chunk):
    for n in (0, 1, 2, 9, 31):
        visits = collections.Counter()
        lock = threading.Lock()

        def body(i):
            with lock:  # noqa: B023 - used at once, in this iteration
                visits[i] += 1  # noqa: B023
            return shoal.worker_id(), shoal.num_workers()

        result = shoal.parallel_for(n, body, schedule=schedule, chunk=chunk, backend=threads)
        assert visits == collections.Counter(range(n))
        assert all(0 <= w < 3 and size == 3 for w, size in result.values)
        assert result.backend == "threads"


@pytest.mark.parametrize("schedule", _loops.SCHEDULES)
def test_a_chunk_body_gets_start_and_stop(threads, schedule):
    result = shoal.parallel_for(
        range(5, 42), lambda a, b: (a, b), schedule=schedule, chunk=4, backend=threads
    )
    assert covered(result.values) == list(range(5, 42))
    assert result.chunks == len(result.values)


def test_a_loop_over_a_range_with_a_step(threads):
    result = shoal.parallel_for(range(10, 0, -3), lambda i: i, backend=threads)
    assert result.values == [10, 7, 4, 1]
    with pytest.raises(ValueError, match="step 1"):
        shoal.parallel_for(range(0, 10, 2), lambda a, b: None, backend=threads)


def test_static_gives_each_worker_one_block_and_reports_busy_time(processes):
    result = shoal.parallel_for(40, h.index_and_worker, backend=processes)
    by_worker = collections.defaultdict(list)
    for i, w, _ in result.values:
        by_worker[w].append(i)
    # Two contiguous blocks, one per worker.
    assert sorted(map(sorted, by_worker.values())) == [list(range(20)), list(range(20, 40))]
    assert result.chunks == 2 and len(result.busy) == 2
    assert result.imbalance >= 1.0 and result.wall > 0
    assert "static on processes" in repr(result)


def test_dynamic_balances_what_static_cannot(processes):
    # Iterations get slower with the index: static's second block holds
    # nearly all the work, dynamic spreads it.
    static = shoal.parallel_for(12, h.sleep_index_ms, backend=processes)
    dynamic = shoal.parallel_for(12, h.sleep_index_ms, schedule="dynamic", backend=processes)
    assert static.imbalance > 1.4
    assert dynamic.imbalance < static.imbalance


def test_parallel_for_with_its_own_pool():
    result = shoal.parallel_for(6, h.index_and_worker, workers=3, backend="threads")
    assert [i for i, _, _ in result.values] == list(range(6))
    assert {size for _, _, size in result.values} == {3}
    result = shoal.parallel_for(4, h.index_and_worker, workers=2)
    assert result.backend == "processes"
    assert [i for i, _, _ in result.values] == list(range(4))


def test_a_body_that_raises_raises_in_the_caller(threads):
    with pytest.raises(ValueError, match="bad value 5"):
        shoal.parallel_for(10, h.raise_if_equal, backend=threads)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((3.5, abs), TypeError),
        (([1, 2], abs), TypeError),
        ((-1, abs), TypeError),
        ((5, 3), TypeError),
        ((5, lambda: None), TypeError),
        ((5, lambda a, b, c: None), TypeError),
    ],
)
def test_bad_loops_are_refused(args, error):
    with pytest.raises(error):
        shoal.parallel_for(*args, backend="threads")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        shoal.parallel_for(5, abs, schedule="runtime")
    with pytest.raises(ValueError, match="chunk"):
        shoal.parallel_for(5, abs, chunk=0)
    with pytest.raises(ValueError, match="workers"):
        shoal.parallel_for(5, abs, workers=0)
    with pytest.raises(ValueError, match="backend"):
        shoal.parallel_for(5, abs, backend="gpu")
    with pytest.raises(ValueError, match="op"):
        shoal.parallel_reduce(5, abs, "mean")


# ------------------------------------------------------------- parallel_reduce
OPS = [
    ("sum", sum),
    ("prod", math.prod),
    ("min", min),
    ("max", max),
    (operator.xor, lambda xs: __import__("functools").reduce(operator.xor, xs)),
]


@pytest.mark.parametrize(("op", "serial"), OPS)
@pytest.mark.parametrize("schedule", _loops.SCHEDULES)
def test_reductions_match_the_serial_result(processes, op, serial, schedule):
    for n in (1, 2, 13):
        expected = serial(h.reduce_term(i) for i in range(n))
        got = shoal.parallel_reduce(n, h.reduce_term, op, schedule=schedule, backend=processes)
        assert got == expected, (op, n)


@pytest.mark.parametrize(("op", "serial"), OPS)
def test_reductions_on_threads_with_chunks(threads, op, serial):
    expected = serial(h.reduce_term(i) for i in range(50))
    for chunk in (1, 7, 100):
        got = shoal.parallel_reduce(
            50, h.reduce_term, op, chunk=chunk, schedule="dynamic", backend=threads
        )
        assert got == expected


def test_a_callable_op_is_combined_in_index_order(threads):
    # String concatenation is associative but not commutative.
    got = shoal.parallel_reduce(
        26, lambda i: chr(97 + i), operator.add, schedule="guided", backend=threads
    )
    assert got == "abcdefghijklmnopqrstuvwxyz"


def test_a_chunk_body_returns_its_partial(threads):
    total = shoal.parallel_reduce(
        1000, lambda a, b: sum(range(a, b)), schedule="dynamic", chunk=64, backend=threads
    )
    assert total == sum(range(1000))


def test_empty_reductions(threads):
    assert shoal.parallel_reduce(0, abs, backend=threads) == 0
    assert shoal.parallel_reduce(0, abs, "prod", backend=threads) == 1
    assert shoal.parallel_reduce(0, abs, "min", initial=7, backend=threads) == 7
    with pytest.raises(ValueError, match="initial"):
        shoal.parallel_reduce(0, abs, "max", backend=threads)
    assert shoal.parallel_reduce(3, abs, "sum", initial=10, backend=threads) == 13


def test_pi_by_the_midpoint_rule_in_one_line():
    n = 200_000
    pi = shoal.parallel_reduce(n, lambda i: 4 / (1 + ((i + 0.5) / n) ** 2), workers=2) / n
    assert abs(pi - math.pi) < 1e-9
