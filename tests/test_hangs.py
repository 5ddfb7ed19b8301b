"""Hangs and holes (issue 12, part 1): each test here hung, or let something
through, before its fix. Every one runs in a fresh interpreter of its own
(``isolated``) with a timeout, and the scripts they start have timeouts of
their own, so a hang fails a test instead of stalling the suite."""

from __future__ import annotations

import os
import queue
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
