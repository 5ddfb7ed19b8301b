"""Hangs and holes (issue 12, part 1): each test here hung, or let something
through, before its fix. Every one runs in a fresh interpreter of its own
(``isolated``) with a timeout, and the scripts they start have timeouts of
their own, so a hang fails a test instead of stalling the suite."""

from __future__ import annotations

import concurrent.futures
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import helpers_mod as h
import pytest
import shoal

pytestmark = [pytest.mark.timeout(90), pytest.mark.isolated]


def run_script(tmp_path, code: str, *, timeout: float = 30, args=(), flags=(), cwd=None, prefix=()):
    """Runs ``code`` as a script in a fresh interpreter; fails the test (and
    kills what the script started) if it has not ended within ``timeout``."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    command = [*prefix, sys.executable, *flags, str(script), *map(str, args)]
    # Output goes to files, not pipes: a process the script leaves behind
    # (a forked child) must not keep the test waiting for end-of-file.
    out_path, err_path = tmp_path / "script.out", tmp_path / "script.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            command, cwd=cwd or tmp_path, stdout=out, stderr=err, start_new_session=True
        )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(
            f"the script still ran after {timeout} s (a hang):\n"
            f"{out_path.read_text()}\n{err_path.read_text()}"
        )
    return subprocess.CompletedProcess(
        command, proc.returncode, out_path.read_text(), err_path.read_text()
    )


def kill_pids_in(path) -> None:
    """SIGKILL to every pid listed in the file at ``path`` (children that
    tasks forked)."""
    if not os.path.exists(path):
        return
    with open(path) as listed:
        pids = listed.read().split()
    for line in pids:
        try:
            os.kill(int(line), signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------
# 2. A killed worker whose forked child holds its socket
# ---------------------------------------------------------------------------

FORKING_TASK = """
    import os, sys, time
    import shoal

    PIDS = sys.argv[1]

    def fork_then_sleep(seconds):
        child = os.fork()
        if child == 0:  # the copy of the worker: holds its socket for a minute
            time.sleep(60)
            os._exit(0)
        with open(PIDS, "a") as f:
            f.write(f"{child}\\n")
        time.sleep(seconds)
        return "woke"
"""


@pytest.mark.parametrize("how", ["timeout", "cancel", "terminate", "max_memory"])
def test_a_worker_killed_while_its_forked_child_lives_is_replaced_at_once(tmp_path, how):
    pids = tmp_path / "children"
    code = (
        FORKING_TASK
        + """
    def fork_then_grow(_):
        fork_then_sleep(0)
        hog = bytearray(400 << 20)  # over max_memory
        hog[::4096] = b"x" * len(hog[::4096])
        time.sleep(60)

    if __name__ == "__main__":
        how = sys.argv[2]
        started = time.monotonic()
        if how == "max_memory":
            pool = shoal.Pool(1, max_memory="200MB")
        else:
            pool = shoal.Pool(1)
        if how == "timeout":
            try:
                pool.apply(fork_then_sleep, (60,), timeout=1)
            except shoal.TaskTimeoutError:
                print("timed out")
        elif how == "cancel":
            result = pool.apply_async(fork_then_sleep, (60,))
            while not os.path.exists(PIDS):
                time.sleep(0.01)
            pool.cancel(result)
            try:
                result.get(timeout=30)
            except Exception as exc:
                print(type(exc).__name__)
        elif how == "max_memory":
            try:
                pool.apply(fork_then_grow, (0,))
            except shoal.WorkerLostError as exc:
                print(exc.reason)
        if how != "terminate":
            # The pool goes on: a new worker took the killed one's place.
            print(pool.apply(abs, (-5,)))
        else:
            pool.apply_async(fork_then_sleep, (60,))
            while not os.path.exists(PIDS):
                time.sleep(0.01)
        pool.terminate()
        pool.join()
        print(f"took {time.monotonic() - started:.1f}")
    """
    )
    try:
        done = run_script(tmp_path, code, args=(pids, how), timeout=40)
    finally:
        kill_pids_in(pids)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    expected = {"timeout": "timed out", "cancel": "CancelledError", "max_memory": "memory"}
    if how in expected:
        assert expected[how] in done.stdout
        assert "5" in lines
    took = float(lines[-1])
    assert took < 20, f"the pool waited for the forked child: {done.stdout}"


# ---------------------------------------------------------------------------
# 3. A send to a worker that fails (not because the worker died)
# ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_task_that_cannot_be_sent_fails_and_the_pool_goes_on(tmp_path):
    # Without CAP_SYS_RESOURCE, the kernel refuses to pass descriptors while
    # this user has more in flight than the sender's limit on open files
    # (ETOOMANYREFS). The script makes that so: it sends 200 descriptors
    # into a socket nobody reads, with a hard limit of 128.
    code = """
    import resource, socket, sys, time
    import shoal

    if __name__ == "__main__":
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        pool = shoal.Pool(1)
        print(pool.apply(abs, (-1,)))
        q = shoal.Queue()
        a, b = socket.socketpair()
        for _ in range(100):  # other processes of this user may have some in flight
            try:
                socket.send_fds(a, [b"x"], [a.fileno()] * 200)
                break
            except OSError:
                time.sleep(0.05)
        try:
            pool.apply(len, ([q],))
        except shoal.ShoalError as exc:
            print("refused:", exc)
        a.close()
        b.close()
        print(pool.apply(abs, (-2,)))
        pool.terminate()
    """
    drop = ("setpriv", "--bounding-set", "-sys_resource,-sys_admin", "--inh-caps", "-all")
    done = run_script(tmp_path, code, prefix=drop, timeout=40)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "1"
    assert out[1].startswith("refused:") and "could not be sent" in out[1], out
    assert out[2] == "2"


# ---------------------------------------------------------------------------
# 4. A task with more descriptors than a frame can carry
# ---------------------------------------------------------------------------


def test_a_task_with_too_many_descriptors_is_refused_at_submit_and_the_pool_goes_on():
    q = shoal.Queue()  # travels as two descriptors, every time it appears
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.ShoalError, match="shared-memory buffers.*more than the 65535"):
            pool.apply(len, ([q] * 32768,))
        with pytest.raises(shoal.ShoalError, match="more than the 65535"):
            pool.map(len, [[q] * 32768], chunksize=1)
        assert pool.apply(len, ([q] * 10,)) == 10
        assert pool.map(abs, [-1, -2]) == [1, 2]


def test_a_result_too_large_to_send_fails_as_such_not_as_a_lost_worker():
    with shoal.Pool(1) as pool:
        pid = pool.worker_pids()[0]
        with pytest.raises(
            shoal.SerializationError, match="result cannot be sent.*more than the 65535"
        ):
            pool.apply(h.many_queue_references, (32768,))
        assert pool.worker_pids() == [pid]
        assert pool.apply(abs, (-3,)) == 3


# ---------------------------------------------------------------------------
# 5. A child forked from a process with a pool, a store, a Process
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["falls off the end", "sys.exit"])
def test_a_forked_child_of_a_process_with_a_pool_and_a_store_exits_promptly(tmp_path, ending):
    code = """
    import os, sys, time
    import shoal

    if __name__ == "__main__":
        store = sys.argv[1]
        pool = shoal.Pool(2)
        assert pool.map(abs, range(-50, 0), checkpoint=store) == list(range(50, 0, -1))
        keep = shoal.cached(store + ".cache")(abs)
        assert keep(-3) == 3
        child_process = shoal.Process(target=time.sleep, args=(0.2,))
        child_process.start()
        busy = pool.map_async(time.sleep, [0.3] * 4)  # the result thread is waiting
        pid = os.fork()
        if pid == 0:
            if sys.argv[2] == "sys.exit":
                sys.exit(7)
            # falls off the end of the script: interpreter shutdown
        else:
            started = time.monotonic()
            while time.monotonic() - started < 20:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    print("child", os.waitstatus_to_exitcode(status),
                          f"{time.monotonic() - started:.2f}")
                    break
                time.sleep(0.02)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                print("child hung")
            busy.get(timeout=30)
            child_process.join()
            pool.terminate()
    """
    done = run_script(tmp_path, code, args=(tmp_path / "run.sqlite", ending), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hung" not in done.stdout
    code_expected = 7 if ending == "sys.exit" else 0
    word, exitcode, took = done.stdout.split()
    assert (word, int(exitcode)) == ("child", code_expected), done.stdout + done.stderr
    assert float(took) < 5


def test_a_pool_inherited_through_fork_refuses_work_instead_of_hanging(tmp_path):
    code = """
    import os, sys
    import shoal

    if __name__ == "__main__":
        pool = shoal.Pool(1)
        pool.apply(abs, (1,))
        pid = os.fork()
        if pid == 0:
            try:
                pool.apply(abs, (1,))
            except shoal.ShoalError as exc:
                print("refused:", exc, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        pool.terminate()
    """
    done = run_script(tmp_path, code, timeout=30)
    assert "refused:" in done.stdout and "fork()" in done.stdout, done.stdout + done.stderr


# ---------------------------------------------------------------------------
# 6. Timeouts cover start-up and loading; cancel withdraws queued tasks
# ---------------------------------------------------------------------------


def test_a_timeout_covers_an_initializer_that_never_returns():
    with shoal.Pool(1, initializer=time.sleep, initargs=(3600,)) as pool:
        started = time.monotonic()
        with pytest.raises(shoal.TaskTimeoutError, match="did not start within"):
            pool.apply(abs, (-1,), timeout=1)
        assert time.monotonic() - started < 10


def test_a_timeout_covers_a_function_whose_unpickling_never_ends():
    with shoal.Pool(1) as pool:
        assert pool.apply(abs, (-1,)) == 1
        started = time.monotonic()
        with pytest.raises(shoal.TaskTimeoutError, match="loading the function"):
            pool.apply(h.SlowToLoad(3600), timeout=1)
        assert time.monotonic() - started < 10
        assert pool.apply(abs, (-2,)) == 2


def test_cancel_withdraws_tasks_a_worker_holds_before_they_run(tmp_path):
    marks = [str(tmp_path / f"mark{i}") for i in range(10)]
    with shoal.Pool(1) as pool:
        pid = pool.worker_pids()[0]
        # Short tasks first: the worker's queue then holds many tasks.
        pool.map(abs, range(2000), chunksize=1)
        running = pool.apply_async(time.sleep, (1.0,))
        queued = pool.map_async(h.touch, marks, chunksize=1)
        time.sleep(0.3)
        pool.cancel(queued)
        with pytest.raises(concurrent.futures.CancelledError):
            queued.get(timeout=10)
        running.get(timeout=10)
        time.sleep(0.3)
        assert pool.apply(os.getpid) == pid, "the worker was killed for queued tasks"
    ran = [m for m in marks if os.path.exists(m)]
    assert not ran, f"{len(ran)} cancelled tasks ran after their cancel"


# ---------------------------------------------------------------------------
# 7. Workers never import from the working directory
# ---------------------------------------------------------------------------


def _planted(tmp_path):
    evil = tmp_path / "evil"
    (evil / "shoal").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    for name in ("__future__.py", "shoal/__init__.py"):
        (evil / name).write_text(
            f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\nraise ImportError('planted')\n"
        )
    return evil, marker


WORKER_REPORT = """
    import sys
    import shoal

    def report(_):
        return (sys.flags.isolated, sys.flags.ignore_environment, sys.flags.safe_path,
                sys.argv, shoal.__file__)

    if __name__ == "__main__":
        with shoal.Pool(2) as pool:
            for line in pool.map(report, range(2)):
                print(repr(line))
        child = shoal.Process(target=report, args=(0,))
        child.start()
        child.join(30)
        print("child", child.exitcode)
"""


@pytest.mark.parametrize("flags", [(), ("-E",), ("-I",)])
def test_workers_do_not_import_from_the_working_directory(tmp_path, flags):
    evil, marker = _planted(tmp_path)
    app = tmp_path / "app"
    app.mkdir()
    done = run_script(app, WORKER_REPORT, cwd=evil, flags=flags, timeout=60)
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "child 0"
    real = os.path.dirname(shoal.__file__)
    for line in lines[:2]:
        isolated, ignore_env, safe_path, argv, where = eval(line)  # noqa: S307 - our own repr
        assert os.path.dirname(where) == real
        assert argv == ["-c"]
        assert safe_path or isolated
        assert isolated == ("-I" in flags)
        assert ignore_env == ("-I" in flags or "-E" in flags)


# ---------------------------------------------------------------------------
# 8. Checkpoint stores: trusted files only
# ---------------------------------------------------------------------------


def test_a_new_store_is_readable_and_writable_by_its_owner_alone(tmp_path):
    path = tmp_path / "run.sqlite"
    with shoal.Pool(1) as pool:
        assert pool.map(abs, [-1, -2], checkpoint=path) == [1, 2]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for side in ("-wal", "-shm"):
        if os.path.exists(f"{path}{side}"):
            assert stat.S_IMODE(os.stat(f"{path}{side}").st_mode) == 0o600


def test_a_store_is_never_made_through_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere" / "target.sqlite"
    target.parent.mkdir()
    link = tmp_path / "run.sqlite"
    link.symlink_to(target)
    with shoal.Pool(1) as pool:
        with pytest.raises(shoal.CheckpointError, match="symbolic link"):
            pool.map(abs, [-1], checkpoint=link)
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give a file to another user")
@pytest.mark.parametrize("which", ["", "-wal", "-shm"])
def test_a_store_another_user_owns_is_refused(tmp_path, which):
    path = tmp_path / "run.sqlite"
    with shoal.Pool(1) as pool:
        pool.map(abs, [-1], checkpoint=path)
    planted = f"{path}{which}"
    if not os.path.exists(planted):
        open(planted, "wb").close()
    os.chmod(planted, 0o600)
    os.chown(planted, 65534, 65534)
    done = run_script(tmp_path, OPEN_STORE, args=(path,), timeout=30)
    assert "belongs to uid 65534" in done.stdout, done.stdout + done.stderr
    assert "not to you" in done.stdout


OPEN_STORE = """
    import sys
    import shoal
    try:
        with shoal.Pool(1) as pool:
            pool.map(abs, [-1], checkpoint=sys.argv[1])
    except shoal.CheckpointError as exc:
        print(exc)
    else:
        print("opened")
"""


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_store_others_may_write_is_refused(tmp_path, mode):
    path = tmp_path / "run.sqlite"
    with shoal.Pool(1) as pool:
        pool.map(abs, [-1], checkpoint=path)
    os.chmod(path, mode)
    done = run_script(tmp_path, OPEN_STORE, args=(path,), timeout=30)
    assert "chmod go-w" in done.stdout and f"mode {mode:o}" in done.stdout, done.stdout


def test_checkpoint_info_leaves_an_empty_file_alone(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "checkpoint", "info", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "not a shoal checkpoint store" in done.stderr and "empty" in done.stderr
    assert empty.stat().st_size == 0
    assert not os.path.exists(f"{empty}-wal")


# ---------------------------------------------------------------------------
# 10. The smaller items
# ---------------------------------------------------------------------------


def test_a_line_without_end_is_kept_to_a_bound_and_says_what_was_dropped(capsys):
    with shoal.Pool(1) as pool:
        assert pool.apply(h.write_without_newline, (20_000, 1000)) == "written"
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[worker 0]")]
    assert len(lines) == 1, [line[:80] for line in lines]
    assert len(lines[0]) < 70_000
    dropped = 20_000 * 1000 - 64 * 1024
    assert f"{dropped:,} more characters of this line were dropped" in lines[0]


def test_a_blocked_put_copies_a_large_item_once():
    q = shoal.Queue()
    while True:
        try:
            q.put(b"x" * 1000, block=False)
        except queue.Full:
            break
    big = "y" * (64 << 20)  # a str: pickled in-band, so the queue copies it
    free = shoal.Queue()
    started = time.process_time()
    free.put(big)  # pickled, and copied into shared memory once
    once = time.process_time() - started
    started = time.process_time()
    with pytest.raises(queue.Full):
        q.put(big, timeout=1.5)  # full: tried every 50 ms
    blocked = time.process_time() - started
    assert blocked < 2 * once + 0.05, (
        f"one copy took {once:.3f} s of CPU, a blocked put {blocked:.3f}"
    )


def test_workers_and_what_they_start_keep_the_parents_limit_on_open_files(tmp_path):
    code = """
    import resource, subprocess
    import shoal

    def limits(_):
        own = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        started = subprocess.run(["sh", "-c", "ulimit -Sn"], capture_output=True, text=True)
        return own, int(started.stdout)

    if __name__ == "__main__":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        with shoal.Pool(1) as pool:
            print(*pool.apply(limits, (0,)), min(1024, hard), hard)
    """
    done = run_script(tmp_path, code, timeout=30)
    assert done.returncode == 0, done.stderr
    worker, its_child, soft, hard = map(int, done.stdout.split())
    assert (worker, its_child) == (soft, soft), f"hard limit {hard}"


def test_programs_a_task_starts_get_ctrl_c_but_the_worker_still_ignores_it():
    with shoal.Pool(1) as pool:
        pid = pool.worker_pids()[0]
        assert pool.apply(h.child_ignores_sigint) is False
        os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert pool.worker_pids() == [pid]
        assert pool.apply(os.getpid) == pid


def test_a_pool_that_fails_to_start_part_way_leaves_no_process_behind(tmp_path):
    # A limit on open files that lets some workers start and not the rest:
    # found by trying, each in a fresh interpreter.
    code = """
    import os, resource, sys, time
    import shoal

    def children():
        me, found = os.getpid(), []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == me:
                    found.append(fields[0])
        return found

    if __name__ == "__main__":
        extra = int(sys.argv[1])
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + extra, used + extra))
        try:
            pool = shoal.Pool(4)
        except Exception as exc:
            time.sleep(1.0)  # a worker left running would have exited by now
            reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 0
            print("failed", reaped, ",".join(children()) or "-")
        else:
            pool.terminate()
            print("started")
    """
    partial = []
    for extra in range(4, 60, 2):
        done = run_script(tmp_path, code, args=(extra,), timeout=30)
        assert done.returncode == 0, done.stderr
        word, *rest = done.stdout.split()
        if word == "started":
            break
        reaped, states = rest
        assert states == "-", f"with {extra} spare descriptors, left behind: {states}"
        if reaped == "True":
            partial.append(extra)
    assert partial, "no limit let a pool start part way"
