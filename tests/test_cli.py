"""The ``shoal`` command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal._cli", *args],
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_demo_computes_pi_and_reports_a_speed_up():
    out = run_cli("demo", "--steps", "64000", "--rounds", "1")
    assert out.returncode == 0, out.stderr
    values = re.findall(r"^(serial|Pool)\s+(3\.14159\d+)", out.stdout, re.M)
    assert [name for name, _ in values] == ["serial", "Pool"]
    assert all(abs(float(v) - 3.141592653589793) < 1e-9 for _, v in values)
    assert re.search(r"speed-up with \d+ workers: \d+\.\d\dx", out.stdout)


def test_usage_errors_exit_with_2():
    assert run_cli().returncode == 2
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("demo", "--steps", "many").returncode == 2
