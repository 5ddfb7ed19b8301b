"""dask on shoal: ``dask.compute(x, scheduler=executor)`` and
``dask.config.set(scheduler=executor)`` with shoal's executors, results
equal to dask's own schedulers, and traces that name dask's tasks."""

from __future__ import annotations

import operator

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest
import shoal

pytestmark = [
    pytest.mark.timeout(120),
    # dask's own modules warn about their deprecations on import.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module", params=["process", "thread"])
def executor(request):
    cls = shoal.ProcessPoolExecutor if request.param == "process" else shoal.ThreadPoolExecutor
    with cls(max_workers=2) as executor:
        yield executor


def test_an_array_reduction_over_more_chunks_than_workers(executor):
    x = np.random.default_rng(0).random((400, 300))
    a = da.from_array(x, chunks=(50, 75))  # 32 chunks for 2 workers
    assert a.npartitions == 32
    exprs = (a.mean(), a.std(axis=0), (a + a.T[:300, :300].sum()).max())
    ours = dask.compute(*exprs, scheduler=executor)
    for scheduler in ("threads", "sync"):
        theirs = dask.compute(*exprs, scheduler=scheduler)
        for mine, other in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(mine, other, rtol=1e-12)
    np.testing.assert_allclose(ours[0], x.mean(), rtol=1e-12)


def test_a_random_array_made_in_the_workers(executor):
    a = da.random.default_rng(7).random((2_000, 2_000), chunks=(250, 500))
    total = a.sum()
    assert dask.compute(total, scheduler=executor)[0] == pytest.approx(
        dask.compute(total, scheduler="sync")[0], rel=1e-12
    )


def test_delayed(executor):
    @dask.delayed
    def inc(x):
        return x + 1

    @dask.delayed
    def add(x, y):
        return x + y

    layer = [inc(i) for i in range(64)]
    while len(layer) > 1:
        layer = [add(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    total = layer[0]
    assert total.compute(scheduler=executor) == total.compute(scheduler="sync") == sum(range(1, 65))


def test_bag(executor):
    bag = db.from_sequence(range(1_000), npartitions=8)
    result = bag.map(lambda x: x * x).filter(lambda x: x % 3 == 0).fold(operator.add)
    assert result.compute(scheduler=executor) == result.compute(scheduler="sync")
    words = db.from_sequence(["a b", "b c", "c a b"] * 20, npartitions=4)
    counts = words.map(str.split).flatten().frequencies()
    assert sorted(counts.compute(scheduler=executor)) == sorted(counts.compute(scheduler="sync"))


def test_dask_config_set_scheduler(executor):
    a = da.ones((100, 100), chunks=(10, 10))
    with dask.config.set(scheduler=executor):
        assert a.sum().compute() == 10_000
        assert dask.compute(a.mean())[0] == 1.0


def test_an_error_in_a_task_reaches_compute(executor):
    @dask.delayed
    def boom(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 3"):
        boom(3).compute(scheduler=executor)


def test_many_tiny_tasks(executor):
    tasks = [dask.delayed(operator.add)(i, 1) for i in range(2_000)]
    assert sum(dask.compute(*tasks, scheduler=executor)) == sum(range(1, 2_001))


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_the_trace_names_tasks_by_their_dask_keys(kind):
    cls = shoal.ProcessPoolExecutor if kind == "process" else shoal.ThreadPoolExecutor
    a = da.from_array(np.arange(1_000.0), chunks=100)
    total = a.sum()
    with cls(max_workers=2, trace=True) as executor:
        assert total.compute(scheduler=executor) == np.arange(1_000.0).sum()
        trace = executor.trace()
    keys = {str(k) for k in dict(dask.optimize(total)[0].__dask_graph__())}
    names = [c.function for c in trace.calls]
    assert names and all(c.method == "submit" for c in trace.calls)
    # Every chunk's task, by its key; and the final one dask adds (with the
    # aggregation fused into it) when computing.
    chunks = {k for k in keys if "array-sum" in k}
    assert len(chunks) == 10 and chunks <= set(names), chunks - set(names)
    assert all(n in keys or "finalize" in n for n in names), names
    assert len(trace.tasks) == len(names)
