"""``shoal run`` never hangs: a rank that dies, exits or raises makes the
ranks waiting for it raise ``RankLostError``; ranks that all wait for each
other raise ``DeadlockError``; mismatched collectives raise
``CollectiveMismatchError``; ``--timeout``, Ctrl-C and a killed launcher
stop every rank. Every program runs in its own processes, with a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mpi_helpers import lines, program, rank_lines, run, untagged

pytestmark = pytest.mark.timeout(120)


def line_of(path: str, text: str) -> int:
    """The number of the first line of `path` that holds `text`."""
    with open(path, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def shoal(path: str, n: int, *args: str, timeout: float = 60):
    started = time.monotonic()
    done = run("shoal", path, n, *args, timeout=timeout)
    return done, time.monotonic() - started


def test_a_killed_rank_fails_the_ranks_waiting_for_it(tmp_path):
    path = program(
        tmp_path,
        """
        import os, signal, time
        if rank == 1:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        t0 = time.monotonic()
        try:
            if rank == 0:
                comm.recv(source=1)                  # point to point
            else:
                comm.bcast(None, root=1)             # a collective rooted at the dead rank
        except Exception as exc:
            waited = f"{time.monotonic() - t0:.1f}"
            out(type(exc).__name__, exc.rank, exc.signal, exc.exitcode, waited)
            out(str(exc))
        """,
    )
    done, took = shoal(path, 3)
    assert done.returncode == 128 + signal.SIGKILL, done.stdout + done.stderr
    found = lines(done)
    for r in (0, 2):
        kind, rank, sig, code, waited = rank_lines(found, r)[0].split()
        assert (kind, rank, sig, code) == ("RankLostError", "1", str(int(signal.SIGKILL)), "None")
        assert float(waited) < 1.5, found  # about 0.2 s of sleep, then at once
    assert "rank 1 killed by SIGKILL while rank 0 waits in recv(source=1" in done.stdout
    assert "prog.py:" in done.stdout  # the line it waited at
    assert "rank 1 killed by SIGKILL first" in done.stderr
    assert took < 20


def test_a_rank_that_exits_or_raises_is_named_with_its_exit_code(tmp_path):
    path = program(
        tmp_path,
        """
        import sys
        if rank == 1:
            sys.exit(3)
        if rank == 2:
            raise ValueError("bad input in rank 2")
        try:
            comm.recv(source=1)
        except Exception as exc:
            out(type(exc).__name__, exc.rank, exc.exitcode)
        try:
            comm.barrier()
        except Exception as exc:
            out(type(exc).__name__, "in barrier:", exc.rank)
        """,
    )
    done, _ = shoal(path, 3)
    assert done.returncode in (1, 3), done.stdout + done.stderr  # the first rank to fail
    found = lines(done)
    assert rank_lines(found, 0)[0] == "RankLostError 1 3"
    assert rank_lines(found, 0)[1].startswith("RankLostError in barrier:")
    assert "[rank 2] ValueError: bad input in rank 2" in done.stderr  # its traceback, tagged
    assert "[rank 2] Traceback" in done.stderr


def test_ranks_waiting_for_each_other_raise_deadlock_error(tmp_path):
    path = program(
        tmp_path,
        """
        if rank < 2:
            comm.recv(source=1 - rank, tag=5)        # both receive first
            comm.send("never", dest=1 - rank)
        else:
            comm.barrier()
        """,
    )
    done, took = shoal(path, 3)
    assert done.returncode == 1, done.stdout + done.stderr
    text = "\n".join(untagged(done.stderr))
    assert text.count("DeadlockError: deadlock") == 3  # every rank raised
    recv, barrier = line_of(path, "comm.recv"), line_of(path, "comm.barrier")
    for r in (0, 1):
        assert (
            f"rank {r} waits for rank {1 - r} in recv(source={1 - r}, tag=5) on COMM_WORLD "
            f"at prog.py:{recv}"
        ) in text
    assert f"barrier() on COMM_WORLD (collective #1) at prog.py:{barrier}" in text
    assert "rank 2 waits" in text
    assert "shoal run: deadlock" in done.stderr
    assert took < 20


def test_a_rank_waiting_for_one_that_finished_is_a_deadlock(tmp_path):
    path = program(
        tmp_path,
        """
        if rank == 1:
            comm.recv(source=0)
        """,
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1, done.stdout + done.stderr
    text = "\n".join(untagged(done.stderr))
    assert "rank 0 has finished its program and waits at exit for the others" in text
    assert "rank 1 waits for rank 0 in recv(source=0, tag=ANY_TAG)" in text


def test_deadlock_reports_messages_that_no_receive_takes(tmp_path):
    path = program(
        tmp_path,
        """
        if rank == 0:
            comm.send("wrong tag", dest=1, tag=1)
            comm.recv(source=1)
        else:
            comm.recv(source=0, tag=2)
        """,
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1
    text = "\n".join(untagged(done.stderr))
    assert "messages that reached rank 1 and no receive takes: from rank 0: tag 1" in text


def test_mismatched_collectives_raise(tmp_path):
    # Ranks that send without waiting: found at exit, from what is left.
    path = program(
        tmp_path,
        """
        if rank == 0:
            comm.bcast("x", root=0)
        else:
            comm.gather("y", root=0)
        """,
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1
    text = done.stderr
    assert "CollectiveMismatchError" in text
    assert "its own was gather(root=0)" in text and "its own was bcast(root=0)" in text
    # In the call, from the message that arrives.
    path = program(
        tmp_path,
        """
        if rank == 0:
            comm.bcast("x", root=0)
        comm.barrier()
        """,
        name="inline.py",
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1
    assert "rank 1 called barrier() on COMM_WORLD (collective #1) at inline.py:" in done.stderr
    assert "rank 0 sent it a message of bcast(root=0)" in done.stderr
    # A message of another collective, in the call.
    path = program(
        tmp_path,
        """
        import numpy as np
        if rank == 0:
            comm.Bcast(np.zeros(3), root=1)
        else:
            comm.Reduce(np.zeros(3), np.zeros(3), root=0)
        """,
        name="upper.py",
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1
    assert "CollectiveMismatchError: rank 0 called Bcast(root=1)" in done.stderr
    assert "rank 1 sent it a message of Reduce(root=0)" in done.stderr
    # Ranks that both wait, each for the other's root: the deadlock says so.
    path = program(
        tmp_path,
        """
        comm.bcast(None, root=1 - rank)
        """,
        name="roots.py",
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 1
    assert "CollectiveMismatchError: the ranks called different collectives" in done.stderr
    assert "bcast(root=1)" in done.stderr and "bcast(root=0)" in done.stderr


def test_timeout_stops_every_rank_and_says_where_they_were(tmp_path):
    path = program(
        tmp_path,
        """
        import time
        if rank == 0:
            time.sleep(60)
        comm.recv(source=0)
        """,
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "-n", "2", "--timeout", "1.5", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 124, done.stdout + done.stderr
    assert "stopped after the timeout of 1.5 s" in done.stderr
    assert "rank 0 is running" in done.stderr
    assert "rank 1 waits for rank 0 in recv(source=0" in done.stderr
    assert took < 15


def _pids(directory) -> list[int]:
    return [int(n) for n in os.listdir(directory) if n.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not running
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start(path, n, directory):
    """`shoal run` in the background; waits until every rank announced itself."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "run", "-n", str(n), path, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(_pids(directory)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids(directory)) == n, "the ranks did not start"
    return proc


ANNOUNCE = """
import os, time
open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
if rank == 0:
    time.sleep(120)
comm.recv(source=0)
"""


def test_ctrl_c_stops_every_rank(tmp_path):
    directory = tmp_path / "pids"
    directory.mkdir()
    proc = _start(program(tmp_path, ANNOUNCE), 3, directory)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted; every rank was stopped" in err
    assert _wait_gone(_pids(directory)) == []


def test_a_killed_launcher_leaves_no_ranks_behind(tmp_path):
    directory = tmp_path / "pids"
    directory.mkdir()
    proc = _start(program(tmp_path, ANNOUNCE), 3, directory)
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert _wait_gone(_pids(directory)) == []


def test_output_is_tagged_by_rank_and_stream(tmp_path):
    path = program(
        tmp_path,
        """
        print("line one")
        print("error line", file=sys.stderr)
        sys.stdout.write("no newline at the end")
        """,
        prelude=True,
    )
    done, _ = shoal(path, 2)
    assert done.returncode == 0, done.stderr
    for r in (0, 1):
        assert f"[rank {r}] line one\n" in done.stdout
        assert f"[rank {r}] no newline at the end\n" in done.stdout
        assert f"[rank {r}] error line\n" in done.stderr


def test_the_number_of_ranks_defaults_to_cpu_count(tmp_path):
    import shoal

    path = program(tmp_path, 'out("size", size)')
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(lines(done)) == shoal.cpu_count()
    assert lines(done)[0].endswith(f"size {shoal.cpu_count()}")


def test_usage_errors(tmp_path):
    for args, message in [
        (["-n", "0", "x.py"], "must be at least 1"),
        (["--timeout", "-1", "x.py"], "must be positive"),
        (["-n", "2", str(tmp_path / "missing.py")], "no such file"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "shoal.cli", "run", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr
