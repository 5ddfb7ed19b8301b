"""``shoal info``'s facts: why cpu_count() is what it is, shared memory, the
GIL, and the self-check."""

from __future__ import annotations

import sys

import pytest
from shoal import CpuReport
from shoal.cli.info import cpu_limits, cpu_reason, gil_status, self_check, shared_memory, versions

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (CpuReport(8, 8, 8, None, None), "all of the machine's 8 online processors"),
        (CpuReport(2, 8, 2, None, None), "limited by the CPU affinity mask (the machine has 8)"),
        (CpuReport(2, 8, 8, 1.5, None), "limited by the cgroup CPU quota (the machine has 8)"),
        (CpuReport(4, 8, 8, None, 4), "limited by SLURM_CPUS_PER_TASK (the machine has 8)"),
        (
            CpuReport(4, 8, 4, None, 4),
            "limited by the CPU affinity mask and SLURM_CPUS_PER_TASK (the machine has 8)",
        ),
        (CpuReport(8, 8, 8, None, 16), "all of the machine's 8 online processors"),
    ],
)
def test_cpu_reason_names_the_limit_that_applied(report, reason):
    assert cpu_reason(report) == reason


def test_cpu_limits_say_what_each_limit_was(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "many")
    limits = dict(cpu_limits(CpuReport(1, 8, 1, 2.5, None)))
    assert limits == {
        "machine": "8 processors online",
        "affinity": "1 processor in this process's CPU affinity mask",
        "cgroup quota": "2.5 CPUs (the cgroup's CPU quota)",
        "SLURM": "none (SLURM_CPUS_PER_TASK='many' is not a positive number)",
    }
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert dict(cpu_limits(CpuReport(1, 8, None, None, None)))["SLURM"] == (
        "none (SLURM_CPUS_PER_TASK is not set)"
    )


def test_shared_memory_works_here():
    assert shared_memory() == (True, "yes (memfd_create and mmap work)")


def test_gil_status_on_each_kind_of_build(monkeypatch):
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
    assert gil_status() == "enabled (this Python has no free-threaded build)"
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert gil_status().startswith("disabled (free-threaded build)")


def test_versions_name_shoal_and_python():
    found = dict(versions())
    assert found["shoal"].startswith("0.") and sys.version.split()[0] in found["Python"]


def test_self_check_runs_a_task_in_a_worker():
    passed, outcome = self_check()
    assert passed, outcome
    assert outcome.startswith("ok: Pool(1) started and ran a task in worker pid ")


def test_self_check_reports_workers_that_cannot_start(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    passed, outcome = self_check(timeout=30)
    assert not passed
    assert outcome.startswith("FAILED: WorkerStartError: ")
