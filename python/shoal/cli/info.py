"""What ``shoal info`` reports: versions, the cores shoal will use and why,
shared-memory support, the GIL, and a self-check that runs a task."""

from __future__ import annotations

import math
import mmap
import os
import platform
import sys
import sysconfig
import time

from .. import __file__ as package_file
from .. import __version__
from ..cpus import CpuReport
from ..pool.pool import Pool
from ..trace.format import seconds

#: How long the self-check waits for its worker before calling it a failure.
SELF_CHECK_TIMEOUT = 60.0


def cpu_limits(report: CpuReport) -> list[tuple[str, str]]:
    """Each limit ``cpu_count()`` considered, as (name, what it says)."""
    if report.affinity is None:
        affinity = "unknown (sched_getaffinity failed)"
    else:
        affinity = f"{_processors(report.affinity)} in this process's CPU affinity mask"
    if report.cgroup_quota is None:
        quota = "none"
    else:
        quota = f"{report.cgroup_quota:g} CPUs (the cgroup's CPU quota)"
    return [
        ("machine", f"{_processors(report.machine)} online"),
        ("affinity", affinity),
        ("cgroup quota", quota),
        ("SLURM", _slurm(report)),
    ]


def _processors(n: int) -> str:
    return f"{n} processor" if n == 1 else f"{n} processors"


def _slurm(report: CpuReport) -> str:
    if report.slurm is not None:
        return f"{report.slurm} (SLURM_CPUS_PER_TASK)"
    value = os.environ.get("SLURM_CPUS_PER_TASK")
    if value is None:
        return "none (SLURM_CPUS_PER_TASK is not set)"
    return f"none (SLURM_CPUS_PER_TASK={value!r} is not a positive number)"


def cpu_reason(report: CpuReport) -> str:
    """Why ``cpu_count()`` is what it is, in a phrase."""
    limits = {
        "the CPU affinity mask": report.affinity,
        "the cgroup CPU quota": None
        if report.cgroup_quota is None
        else math.ceil(report.cgroup_quota),
        "SLURM_CPUS_PER_TASK": report.slurm,
    }
    binding = [name for name, value in limits.items() if value == report.count]
    if report.count >= report.machine or not binding:
        return f"all of the machine's {report.machine} online processors"
    return f"limited by {' and '.join(binding)} (the machine has {report.machine})"


def shared_memory() -> tuple[bool, str]:
    """Whether memfd shared memory (the workers' status pages) works here."""
    create = getattr(os, "memfd_create", None)
    if create is None:
        return False, "no: os.memfd_create is missing on this platform"
    try:
        fd = create("shoal-info", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            with mmap.mmap(fd, mmap.PAGESIZE) as page:
                page[:5] = b"shoal"
            if os.pread(fd, 5, 0) != b"shoal":
                return False, "no: a memfd mapping did not read back what was written"
        finally:
            os.close(fd)
    except OSError as e:
        return False, f"no: memfd_create failed: {e}"
    return True, "yes (memfd_create and mmap work)"


def gil_status() -> str:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_enabled is None:
        return "enabled (this Python has no free-threaded build)"
    if not is_enabled():
        return "disabled (free-threaded build): threads run Python in parallel"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "enabled, although this is a free-threaded build (PYTHON_GIL or an extension)"
    return "enabled"


def self_check(timeout: float = SELF_CHECK_TIMEOUT) -> tuple[bool, str]:
    """Starts a one-worker pool and runs two tasks; (passed, what happened)."""

    started = time.perf_counter()
    try:
        with Pool(1) as pool:
            pid = pool.apply_async(os.getpid).get(timeout)
            first = time.perf_counter() - started
            again = time.perf_counter()
            value = pool.apply_async(pow, (2, 10)).get(timeout)
            round_trip = time.perf_counter() - again
    except Exception as e:  # noqa: BLE001 - any failure is what a self-check reports
        return False, f"FAILED: {type(e).__name__}: {e}"
    if pid == os.getpid() or value != 1024:
        return False, f"FAILED: the task ran in pid {pid} and returned {value!r}"
    return True, (
        f"ok: Pool(1) started and ran a task in worker pid {pid} in {seconds(first)}; "
        f"the next task took {seconds(round_trip)} there and back"
    )


def versions() -> list[tuple[str, str]]:

    return [
        ("shoal", f"{__version__} ({os.path.dirname(package_file)})"),
        (
            "Python",
            f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
        ),
        ("platform", platform.platform()),
    ]
