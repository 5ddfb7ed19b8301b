"""joblib and scikit-learn on shoal (``shoal.integrations.joblib``): the
backend ``"shoal"`` under ``joblib.Parallel`` with the real libraries, and
a scikit-learn grid search whose results equal loky's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import helpers_mod as h
import joblib
import numpy as np
import pytest
import shm_helpers as sh
import shoal
from joblib import Parallel, delayed, parallel_config

pytestmark = pytest.mark.timeout(120)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, *sys.path]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def failing_at(i, bad):
    if i == bad:
        raise KeyError(f"item {i} is bad")
    return i


def inner_sum(n):
    """A task that runs a Parallel call of its own."""
    return sum(Parallel(n_jobs=2)(delayed(h.square)(i) for i in range(n)))


def pid_of(_):
    return os.getpid()


@pytest.fixture
def shoal_backend():
    with parallel_config(backend="shoal"):
        yield


# ------------------------------------------------------------ registration
def test_importing_shoal_does_not_import_joblib():
    done = run_python(
        """
        import sys
        import shoal
        shoal.ProcessPoolExecutor  # the executors either
        assert "joblib" not in sys.modules
        """
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("first", ["shoal", "joblib"])
def test_the_backend_is_registered_whichever_is_imported_first(first):
    second = "joblib" if first == "shoal" else "shoal"
    done = run_python(
        f"""
        import {first}
        import {second}
        from joblib import Parallel, delayed, parallel_config
        from helpers_mod import square
        if __name__ == "__main__":
            with parallel_config(backend="shoal"):
                print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 4, 9, 16]"


# ---------------------------------------------------- joblib's behaviour
@pytest.mark.parametrize("batch_size", ["auto", 1, 7])
def test_results_come_in_order(shoal_backend, batch_size):
    got = Parallel(n_jobs=2, batch_size=batch_size)(delayed(h.square)(i) for i in range(200))
    assert got == [i * i for i in range(200)]


def test_lambdas_and_closures_run(shoal_backend):
    offset = 10
    got = Parallel(n_jobs=2)(delayed(lambda x: x + offset)(i) for i in range(5))
    assert got == [10, 11, 12, 13, 14]


def test_an_error_comes_back_with_the_worker_s_traceback(shoal_backend):
    with pytest.raises(KeyError, match="item 13 is bad") as info:
        Parallel(n_jobs=2)(delayed(failing_at)(i, 13) for i in range(40))
    cause = info.value.__cause__
    assert isinstance(cause, shoal.RemoteTraceback)
    assert "failing_at" in str(cause) and 'raise KeyError(f"item {i} is bad")' in str(cause)
    # The workers stay, and are used again.
    assert Parallel(n_jobs=2)(delayed(h.square)(i) for i in range(3)) == [0, 1, 4]


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators(shoal_backend, return_as):
    results = Parallel(n_jobs=2, return_as=return_as)(delayed(h.square)(i) for i in range(50))
    assert not isinstance(results, list)
    got = list(results)
    expected = [i * i for i in range(50)]
    assert got == expected if return_as == "generator" else sorted(got) == expected


def test_nested_calls(shoal_backend):
    got = Parallel(n_jobs=2)(delayed(inner_sum)(n) for n in (3, 4, 5))
    assert got == [5, 14, 30]


def test_n_jobs_values(shoal_backend):
    here = os.getpid()
    assert set(Parallel(n_jobs=1)(delayed(pid_of)(i) for i in range(3))) == {here}
    assert set(Parallel(n_jobs=None)(delayed(pid_of)(i) for i in range(3))) == {here}
    pids = set(Parallel(n_jobs=2, batch_size=1)(delayed(pid_of)(i) for i in range(20)))
    assert here not in pids and 1 <= len(pids) <= 2
    assert Parallel(n_jobs=-1)._effective_n_jobs() == shoal.cpu_count()
    assert Parallel(n_jobs=-2)._effective_n_jobs() == max(shoal.cpu_count() - 1, 1)
    with pytest.raises(ValueError, match="n_jobs == 0"):
        Parallel(n_jobs=0)(delayed(h.square)(i) for i in range(2))


def test_workers_are_kept_between_calls(shoal_backend):
    first = set(Parallel(n_jobs=2, batch_size=1)(delayed(pid_of)(i) for i in range(10)))
    second = set(Parallel(n_jobs=2, batch_size=1)(delayed(pid_of)(i) for i in range(10)))
    assert second <= set(shoal.integrations.joblib.current_executor().worker_pids())
    assert first & second


def test_verbose_reports_progress(shoal_backend, capsys):
    Parallel(n_jobs=2, verbose=10)(delayed(h.square)(i) for i in range(8))
    err = capsys.readouterr().err
    assert "Using backend ShoalBackend with 2 concurrent workers." in err
    assert "Done   8 out of   8" in err


def test_timeout(shoal_backend):
    import multiprocessing

    with pytest.raises(multiprocessing.TimeoutError):  # joblib's, as with loky
        Parallel(n_jobs=2, timeout=0.5)(delayed(time.sleep)(t) for t in (0.0, 5.0))


def test_a_dead_worker_fails_its_batch_and_the_next_call_runs(shoal_backend):
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool) as info:
        Parallel(n_jobs=2)(delayed(h.exit_process)(3) for _ in range(1))
    assert isinstance(info.value, shoal.WorkerLostError)
    assert Parallel(n_jobs=2)(delayed(h.square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_shoal_options_through_parallel_config(tmp_path):
    marker = str(tmp_path / "died-once")
    with parallel_config(backend="shoal", retries=1):
        got = Parallel(n_jobs=2)(delayed(h.exit_once_then_square)(marker, i) for i in (3,))
    assert got == [9]
    with parallel_config(backend="shoal", trace=True):
        Parallel(n_jobs=2, batch_size=4)(delayed(h.square)(i) for i in range(8))
        trace = shoal.integrations.joblib.current_executor().trace()
    # Each batch named after its function and size (joblib may split them).
    names = [c.function for c in trace.calls]
    assert all(n.startswith("square x") for n in names), names
    assert sum(int(n.rsplit("x", 1)[1]) for n in names) == 8


# -------------------------------------------------------- large arrays
def test_an_array_given_to_many_tasks_is_copied_once_and_read_only(shoal_backend):
    a = np.arange(1_000_000, dtype=np.float64)  # 8 MB
    seen = Parallel(n_jobs=2, batch_size=2)(delayed(sh.describe)(a) for _ in range(16))
    assert {s["sum"] for s in seen} == {float(a.sum())}
    assert not any(s["writeable"] for s in seen), "read-only, as joblib's memmaps"
    assert len({s["segment"] for s in seen}) == 1, "one copy for the whole call"
    # The next call of the same Parallel reuses the copy while the array is
    # unchanged, and sees a change.
    par = Parallel(n_jobs=2, batch_size=2)
    first = par(delayed(sh.describe)(a) for _ in range(4))
    second = par(delayed(sh.describe)(a) for _ in range(4))
    assert {s["segment"] for s in first} == {s["segment"] for s in second}
    a[0] = 1e9
    changed = par(delayed(sh.describe)(a) for _ in range(4))
    assert {s["sum"] for s in changed} == {float(a.sum())}
    a[0] = 0.0
    # A writable memmap mode gives each batch a writable copy of its own.
    writable = Parallel(n_jobs=2, batch_size=2, mmap_mode="c")(
        delayed(sh.try_write)(a) for _ in range(4)
    )
    assert writable == [None] * 4
    assert a[0] == 0.0, "the parent's array is untouched"


# -------------------------------------------------------- scikit-learn
def test_grid_search_equals_loky_s():
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, cross_val_score

    x, y = load_digits(return_X_y=True)
    x, y = x[:600], y[:600]
    grid = {"n_estimators": [5, 10], "max_depth": [4, 8]}

    def search():
        forest = RandomForestClassifier(random_state=0)
        return GridSearchCV(forest, grid, cv=3, n_jobs=2).fit(x, y)

    with parallel_config(backend="loky"):
        loky = search()
        loky_scores = cross_val_score(RandomForestClassifier(5, random_state=0), x, y, n_jobs=2)
    with parallel_config(backend="shoal"):
        ours = search()
        scores = cross_val_score(RandomForestClassifier(5, random_state=0), x, y, n_jobs=2)
        forest = RandomForestClassifier(10, random_state=0, n_jobs=2).fit(x, y)
    np.testing.assert_array_equal(
        ours.cv_results_["mean_test_score"], loky.cv_results_["mean_test_score"]
    )
    assert ours.best_params_ == loky.best_params_
    np.testing.assert_array_equal(scores, loky_scores)
    reference = RandomForestClassifier(10, random_state=0, n_jobs=1).fit(x, y)
    np.testing.assert_array_equal(forest.predict(x), reference.predict(x))
    assert joblib.parallel.get_active_backend()[0].__class__.__name__ != "ShoalBackend"


def test_calls_with_other_n_jobs_on_other_threads_do_not_break_each_other():
    import concurrent.futures as cf

    def run(n_jobs):
        with parallel_config(backend="shoal"):
            return [
                Parallel(n_jobs=n_jobs, batch_size=1)(
                    delayed(h.sleep_and_return)(i, 0.01) for i in range(20)
                )
                for _ in range(3)
            ]

    with cf.ThreadPoolExecutor(2) as threads:
        results = list(threads.map(run, [2, 3]))
    assert all(r == list(range(20)) for calls in results for r in calls)
