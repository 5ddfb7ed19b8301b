"""``shoal.Manager()``: proxies ported from CPython's ``_TestContainers``,
used from Pool tasks and Processes, and what happens when the manager's
process is gone (a clear error, never a hang)."""

from __future__ import annotations

import collections.abc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import mp_helpers as mh
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def manager():
    with shoal.Manager() as m:
        yield m


def test_list(manager):
    a = manager.list(list(range(10)))
    assert a[:] == list(range(10))
    b = manager.list()
    assert b[:] == []
    b.extend(list(range(5)))
    assert b[:] == list(range(5))
    assert b[2] == 2
    assert b[2:10] == [2, 3, 4]
    b *= 2
    assert b[:] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert b + [5, 6] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]
    assert a[:] == list(range(10))
    d = [a, b]
    e = manager.list(d)
    assert [element[:] for element in e] == [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
    ]
    f = manager.list([a])
    a.append("hello")
    assert f[0][:] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "hello"]


def test_list_isinstance(manager):
    a = manager.list()
    assert isinstance(a, collections.abc.MutableSequence)
    for name in (
        "__contains__", "__delitem__", "__getitem__", "__iadd__", "__len__", "__reversed__",
        "__setitem__", "append", "clear", "count", "extend", "index", "insert", "pop",
        "remove", "reverse",
    ):  # fmt: skip
        assert callable(getattr(a, name)), name


def test_list_iter(manager):
    a = manager.list(list(range(10)))
    it = iter(a)
    assert list(it) == list(range(10))
    assert list(it) == []  # exhausted
    # list modified during iteration
    it = iter(a)
    a[0] = 100
    assert next(it) == 100


def test_list_proxy_in_list(manager):
    a = manager.list([manager.list(range(3)) for _ in range(3)])
    assert [inner[:] for inner in a] == [[0, 1, 2]] * 3
    a[0][-1] = 55
    assert a[0][:] == [0, 1, 55]
    for i in range(1, 3):
        assert a[i][:] == [0, 1, 2]
    assert a[1].pop() == 2
    assert len(a[1]) == 2
    for i in range(0, 3, 2):
        assert len(a[i]) == 3


def test_dict(manager):
    d = manager.dict()
    indices = list(range(65, 70))
    for i in indices:
        d[i] = chr(i)
    assert d.copy() == {i: chr(i) for i in indices}
    assert sorted(d.keys()) == indices
    assert sorted(d.values()) == [chr(i) for i in indices]
    assert sorted(d.items()) == [(i, chr(i)) for i in indices]
    assert d == {i: chr(i) for i in indices}
    assert str(d) == str({i: chr(i) for i in indices})


def test_dict_isinstance(manager):
    a = manager.dict()
    assert isinstance(a, collections.abc.MutableMapping)
    for name in (
        "__contains__", "__delitem__", "__eq__", "__getitem__", "__iter__", "__len__",
        "__ne__", "__setitem__", "clear", "get", "items", "keys", "pop", "popitem",
        "setdefault", "update", "values",
    ):  # fmt: skip
        assert callable(getattr(a, name)), name


def test_dict_iter(manager):
    d = manager.dict()
    indices = list(range(65, 70))
    for i in indices:
        d[i] = chr(i)
    it = iter(d)
    assert list(it) == indices
    assert list(it) == []  # exhausted


def test_dict_proxy_nested(manager):
    pets = manager.dict(ferrets=2, hamsters=4)
    supplies = manager.dict(water=10, feed=3)
    d = manager.dict(pets=pets, supplies=supplies)
    assert supplies["water"] == 10
    assert d["supplies"]["water"] == 10
    d["supplies"]["blankets"] = 5
    assert supplies["blankets"] == 5
    assert d["supplies"]["blankets"] == 5
    d["supplies"]["water"] = 7
    assert supplies["water"] == 7
    assert d["supplies"]["water"] == 7
    del pets
    del supplies
    assert d["pets"]["ferrets"] == 2
    d["supplies"]["blankets"] = 11
    assert d["supplies"]["blankets"] == 11
    pets = d["pets"]
    supplies = d["supplies"]
    supplies["water"] = 7
    assert supplies["water"] == 7
    assert d["supplies"]["water"] == 7
    d.clear()
    assert len(d) == 0
    assert supplies["water"] == 7
    assert pets["hamsters"] == 4
    lst = manager.list([pets, supplies])
    lst[0]["marmots"] = 1
    assert pets["marmots"] == 1
    assert lst[0]["marmots"] == 1
    outer = manager.list([[88, 99], lst])
    assert isinstance(outer[0], list)  # not a ListProxy
    assert outer[-1][-1]["feed"] == 3


def test_nested_queue(manager):
    a = manager.list()  # a queue inside a list
    a.append(manager.Queue())
    a[0].put(123)
    assert a[0].get(timeout=10) == 123
    b = manager.dict()  # and inside a dict
    b[0] = manager.Queue()
    b[0].put(456)
    assert b[0].get(timeout=10) == 456


def test_namespace(manager):
    n = manager.Namespace()
    n.name = "Bob"
    n.job = "Builder"
    n._hidden = "hidden"
    assert (n.name, n.job) == ("Bob", "Builder")
    del n.job
    assert str(n) == "Namespace(name='Bob')"
    assert hasattr(n, "name")
    assert not hasattr(n, "job")


def test_value_and_array(manager):
    v = manager.Value("i", 3)
    v.value += 1
    assert v.value == 4 and v.get() == 4
    v.set("any object")  # as multiprocessing's manager Value
    assert v.value == "any object"
    a = manager.Array("i", [1, 2, 3])
    a[0] = 7
    assert list(a[:]) == [7, 2, 3]
    assert len(a) == 3


def test_errors_come_back_as_themselves(manager):
    d = manager.dict()
    with pytest.raises(KeyError):
        d["missing"]
    lst = manager.list()
    with pytest.raises(IndexError):
        lst[3]
    assert d.get("missing", 5) == 5


def test_proxies_in_pool_tasks_and_processes(manager, make_pool):
    d, lst, ns = manager.dict(), manager.list(), manager.Namespace(last=None)
    pool = make_pool(2)
    assert pool.starmap(mh.manager_work, [(d, lst, ns, i) for i in range(8)]) == list(range(8))
    assert d.copy() == {i: i * i for i in range(8)}
    assert sorted(lst) == list(range(8))
    assert ns.last in range(8)
    p = shoal.Process(target=mh.manager_work, args=(d, lst, ns, 99))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert d[99] == 99 * 99 and ns.last == 99


def test_a_lock_around_read_modify_write(manager, make_pool):
    d = manager.dict(n=0)
    lock = manager.Lock()
    pool = make_pool(2)
    pool.starmap(mh.manager_locked_add, [(d, lock, 50)] * 4, chunksize=1)
    assert d["n"] == 200


def test_shoal_objects_from_a_manager_are_shared_memory(manager):
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event"):
        assert type(getattr(manager, name)()) is getattr(shoal, name)
    assert type(manager.Barrier(2)) is shoal.Barrier
    assert type(manager.Queue()) is shoal.Queue
    assert type(manager.JoinableQueue()) is shoal.JoinableQueue


def test_proxies_pickle_with_plain_pickle(manager):
    d = manager.dict(k="v")
    copy = pickle.loads(pickle.dumps(d))
    assert copy["k"] == "v"


def test_a_killed_manager_is_a_clear_error_not_a_hang(make_pool):
    m = shoal.Manager()
    d = m.dict(k=1)
    pool = make_pool(1)
    assert pool.apply(mh.use_manager_dict, (d,)) == 1
    os.kill(m._process.pid, signal.SIGKILL)
    m.join(10)
    t = time.monotonic()
    with pytest.raises(shoal.ManagerError, match="killed by SIGKILL"):
        d["k"] = 2
    with pytest.raises(shoal.ManagerError, match="is gone"):
        pool.apply(mh.use_manager_dict, (d,))
    assert time.monotonic() - t < 10
    m.shutdown()


def test_shutdown_and_with_block():
    with shoal.Manager() as m:
        d = m.dict()
        d[1] = 1
        pid = m._process.pid
    assert not m._process.is_alive()
    with pytest.raises(shoal.ManagerError):
        d[2] = 2
    with pytest.raises(shoal.ManagerError, match="shut down"):
        m.dict()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_manager_dies_with_its_parent(tmp_path):
    # The parent is killed: its manager process goes too (nothing orphaned).
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            import shoal
            m = shoal.Manager()
            d = m.dict()
            print(m._process.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            manager_pid = int(proc.stdout.readline())
            proc.kill()
            proc.wait(10)
            deadline = time.monotonic() + 10
            while True:
                try:
                    os.kill(manager_pid, 0)
                except ProcessLookupError:
                    break
                assert time.monotonic() < deadline, "the manager outlived its parent"
                time.sleep(0.05)
        finally:
            proc.kill()


def test_a_stranger_with_the_address_but_not_the_token_is_refused(manager):
    import socket

    from shoal.sync.pipe import connect_fd

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(manager.address)
    conn = connect_fd(sock.fileno())
    sock.close()
    conn.send(b"not the token")
    with pytest.raises(EOFError):
        conn.recv()
