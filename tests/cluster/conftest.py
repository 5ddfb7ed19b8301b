"""Helpers for the cluster tests: the ``shoal`` command, run in a test's own
directory (its session_logs and job output land there) with a config
directory of its own (no user's lab.toml is read)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

SHOAL = os.path.join(os.path.dirname(sys.executable), "shoal")


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    config = tmp_path / "config"
    config.mkdir()
    return dict(os.environ, XDG_CONFIG_HOME=str(config), PYTHONUNBUFFERED="1")


@pytest.fixture
def shoal(tmp_path, cli_env):
    """``shoal(*args, timeout=..., env=...)`` runs the command to its end."""

    def run(*args: str, timeout: float = 100, env: dict | None = None):
        return subprocess.run(
            [SHOAL, *args],
            cwd=tmp_path,
            env=env or cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def shoal_started(tmp_path, cli_env):
    """``shoal_started(*args)`` starts the command and returns the Popen (text
    pipes); it is killed at teardown if still running."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [SHOAL, *args],
            cwd=tmp_path,
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


@pytest.fixture
def release_requeued():
    """``release_requeued(job)`` waits until the requeued ``job`` is pending,
    then lets it start at once (SLURM holds a requeued job back for two
    minutes)."""

    def release(job: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            squeue = ["squeue", "-h", "-j", str(job), "-o", "%T %r"]
            state = subprocess.run(squeue, capture_output=True, text=True, timeout=30).stdout
            if state.split()[:1] == ["PENDING"]:
                break
            assert time.monotonic() < deadline, f"job {job} was not requeued: {state}"
            time.sleep(0.2)
        # slurmd refuses a launch whose credential is from the second in
        # which the job's first run was killed ("Job credential revoked": it
        # compares whole seconds), and the job then fails: let that second
        # pass first.
        time.sleep(1.5)
        update = ["scontrol", "update", f"JobId={job}", "StartTime=now"]
        subprocess.run(update, check=True, timeout=30)

    return release
