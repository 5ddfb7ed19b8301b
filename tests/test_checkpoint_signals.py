"""Jobs that survive their time limit (``shoal.checkpoint.signals``): on
SIGTERM or SIGUSR1 a process with an open checkpoint store commits it and
exits saying how to resume. Each program runs in a process of its own and
gets the signal for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.timeout(120)

# 300 items, each a little slow; each notes that it ran (per run) so a test
# can tell what a second run computed again.
PROGRAM = """
import os, signal, sys, threading, time
import shoal

def noted(x):
    time.sleep(0.02)
    with open(os.path.join(os.environ["NOTES"], os.environ["RUN"] + "-" + str(x)), "w"):
        pass
    return x * x

{before}

if __name__ == "__main__":
    with shoal.Pool(2) as pool:
        results = pool.map(noted, range(300), chunksize=1, checkpoint="run.sqlite")
    print("sum", sum(results), flush=True)
    {after}
"""


def start(tmp_path, run: str, before: str = "", after: str = "", **env) -> subprocess.Popen:
    (tmp_path / "prog.py").write_text(PROGRAM.format(before=textwrap.dedent(before), after=after))
    (tmp_path / "ran").mkdir(exist_ok=True)
    env = dict(os.environ, NOTES=str(tmp_path / "ran"), RUN=run, **env)
    if "SLURM_JOB_ID" not in env or not env["SLURM_JOB_ID"]:
        env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "prog.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def ran(tmp_path, run: str) -> set[int]:
    prefix = run + "-"
    return {int(n[len(prefix) :]) for n in os.listdir(tmp_path / "ran") if n.startswith(prefix)}


def wait_until_running(tmp_path, run: str, p: subprocess.Popen, items: int = 30) -> None:
    deadline = time.monotonic() + 60
    while len(ran(tmp_path, run)) < items:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the map did not get going"
        time.sleep(0.05)


def stored(tmp_path) -> int:
    from shoal import _shoal

    store = _shoal.Store(str(tmp_path / "run.sqlite"))
    try:
        return store.info()[1]
    finally:
        store.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_commits_the_store_and_a_second_run_resumes(tmp_path, signum):
    p = start(tmp_path, "first")
    wait_until_running(tmp_path, "first", p)
    p.send_signal(signum)
    out, err = p.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert p.returncode == 128 + signum, err
    assert f"shoal: {name} received: stopping" in err
    assert f"saved in {tmp_path / 'run.sqlite'}" in err
    assert "run the program again (resubmit the job) to resume" in err
    assert "sum" not in out
    kept = stored(tmp_path)
    # Everything that came back was stored; what ran but had not come back
    # (at most the two running tasks) was not.
    assert len(ran(tmp_path, "first")) - 2 <= kept <= len(ran(tmp_path, "first"))

    p = start(tmp_path, "second")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out == f"sum {sum(x * x for x in range(300))}\n"
    assert len(ran(tmp_path, "second")) == 300 - kept  # nothing stored ran again
    assert ran(tmp_path, "first") | ran(tmp_path, "second") == set(range(300))


def test_a_users_own_handler_is_called_after_the_store_is_committed(tmp_path):
    before = """
    from shoal import _shoal
    def mine(signum, frame):
        store = _shoal.Store("run.sqlite")  # another connection: sees what is committed
        print("my handler saw", store.info()[1] > 0, "stored", flush=True)
        store.close()
    signal.signal(signal.SIGTERM, mine)
    """
    p = start(tmp_path, "first", before)
    wait_until_running(tmp_path, "first", p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err  # the user's handler decided: go on
    assert out.splitlines() == [
        "my handler saw True stored",
        f"sum {sum(x * x for x in range(300))}",
    ]
    assert "stopping" not in err


def test_an_ignored_signal_stays_ignored(tmp_path):
    p = start(tmp_path, "first", "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    wait_until_running(tmp_path, "first", p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out == f"sum {sum(x * x for x in range(300))}\n"


def test_the_handler_is_installed_only_by_the_main_thread_and_only_with_a_store(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import signal, threading
        import shoal

        def square(x):
            return x * x

        if __name__ == "__main__":
            with shoal.Pool(2) as pool:
                pool.map(square, range(10))
                print("without a store", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
                t = threading.Thread(target=pool.map, args=(square, range(10)),
                                     kwargs={"checkpoint": "run.sqlite"})
                t.start(); t.join()
                print("from a thread", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
                pool.map(square, range(10), checkpoint="run.sqlite")
                installed = signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
                print("from the main thread", installed)
    """))  # fmt: skip
    done = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "without a store True",
        "from a thread True",
        "from the main thread True",
    ]


@pytest.mark.parametrize("job", ["", "999999"])
def test_a_requeue_that_cannot_happen_says_to_run_again(tmp_path, job):
    if job and shutil.which("scontrol") is None:
        pytest.skip("scontrol not found: no SLURM here")
    p = start(tmp_path, "first", SHOAL_REQUEUE="1", SLURM_JOB_ID=job)
    wait_until_running(tmp_path, "first", p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    if job:  # SLURM refuses: no such job
        assert f"requeueing job {job} failed (" in err
    assert "run the program again (resubmit the job) to resume from there" in err


def test_a_forked_child_is_ended_by_sigterm_as_before(tmp_path):
    # After a checkpointed map, a fork-started multiprocessing pool is
    # terminated (its workers get SIGTERM), and a forked child signals
    # itself: each dies of the signal at once, and none touches the
    # parent's stores or says it saved them.
    after = """
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(2) as mp_pool:
        assert mp_pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
    child = os.fork()
    if child == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    print("child", os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
    """
    p = start(tmp_path, "only", after=textwrap.indent(textwrap.dedent(after), "    ").strip())
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert f"child {int(signal.SIGTERM)}" in out, out
    assert "received" not in err, err
