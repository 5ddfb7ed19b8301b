"""Tests for shoal.cpu_count().

Anything that changes process-wide state (CPU affinity, environment) runs in
a child interpreter so the test process itself is unaffected.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

HAS_AFFINITY = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(extra)
    return env


def run_python(code, env=None):
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env() if env is None else env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


CPU_COUNT_CODE = "import shoal; print(shoal.cpu_count())"


def child_cpu_count(**env):
    return int(run_python(CPU_COUNT_CODE, clean_env(**env)))


def test_cpu_count_bounds():
    n = shoal.cpu_count()
    assert type(n) is int
    assert 1 <= n <= os.cpu_count()


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs sched_setaffinity")
def test_cpu_count_respects_affinity_of_current_process():
    assert shoal.cpu_count() <= len(os.sched_getaffinity(0))


def test_cpu_count_in_clean_child_matches_bounds():
    n = child_cpu_count()
    assert 1 <= n <= os.cpu_count()


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs sched_setaffinity")
def test_cpu_count_single_cpu_affinity():
    code = (
        "import os, shoal\n"
        "cpu = min(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, {cpu})\n"
        "print(shoal.cpu_count())\n"
    )
    assert run_python(code) == "1"


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs sched_setaffinity")
def test_default_pool_size_follows_affinity():
    code = (
        "import os, shoal\n"
        "cpu = min(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, {cpu})\n"
        "with shoal.Pool() as p:\n"
        "    print(len(p.worker_pids()))\n"
        "    print(p.apply(abs, (-3,)))\n"
    )
    assert run_python(code).split() == ["1", "3"]


def test_slurm_cpus_per_task_one():
    assert child_cpu_count(SLURM_CPUS_PER_TASK="1") == 1


def test_slurm_cpus_per_task_respected_when_smaller():
    baseline = child_cpu_count()
    if baseline < 2:
        pytest.skip("needs at least 2 usable CPUs")
    assert child_cpu_count(SLURM_CPUS_PER_TASK=str(baseline - 1)) == baseline - 1


def test_slurm_cpus_per_task_larger_than_machine_is_capped():
    baseline = child_cpu_count()
    n = child_cpu_count(SLURM_CPUS_PER_TASK="100000")
    assert n == baseline
    assert n <= os.cpu_count()


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs sched_setaffinity")
def test_slurm_and_affinity_take_minimum():
    code = (
        "import os, shoal\n"
        "cpu = min(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, {cpu})\n"
        "print(shoal.cpu_count())\n"
    )
    assert run_python(code, clean_env(SLURM_CPUS_PER_TASK="8")) == "1"


@pytest.mark.parametrize("value", ["", "abc", "1.5x"])
def test_garbage_slurm_value_is_ignored(value):
    assert child_cpu_count(SLURM_CPUS_PER_TASK=value) == child_cpu_count()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_nonpositive_slurm_value_never_below_one(value):
    n = child_cpu_count(SLURM_CPUS_PER_TASK=value)
    assert 1 <= n <= child_cpu_count()
