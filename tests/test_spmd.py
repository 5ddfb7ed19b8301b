"""``shoal.spmd(fn, n, *args)``: a function on n ranks from a running
program or notebook, returning what each rank returned, with their prints
shown here (tested in a real Jupyter kernel too)."""

from __future__ import annotations

import os
import queue
import textwrap
import time

import pytest
import shoal

pytestmark = [pytest.mark.timeout(120)]


def ranks_and_sums(scale, offset=0):
    from shoal import MPI

    comm = MPI.COMM_WORLD
    print(f"hello from {comm.rank}")
    return comm.rank, comm.allreduce(comm.rank * scale) + offset


def test_results_come_back_in_rank_order(capfd):
    results = shoal.spmd(ranks_and_sums, 3, 10, offset=1)
    assert results == [(0, 31), (1, 31), (2, 31)]
    out = capfd.readouterr().out
    for r in range(3):
        assert f"[rank {r}] hello from {r}" in out


def test_closures_and_large_arrays_travel_both_ways():
    import numpy as np

    base = np.arange(1_000_000, dtype="f8")  # 8 MB, in a closure

    def work():
        from shoal import MPI

        comm = MPI.COMM_WORLD
        mine = comm.bcast(base * 2 if comm.rank == 0 else None)
        return mine[: 3 + comm.rank] + comm.rank

    got = shoal.spmd(work, 2)
    assert [g.tolist() for g in got] == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0, 7.0]]


def failing():
    from shoal import MPI

    if MPI.COMM_WORLD.rank == 1:
        raise KeyError("only rank 1 fails")
    return "fine"


def test_an_exception_in_a_rank_is_raised_here():
    with pytest.raises(KeyError, match="only rank 1 fails") as info:
        shoal.spmd(failing, 2)
    assert "(raised by rank 1 of shoal.spmd)" in info.value.__notes__
    assert isinstance(info.value.__cause__, shoal.RemoteTraceback)
    assert "raise KeyError" in str(info.value.__cause__)


def stuck():
    from shoal import MPI

    comm = MPI.COMM_WORLD
    return comm.recv(source=1 - comm.rank)


def test_a_deadlock_in_the_ranks_is_raised_here():
    started = time.monotonic()
    with pytest.raises(shoal.DeadlockError, match="waits for rank"):
        shoal.spmd(stuck, 2)
    assert time.monotonic() - started < 20


def killed():
    import os
    import signal

    from shoal import MPI

    if MPI.COMM_WORLD.rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return MPI.COMM_WORLD.recv(source=0)


def test_a_killed_rank_is_reported():
    with pytest.raises(shoal.RankLostError, match="killed by SIGKILL") as info:
        shoal.spmd(killed, 2)
    assert info.value.rank == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive int"):
        shoal.spmd(ranks_and_sums, 0, 1)
    with pytest.raises(TypeError, match="needs a function"):
        shoal.spmd("not a function", 2)


@pytest.mark.isolated
def test_nothing_is_left_behind():
    """No descriptors, mappings or processes outlive a call."""

    def shoal_maps():
        with open("/proc/self/maps") as f:
            return sum("shoal" in line for line in f)

    shoal.spmd(ranks_and_sums, 2, 1)  # warm up (imports, the launcher thread)
    fds = len(os.listdir("/proc/self/fd"))
    maps = shoal_maps()
    for _ in range(3):
        shoal.spmd(ranks_and_sums, 2, 1)
    assert len(os.listdir("/proc/self/fd")) == fds
    assert shoal_maps() == maps
    children = []
    for task in os.listdir("/proc/self/task"):  # ranks are started from shoal's own thread
        with open(f"/proc/self/task/{task}/children") as f:
            children += f.read().split()
    assert children == []


CELL = textwrap.dedent(
    """
    import shoal

    def hello(greeting):
        from shoal import MPI
        comm = MPI.COMM_WORLD
        print(greeting, "from rank", comm.rank)
        return comm.allgather(comm.rank)

    print("results", shoal.spmd(hello, 2, "hi"))
    """
)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_the_ranks_prints_appear_in_the_notebook_cell():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(
        kernel_name="python3", env=dict(os.environ), startup_timeout=60
    )
    try:
        msg_id = client.execute(CELL)
        messages = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                msg = client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    stdout = "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )
    assert "[rank 0] hi from rank 0" in stdout and "[rank 1] hi from rank 1" in stdout
    assert "results [[0, 1], [0, 1]]" in stdout
