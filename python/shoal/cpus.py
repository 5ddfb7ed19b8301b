"""``cpu_count``: the cores this process may really use."""

from __future__ import annotations

from typing import NamedTuple

from . import _shoal


class CpuReport(NamedTuple):
    """Each limit that went into :func:`cpu_count` (``None``: no such limit)."""

    count: int
    machine: int
    affinity: int | None
    cgroup_quota: float | None
    slurm: int | None


def cpu_report() -> CpuReport:
    return CpuReport(*_shoal.cpu_report())


def cpu_count() -> int:
    """Cores this process may use: the smallest of the machine's online
    processors, the CPU affinity mask, the cgroup CPU quota (rounded up) and
    ``SLURM_CPUS_PER_TASK``; at least 1."""
    return _shoal.cpu_report()[0]
