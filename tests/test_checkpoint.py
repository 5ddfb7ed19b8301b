"""Checkpoint and resume: ``checkpoint=`` on the map family, ``shoal.cached``,
the store's file checks, and ``shoal checkpoint info/clear``.

Calls are counted through a side-effect file each task appends its argument
to, so "not recomputed" is observed, not assumed. The kill, Ctrl-C and
edit tests run the map in a child interpreter (with timeouts).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import helpers_mod as h
import numpy as np
import pytest
import shoal
from shoal.checkpoint import keys as _checkpoint

pytestmark = pytest.mark.timeout(60)

CHILD_TIMEOUT = 45


# --------------------------------------------------------------------- helpers
def logged_square(log: str, x):
    """x*x, noting the call in ``log``."""
    with open(log, "a") as f:
        f.write(f"{x!r}\n")
    return x * x


def logged_add(log: str, a, b):
    with open(log, "a") as f:
        f.write(f"{(a, b)!r}\n")
    return a + b


def fail_until_fixed(log: str, marker: str, x):
    """Raises for odd x until ``marker`` exists."""
    with open(log, "a") as f:
        f.write(f"{x!r}\n")
    if x % 2 and not os.path.exists(marker):
        raise ValueError(f"odd {x}")
    return x * 10


def add_unless_marked(log: str, marker: str, a, b):
    """a + b; raises for a % 13 == 3 until ``marker`` exists."""
    with open(log, "a") as f:
        f.write(f"{(a, b)!r}\n")
    if a % 13 == 3 and not os.path.exists(marker):
        raise ValueError(f"bad {a}")
    return a + b


def logged_lock(log: str, x):
    """A result that can't be pickled."""
    with open(log, "a") as f:
        f.write(f"{x!r}\n")
    return threading.Lock() if x == 3 else x


def array_sum(log: str, a):
    with open(log, "a") as f:
        f.write("call\n")
    return float(a.sum())


def calls(log) -> list[str]:
    try:
        with open(log) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def stored_tasks(path) -> int:
    return shoal._shoal.Store(str(path)).info()[1]


def wait_for_stored(path, n: int) -> None:
    deadline = time.monotonic() + 20
    while stored_tasks(path) != n:
        assert time.monotonic() < deadline, f"{stored_tasks(path)} tasks stored, expected {n}"
        time.sleep(0.05)


def child_env() -> dict:
    """A child interpreter imports this shoal (the one under test)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "run.sqlite")


@pytest.fixture
def log(tmp_path):
    return str(tmp_path / "calls.log")


# ----------------------------------------------------------- resume, in process
def no_task_may_be_sent(pool, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a task was sent")

    monkeypatch.setattr(pool._workers, "submit", refuse)


def test_a_rerun_with_everything_stored_sends_no_task(make_pool, store, log, monkeypatch):
    f = functools.partial(logged_square, log)
    # The automatic chunking depends on the input alone: one worker stores
    # what two workers find.
    assert make_pool(1).map(f, range(1000), checkpoint=store) == [x * x for x in range(1000)]
    assert len(calls(log)) == 1000 and stored_tasks(store) == 1000
    pool = make_pool(2)
    no_task_may_be_sent(pool, monkeypatch)
    assert pool.map(f, range(1000), checkpoint=store) == [x * x for x in range(1000)]
    assert pool.map(f, [], checkpoint=store) == []
    assert len(calls(log)) == 1000


def passes_gates(gates: str, x):
    """x, once the file ``gates`` + "0" exists (+ "2" for x == 2)."""
    while not os.path.exists(gates + ("2" if x == 2 else "0")):
        time.sleep(0.01)
    return x


def test_a_lost_commit_fails_the_call_whose_results_it_held(make_pool, store, tmp_path):
    pool = make_pool(2)
    assert pool.map(abs, [-1], checkpoint=store) == [1]  # the store exists
    gates = str(tmp_path / "gate")
    lost = pool.map_async(functools.partial(passes_gates, gates), [0, 1, 2], 1, checkpoint=store)
    db = sqlite3.connect(store, timeout=10)
    db.execute("ALTER TABLE results RENAME TO gone")  # the next commit fails
    db.commit()
    open(gates + "0", "w").close()
    time.sleep(1.0)  # items 0 and 1 came back; their commit failed
    db.execute("ALTER TABLE gone RENAME TO results")
    db.commit()
    db.close()
    # Another call on the same store is not told of rows it did not lose.
    assert pool.map(abs, [-5, -6], checkpoint=store) == [5, 6]
    open(gates + "2", "w").close()
    with pytest.raises(shoal.CheckpointError, match="results"):
        lost.get(timeout=20)


def test_another_chunking_is_computed_again(make_pool, store, log):
    # Chunks are what is stored: the same items in other chunks are not found.
    pool = make_pool(2)
    f = functools.partial(logged_square, log)
    assert pool.map(f, range(20), chunksize=5, checkpoint=store) == [x * x for x in range(20)]
    assert pool.map(f, range(20), chunksize=5, checkpoint=store) == [x * x for x in range(20)]
    assert len(calls(log)) == 20
    assert pool.map(f, range(20), chunksize=4, checkpoint=store) == [x * x for x in range(20)]
    assert len(calls(log)) == 40


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_starmap_resumes_in_order(make_pool, store, log, tmp_path, chunksize):
    pool = make_pool(2)
    marker = str(tmp_path / "fixed")
    f = functools.partial(add_unless_marked, log, marker)
    pairs = [(i, -2 * i) for i in range(40)]
    with pytest.raises(ValueError, match="bad"):
        pool.starmap(f, pairs, chunksize=chunksize, checkpoint=store)
    pool.close()
    pool.join()  # the other chunks still run after the map failed
    # The chunks without a failure are stored.
    size = chunksize or 1  # automatic: 40 items make chunks of one
    chunks = [pairs[i : i + size] for i in range(0, 40, size)]
    good = [c for c in chunks if all(a % 13 != 3 for a, _ in c)]
    assert 0 < len(good) < len(chunks)
    wait_for_stored(store, sum(map(len, good)))
    open(marker, "w").close()
    pool = make_pool(2)
    first = len(calls(log))
    assert pool.starmap(f, pairs, chunksize=chunksize, checkpoint=store) == [-i for i in range(40)]
    assert len(calls(log)) - first == 40 - sum(map(len, good))
    assert pool.starmap(f, pairs, chunksize=chunksize, checkpoint=store) == [-i for i in range(40)]
    assert len(calls(log)) - first == 40 - sum(map(len, good))


def test_map_and_starmap_of_one_function_do_not_share_results(make_pool, store, log):
    pool = make_pool(1)
    assert pool.map(h.identity, [(1, 2)], checkpoint=store) == [(1, 2)]
    # The same pickled item means f((1, 2)) for map and f(1, 2) for starmap.
    assert pool.starmap(h.add, [(1, 2)], checkpoint=store) == [3]
    assert pool.starmap(h.echo_args, [(1, 2)], checkpoint=store) == [((1, 2), {})]
    assert pool.map(h.echo_args, [(1, 2)], checkpoint=store) == [(((1, 2),), {})]


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_imap_resumes(make_pool, store, log, method, chunksize):
    pool = make_pool(2)
    f = functools.partial(logged_square, log)
    run = getattr(pool, method)
    first = list(run(f, iter(range(0, 60, 3)), chunksize=chunksize, checkpoint=store))
    assert sorted(first) == [x * x for x in range(0, 60, 3)]
    out = list(run(f, (x for x in range(60)), chunksize=chunksize, checkpoint=store))
    if method == "imap":
        assert out == [x * x for x in range(60)]
    else:
        assert sorted(out) == [x * x for x in range(60)]
    assert len(calls(log)) == 60


def test_imap_reads_an_infinite_input_lazily(make_pool, store):
    pool = make_pool(2)
    it = pool.imap(h.square, (x for x in iter(int, 1)), checkpoint=store)  # 0, 0, 0, ...
    assert [next(it) for _ in range(5)] == [0] * 5


def test_imap_then_close_and_join_stores_everything(store, log):
    pool = shoal.Pool(2)
    try:
        it = pool.imap_unordered(
            functools.partial(logged_square, log), range(300), checkpoint=store
        )
        pool.close()
        pool.join()
        assert sorted(it) == [x * x for x in range(300)]
    finally:
        pool.terminate()
    assert stored_tasks(store) == 300


def test_map_async_callbacks_and_an_empty_input(make_pool, store):
    pool = make_pool(2)
    got = []
    r = pool.map_async(h.square, range(10), callback=got.append, checkpoint=store)
    assert r.get(timeout=20) == [x * x for x in range(10)] and got == [r.get()]
    r = pool.map_async(h.square, range(10), callback=got.append, checkpoint=store)
    assert r.get(timeout=20) == got[0] and len(got) == 2  # all stored: ready at once
    assert pool.map(h.square, [], checkpoint=store) == []
    r = pool.starmap_async(h.add, [(1, 1)], checkpoint=store)
    assert r.get(timeout=20) == [2]


def test_a_thread_pool_resumes_too(store, log):
    f = functools.partial(logged_square, log)
    with shoal.ThreadPool(2) as pool:
        assert pool.map(f, range(50), checkpoint=store) == [x * x for x in range(50)]
        assert pool.map(f, range(50), checkpoint=store) == [x * x for x in range(50)]
    assert len(calls(log)) == 50 and stored_tasks(store) == 50


def test_pool_default_and_per_call_override(make_pool, tmp_path, log):
    default, other = str(tmp_path / "default.sqlite"), str(tmp_path / "other.sqlite")
    pool = make_pool(2, checkpoint=default)
    f = functools.partial(logged_square, log)
    pool.map(f, range(5))
    pool.map(f, range(5))
    assert len(calls(log)) == 5 and stored_tasks(default) == 5
    pool.map(f, range(5), checkpoint=False)
    assert len(calls(log)) == 10
    pool.map(f, range(5), checkpoint=other)
    assert len(calls(log)) == 15 and stored_tasks(other) == 5


def test_user_exceptions_are_not_stored(make_pool, store, log, tmp_path):
    pool = make_pool(2)
    marker = str(tmp_path / "fixed")
    f = functools.partial(fail_until_fixed, log, marker)
    xs = [2 * i for i in range(100)]
    xs[35], xs[72] = 71, 145  # odd: chunks 3 and 7 fail
    with pytest.raises(ValueError, match="odd") as info:
        pool.map(f, xs, chunksize=10, checkpoint=store)
    assert isinstance(info.value.__cause__, shoal.RemoteTraceback)
    pool.close()
    pool.join()
    # Every other chunk is stored as it finishes, also after the map failed.
    wait_for_stored(store, 80)
    open(marker, "w").close()
    pool = make_pool(2)
    first = len(calls(log))
    assert pool.map(f, xs, chunksize=10, checkpoint=store) == [x * 10 for x in xs]
    assert sorted(map(int, calls(log)[first:])) == sorted(xs[30:40] + xs[70:80])


def test_imap_raises_at_the_failing_item_and_goes_on(make_pool, store):
    pool = make_pool(2)
    it = pool.imap(functools.partial(h.raise_if_equal, bad=3), range(6), checkpoint=store)
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError):
        next(it)
    assert list(it) == [16, 25]


def test_a_result_that_cannot_be_pickled_fails_only_its_task(make_pool, store, log):
    pool = make_pool(1)
    f = functools.partial(logged_lock, log)
    # map: the chunk with the lock fails; the others are stored.
    with pytest.raises(shoal.SerializationError, match="lock"):
        pool.map(f, range(6), chunksize=2, checkpoint=store)
    wait_for_stored(store, 4)  # the last chunk may finish after the map failed
    # imap stores item by item (its own rows): only the lock's item fails.
    for _ in range(2):
        it = pool.imap(f, range(6), checkpoint=store)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(shoal.SerializationError):
            next(it)
        assert list(it) == [4, 5]
    assert calls(log).count("3") == 3 and len(calls(log)) == 13


def test_timeout_and_retries_apply_to_checkpointed_tasks(make_pool, store, tmp_path):
    pool = make_pool(2)
    marker = str(tmp_path / "crashed")
    f = functools.partial(h.exit_once_then_square, marker)
    assert pool.map(f, [1, 2, 3], chunksize=1, retries=1, checkpoint=store) == [1, 4, 9]
    slow = functools.partial(h.sleep_and_return, seconds=30)
    with pytest.raises(shoal.TaskTimeoutError):
        pool.map(slow, [1], timeout=0.5, checkpoint=store)
    assert stored_tasks(store) == 3


def test_checkpoint_key_replaces_the_arguments(make_pool, store, log):
    pool = make_pool(2)
    f = functools.partial(logged_square, log)
    pool.map(f, [1, 2], checkpoint=store, checkpoint_key=lambda x: x % 2)
    assert len(calls(log)) == 2
    # Keys 1 and 0 are stored: 5 has key 1, so it gets 1 (the result of 1).
    assert pool.map(f, [5, 4], checkpoint=store, checkpoint_key=lambda x: x % 2) == [1, 4]
    assert len(calls(log)) == 2
    with pytest.raises(TypeError, match="checkpoint_key"):
        pool.map(f, [1], checkpoint=store, checkpoint_key="id")


def test_bad_checkpoint_argument(make_pool, tmp_path):
    pool = make_pool(1)
    with pytest.raises(TypeError, match="checkpoint must be a file name"):
        pool.map(h.square, [1], checkpoint=3.5)
    nowhere = str(tmp_path / "no-such-dir" / "run.sqlite")
    with pytest.raises(shoal.CheckpointError, match="no-such-dir"):
        pool.map(h.square, [1], checkpoint=nowhere)


def test_a_stored_result_that_no_longer_unpickles_is_a_clear_error(tmp_path, store):
    (tmp_path / "thingmod.py").write_text(
        "class Thing:\n    def __init__(self, x):\n        self.x = x\n\n"
        "def make(x):\n    return Thing(x)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import thingmod

        with shoal.Pool(1) as pool:
            assert [t.x for t in pool.map(thingmod.make, range(4), checkpoint=store)] == [
                0,
                1,
                2,
                3,
            ]
            assert len(list(pool.imap(thingmod.make, range(4), checkpoint=store))) == 4
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("thingmod", None)
    (tmp_path / "thingmod.py").unlink()  # as if the class were renamed
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.CheckpointError, match="cannot be unpickled") as info:
            pool.map(thingmod.make, range(4), checkpoint=store)
        assert f"shoal checkpoint clear {store} --function thingmod.make" in str(info.value)
        with pytest.raises(shoal.CheckpointError, match="cannot be unpickled"):
            next(pool.imap(thingmod.make, range(4), checkpoint=store))


# -------------------------------------------------------------------- identity
def _compiled(source: str, name: str, first_line: int = 1):
    namespace: dict = {"__name__": "user_module"}
    exec(compile("\n" * (first_line - 1) + textwrap.dedent(source), "user.py", "exec"), namespace)
    return namespace[name]


def _identity(fn) -> bytes:
    return _checkpoint.function_identity(fn)[0]


def test_function_identity_follows_code_and_closures_not_position():
    src = """
        LIMIT = 3
        def f(x, scale=2):
            def inner(y):
                return y + 1
            return inner(x) * scale if x in {"a", "b"} else x
    """
    base = _identity(_compiled(src, "f"))
    assert _identity(_compiled(src, "f", first_line=40)) == base  # moved, not edited
    assert _identity(_compiled(src.replace("y + 1", "y + 2"), "f")) != base  # nested code
    assert _identity(_compiled(src.replace("scale=2", "scale=3"), "f")) != base  # default
    assert _identity(_compiled(src.replace('"b"', '"c"'), "f")) != base  # frozenset constant

    def make(k, fn=None):
        return lambda x: x + k

    assert _identity(make(1)) == _identity(make(1))
    assert _identity(make(1)) != _identity(make(2))  # a closure value
    assert _identity(functools.partial(h.add, 1)) != _identity(functools.partial(h.add, 2))
    assert _identity(h.square) != _identity(h.identity)


def test_function_identity_sees_through_wrappers():
    src = """
        import functools
        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*a):
                return fn(*a)
            return wrapper
        @functools.lru_cache(maxsize=None)
        def cached_f(x):
            return x + 1
        @functools.cache
        def cache_f(x):
            return x + 1
        @deco
        def wrapped_f(x):
            return x + 1
    """
    for name in ("cached_f", "cache_f", "wrapped_f"):
        base = _identity(_compiled(src, name))
        assert _identity(_compiled(src, name)) == base
        edited = src.replace("return x + 1", "return x + 2")
        assert _identity(_compiled(edited, name)) != base, f"{name}: an edit under the wrapper"


def test_a_class_used_as_the_task_function_is_keyed_by_its_code():
    src = """
        class Model:
            RATE = 2
            def __init__(self, x):
                self.y = x * 2
            @staticmethod
            def helper(x):
                return x - 1
    """
    base = _identity(_compiled(src, "Model"))
    assert _identity(_compiled(src, "Model", first_line=9)) == base
    assert _identity(_compiled(src.replace("x * 2", "x * 3"), "Model")) != base
    assert _identity(_compiled(src.replace("x - 1", "x - 2"), "Model")) != base
    assert _identity(_compiled(src.replace("RATE = 2", "RATE = 5"), "Model")) != base


def test_plain_globals_a_function_reads_are_part_of_its_key():
    src = """
        SCALE = 100
        NAMES = ("a", "b")
        def f(x):
            return x * SCALE if x not in NAMES else 0
    """
    base = _identity(_compiled(src, "f"))
    assert _identity(_compiled(src.replace("SCALE = 100", "SCALE = 10"), "f")) != base
    assert _identity(_compiled(src.replace('("a", "b")', '("a", "c")'), "f")) != base
    assert _identity(_compiled(src.replace("SCALE = 100", "SCALE = 100  # same"), "f")) == base


def test_a_global_that_is_not_plain_data_is_warned_about_once():
    f = _compiled(
        """
        import math
        TABLE = [1, 2, 3]
        def f(x):
            return TABLE[x] + math.floor(x)
        """,
        "f",
    )
    with pytest.warns(shoal.CheckpointKeyWarning, match="global 'TABLE', a list"):
        _identity(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _identity(f)  # once: no second warning (math, a module, is not data)


CHANGED_GLOBAL_SCRIPT = """
import sys, shoal

SCALE = int(sys.argv[2])

def scaled(x):
    return x * SCALE

if __name__ == "__main__":
    with shoal.Pool(2) as pool:
        print(pool.map(scaled, range(4), checkpoint=sys.argv[1]))
"""


def test_a_rerun_after_a_global_changed_computes_again(tmp_path, store):
    script = tmp_path / "scaled.py"
    script.write_text(CHANGED_GLOBAL_SCRIPT)

    def run(scale):
        done = subprocess.run(
            [sys.executable, str(script), store, str(scale)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run(100) == "[0, 100, 200, 300]\n"
    assert run(10) == "[0, 10, 20, 30]\n", "stale results from SCALE = 100"
    assert run(100) == "[0, 100, 200, 300]\n"


def test_cached_notices_changed_closures_and_defaults(store, log):
    state = {"offset": 1}

    def make():
        offset = state["offset"]

        def add(x, k=1):
            return x + offset + k

        return add

    @shoal.cached(store)
    def through(x):
        with open(log, "a") as f:
            f.write(f"{x!r}\n")
        return fn(x)

    fn = make()
    assert through(1) == 3
    state["offset"] = 10
    fn = make()  # the closure of `through` now holds another function
    assert through(1) == 12, "a result stored for the old closure was reused"
    fn.__defaults__ = (5,)
    assert through(1) == 16, "a result stored for the old default was reused"
    assert len(calls(log)) == 3
    assert through(1) == 16 and len(calls(log)) == 3


def test_frozenset_constants_hash_the_same_in_every_interpreter():
    # String hashing is randomised per process, and with it a frozenset's order.
    code = (
        "from shoal.checkpoint import keys as _checkpoint\n"
        "def f(x):\n    return x in {'alpha', 'beta', 'gamma', 'delta', 'epsilon'}\n"
        "print(_checkpoint.function_identity(f)[0].hex())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**child_env(), "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1


MAIN_CLASS_SCRIPT = """
import sys, shoal

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

def norm(p):
    print("ran", p.x, file=sys.stderr)
    return p.x * p.x + p.y * p.y

if __name__ == "__main__":
    with shoal.Pool(2) as pool:
        print(pool.map(norm, [Point(i, 1) for i in range(4)], checkpoint=sys.argv[1]))
"""


def test_a_map_over_instances_of_a_main_class_resumes(tmp_path, store):
    # Such arguments go to the workers by value (cloudpickle), whose pickle
    # differs in every run: the key must come from their plain pickle.
    script = tmp_path / "points.py"
    script.write_text(MAIN_CLASS_SCRIPT)
    runs = [
        subprocess.run(
            [sys.executable, str(script), store],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stdout for r in runs] == ["[1, 2, 5, 10]\n"] * 2
    assert runs[0].stderr.count("ran") == 4
    assert "ran" not in runs[1].stderr, "the second run computed nothing"


def test_a_large_numpy_argument_is_hashed_in_place_and_fast():
    a = np.random.default_rng(1).random(8_000_000)  # 64 MB
    salt = b"s"
    t0 = time.perf_counter()
    key = _checkpoint.task_keys(salt, [a])
    hashing = time.perf_counter() - t0
    t0 = time.perf_counter()
    a.copy()
    copying = time.perf_counter() - t0
    # BLAKE3 runs at several GB/s: about a memory copy, not a pickle's cost.
    assert hashing < max(0.5, 20 * copying), (hashing, copying)
    assert _checkpoint.task_keys(salt, [a.copy()]) == key
    b = a.copy()
    b[4_000_000] += 1
    assert _checkpoint.task_keys(salt, [b]) != key
    # Non-contiguous views are pickled in band, and keyed too.
    assert _checkpoint.task_keys(salt, [a[::2]]) == _checkpoint.task_keys(salt, [a.copy()[::2]])
    assert _checkpoint.task_keys(salt, [a[::2]]) != _checkpoint.task_keys(salt, [a[1::2]])


def test_map_over_numpy_arrays_resumes(make_pool, store, log):
    pool = make_pool(2)
    arrays = [np.full(100_000, i, dtype=np.int64) for i in range(6)]
    f = functools.partial(array_sum, log)
    assert pool.map(f, arrays[:3], checkpoint=store) == [i * 100_000.0 for i in range(3)]
    assert pool.map(f, arrays, checkpoint=store) == [i * 100_000.0 for i in range(6)]
    assert len(calls(log)) == 6


# ---------------------------------------------------------------------- cached
def test_cached_memoizes_across_calls_and_keyword_order(store, log):
    f = shoal.cached(store)(functools.partial(logged_add, log))
    assert f(a=1, b=2) == 3
    assert f(a=1, b=2) == 3
    assert f(b=2, a=1) == 3  # keyword order does not make another call
    assert f(1, b=2) == 3  # positional: another call shape, computed once more
    assert f(2, b=2) == 4
    assert calls(log) == ["(1, 2)", "(1, 2)", "(2, 2)"]


def test_cached_does_not_store_exceptions_or_unpicklable_results(store, log):
    f = shoal.cached(store)(functools.partial(logged_lock, log))
    assert f(1) == 1 and f(1) == 1
    assert f(3) is not f(3)  # a lock: returned, not stored
    assert calls(log) == ["1", "3", "3"]
    g = shoal.cached(store)(h.raise_value_error)
    for _ in range(2):
        with pytest.raises(ValueError):
            g("no")


def test_cached_key_function(store, log):
    f = shoal.cached(store, key=lambda log_, x: x // 10)(logged_square)
    assert f(log, 11) == 121
    assert f(log, 12) == 121
    assert len(calls(log)) == 1


def test_cached_works_in_workers_and_later_runs(make_pool, store, log):
    f = shoal.cached(store)(functools.partial(logged_square, log))
    pool = make_pool(2)
    assert pool.map(f, range(20)) == [x * x for x in range(20)]
    assert len(calls(log)) == 20
    assert pool.map(f, range(20)) == [x * x for x in range(20)]
    assert [f(x) for x in range(20)] == [x * x for x in range(20)]
    assert len(calls(log)) == 20
    # A new interpreter finds them too.
    code = (
        "import functools, sys, shoal\n"
        "from test_checkpoint import logged_square\n"
        f"f = shoal.cached({store!r})(functools.partial(logged_square, {log!r}))\n"
        "print(sum(f(x) for x in range(25)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == sum(x * x for x in range(25))
    assert sorted(map(int, calls(log)[20:])) == [20, 21, 22, 23, 24]


# ------------------------------------------------------------------- bad files
def _checkpoint_error(store) -> str:
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.CheckpointError) as info:
            pool.map(h.square, range(50), checkpoint=store)
    assert isinstance(info.value, shoal.ShoalError)
    assert store in str(info.value)
    return str(info.value)


def test_a_text_file_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "notes.txt")
    text = "my notes\n" * 1000
    with open(path, "w") as f:
        f.write(text)
    assert "not a shoal checkpoint store" in _checkpoint_error(path)
    with open(path) as f:
        assert f.read() == text
    with pytest.raises(shoal.CheckpointError, match="notes.txt"):
        shoal.cached(path)(h.square)(3)


def test_another_programs_database_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (x)")
    db.close()
    assert "another program" in _checkpoint_error(path)


def test_an_older_format_is_refused(store):
    shoal._shoal.Store(store).close()
    with sqlite3.connect(store) as db:
        db.execute(f"PRAGMA user_version = {shoal._shoal.STORE_FORMAT_VERSION - 1}")
    db.close()
    assert "older shoal" in _checkpoint_error(store)


def test_a_newer_format_is_refused(store):
    shoal._shoal.Store(store).close()  # not through the pool: it keeps its store open
    with sqlite3.connect(store) as db:
        db.execute(f"PRAGMA user_version = {shoal._shoal.STORE_FORMAT_VERSION + 1}")
    db.close()
    assert "newer shoal" in _checkpoint_error(store)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_is_refused(tmp_path, damage):
    path = str(tmp_path / "damaged.sqlite")
    code = (
        "import shoal, sys\n"
        "from helpers_mod import big_bytes\n"
        "with shoal.Pool(2) as pool:\n"
        f"    pool.map(big_bytes, [2000] * 2 + list(range(3000)), checkpoint={path!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=CHILD_TIMEOUT, check=True)
    size = os.path.getsize(path)
    assert size > 32 * 4096
    with open(path, "r+b") as f:
        if damage == "truncated":
            f.truncate(size // 3)
        else:
            for offset in range(4096, size, 4096):  # every page but the header's
                f.seek(offset)
                f.write(os.urandom(4096))
    message = _checkpoint_error(path)
    assert "damaged" in message or "not a shoal checkpoint store" in message


# ------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=CHILD_TIMEOUT,
    )


def test_cli_info_and_clear(make_pool, store):
    pool = make_pool(2)
    pool.map(h.square, range(30), checkpoint=store)
    pool.starmap(h.add, [(i, i) for i in range(12)], checkpoint=store)
    pool.map(lambda x: x, range(5), checkpoint=store)
    out = run_cli("checkpoint", "info", store)
    assert out.returncode == 0, out.stderr
    assert "47 tasks" in out.stdout
    assert "helpers_mod.square" in out.stdout and "helpers_mod.add" in out.stdout
    assert "<lambda>" in out.stdout
    assert store in out.stdout
    out = run_cli("checkpoint", "clear", store, "--function", "helpers_mod.square")
    assert out.returncode == 0, out.stderr
    assert "30 tasks" in out.stdout
    assert stored_tasks(store) == 17
    out = run_cli("checkpoint", "clear", store, "--function", "nothing_like_it")
    assert out.returncode == 1 and "no function named 'nothing_like_it'" in out.stderr
    assert "helpers_mod.add" in out.stderr  # says which names there are
    out = run_cli("checkpoint", "clear", store)
    assert out.returncode == 0 and "17 tasks" in out.stdout
    assert stored_tasks(store) == 0


def test_cli_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a store\n" * 100)
    out = run_cli("checkpoint", "info", str(text))
    assert out.returncode == 1
    assert str(text) in out.stderr and "not a shoal checkpoint store" in out.stderr
    missing = tmp_path / "missing.sqlite"
    out = run_cli("checkpoint", "info", str(missing))
    assert out.returncode == 1 and "no such file" in out.stderr
    assert not missing.exists()  # info does not create a store
    assert run_cli("checkpoint").returncode == 2
    assert run_cli("checkpoint", "info").returncode == 2
    assert run_cli("checkpoint", "drop", str(text)).returncode == 2


# ------------------------------------------------------- out of process: kills
CHILD = """
import functools, json, sys, time
import shoal

def work(log, delay, x):
    with open(log, "a") as f:
        f.write(f"{x}\\n")
    time.sleep(delay)
    return BODY

if __name__ == "__main__":
    store, log, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    chunksize = None if sys.argv[5] == "auto" else int(sys.argv[5])
    try:
        with shoal.Pool(2) as pool:
            out = pool.map(functools.partial(work, log, delay), range(n), chunksize=chunksize,
                           checkpoint=store)
    except KeyboardInterrupt:
        sys.exit(130)
    print(json.dumps(out))
"""


def write_child(tmp_path, body: str = "x * x", prefix: str = "") -> str:
    script = tmp_path / "job.py"
    script.write_text(prefix + CHILD.replace("BODY", body))
    return str(script)


def run_child(script, store, log, n=200, delay=0.0, chunksize="1") -> list:
    out = subprocess.run(
        [sys.executable, script, store, log, str(n), str(delay), chunksize],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def interrupt_child_midway(script, store, log, sig, chunksize="1") -> subprocess.Popen:
    """Starts the 200-task map and sends ``sig`` once 60 tasks have run."""
    child = subprocess.Popen(
        [sys.executable, script, store, log, "200", "0.02", chunksize],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + CHILD_TIMEOUT
    while len(calls(log)) < 60:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.005)
    child.send_signal(sig)
    child.communicate(timeout=CHILD_TIMEOUT)
    return child


@pytest.mark.parametrize("chunksize", ["1", "auto"])
def test_sigkill_midway_then_rerun_skips_finished_tasks(tmp_path, store, log, chunksize):
    script = write_child(tmp_path)
    child = interrupt_child_midway(script, store, log, signal.SIGKILL, chunksize)
    assert child.returncode == -signal.SIGKILL
    before = calls(log)
    stored = stored_tasks(store)
    assert 0 < stored < 200
    # What was lost: tasks running at the kill (automatic chunks of 200
    # items hold 4) and results from the last commit interval (0.25 s;
    # about 25 tasks here), not more.
    assert len(before) - stored <= 40, (len(before), stored)
    out = run_child(script, store, log, delay=0.02, chunksize=chunksize)
    assert out == [x * x for x in range(200)]
    rerun = calls(log)[len(before) :]
    assert len(rerun) == 200 - stored  # exactly the tasks not stored
    assert len(set(before) & set(rerun)) == len(before) - stored


def test_ctrl_c_midway_keeps_every_returned_result(tmp_path, store, log):
    script = write_child(tmp_path)
    child = interrupt_child_midway(script, store, log, signal.SIGINT)
    assert child.returncode == 130
    before = calls(log)
    stored = stored_tasks(store)
    # Everything that came back was committed at exit; only tasks still in
    # the workers' hands are lost.
    assert 0 <= len(before) - stored <= 8, (len(before), stored)
    assert run_child(script, store, log, delay=0.02) == [x * x for x in range(200)]
    assert len(calls(log)) - len(before) == 200 - stored


def test_an_edited_function_is_recomputed(tmp_path, store, log):
    script = write_child(tmp_path)
    assert run_child(script, store, log, n=20) == [x * x for x in range(20)]
    assert run_child(script, store, log, n=20) == [x * x for x in range(20)]
    assert len(calls(log)) == 20
    # Comments and blank lines above it move the function but do not edit it.
    write_child(tmp_path, prefix="# a comment\n\n\n")
    assert run_child(script, store, log, n=20) == [x * x for x in range(20)]
    assert len(calls(log)) == 20
    write_child(tmp_path, body="x * x + 1")
    assert run_child(script, store, log, n=20) == [x * x + 1 for x in range(20)]
    assert len(calls(log)) == 40


def test_two_pools_in_two_processes_write_one_store(tmp_path, store):
    script = write_child(tmp_path)
    logs = [str(tmp_path / f"calls{i}.log") for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, script, store, log, "300", "0.001", "1"],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    for child in children:
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, err
        assert json.loads(out) == [x * x for x in range(300)]
    assert stored_tasks(store) == 600  # two functions (partials of two logs)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    for log in logs:
        assert run_child(script, store, log, n=300, delay=0.001) == [x * x for x in range(300)]
        assert len(calls(log)) == 300
