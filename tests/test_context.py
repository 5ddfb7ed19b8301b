"""``shoal.get_context``, ``Pool(context=...)``, and the name
``multiprocessing.current_process()`` gives inside workers and
``shoal.Process`` children."""

from __future__ import annotations

import multiprocessing

import mp_helpers as mh
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

NAMES = (
    "Pool", "Process", "Queue", "JoinableQueue", "SimpleQueue", "Pipe", "Lock", "RLock",
    "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier", "Value", "Array",
    "RawValue", "RawArray", "Manager",
)  # fmt: skip


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver", None])
def test_a_context_has_multiprocessing_names(method):
    ctx = shoal.get_context(method)
    assert ctx.get_start_method() == (method or "spawn")
    for name in NAMES:
        assert getattr(ctx, name) is getattr(shoal, name), name
    assert ctx.cpu_count() == shoal.cpu_count()
    assert set(NAMES) <= set(dir(ctx))


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="spawn, fork, forkserver"):
        shoal.get_context("threads")
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        shoal.get_context().Nope  # noqa: B018


def test_code_written_for_a_context_runs():
    ctx = shoal.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=mh.put_range, args=(q, 0, 3))
    p.start()
    assert [q.get(timeout=30) for _ in range(3)] == [0, 1, 2]
    p.join(30)
    with ctx.Pool(2) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]


@pytest.mark.parametrize(
    "context", [shoal.get_context("fork"), multiprocessing.get_context("spawn")]
)
def test_pool_accepts_a_context(context):
    with shoal.Pool(1, context=context) as pool:
        assert pool.apply(abs, (-3,)) == 3
    with shoal.Pool(1, None, (), None, context) as pool:  # multiprocessing's positions
        assert pool.apply(abs, (-4,)) == 4


def test_pool_refuses_what_is_not_a_context():
    with pytest.raises(TypeError, match="context must be"):
        shoal.Pool(1, context="spawn")


@pytest.mark.parametrize("bad", [2.5, "2"])
def test_a_pool_size_of_the_wrong_type_says_so(bad):
    with pytest.raises(TypeError, match=rf"processes must be an int.*got {type(bad).__name__}"):
        shoal.Pool(bad)
    with pytest.raises(TypeError, match=rf"workers must be an int.*got {type(bad).__name__}"):
        shoal.ThreadPool(bad)
    with pytest.raises(ValueError, match="at least 1"):
        shoal.Pool(0)


def test_workers_are_named(make_pool):
    pool = make_pool(2)
    names = set(pool.map(mh.process_name, range(20), chunksize=1))
    assert names <= {"shoal-worker-0", "shoal-worker-1"}
    assert names, "a name came back"
    assert multiprocessing.current_process().name == "MainProcess"


def test_a_worker_that_imported_multiprocessing_first_is_named_too(make_pool):
    # multiprocessing imported by the initializer, before any task.
    pool = make_pool(1, initializer=__import__, initargs=("multiprocessing",))
    assert pool.apply(mh.process_name) == "shoal-worker-0"


def test_processes_are_named():
    q = shoal.Queue()
    p = shoal.Process(target=mh.put_process_name, args=(q,), name="Fred")
    p.start()
    assert q.get(timeout=30) == "Fred"
    p.join(30)
    p = shoal.Process(target=mh.put_process_name, args=(q,))
    p.start()
    assert q.get(timeout=30) == p.name
    p.join(30)
