"""Helpers for the cluster tests: the ``shoal`` command, run in a test's own
directory (its session_logs and job output land there) with a config
directory of its own (no user's lab.toml is read)."""

from __future__ import annotations

import os
import subprocess
import sys

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
