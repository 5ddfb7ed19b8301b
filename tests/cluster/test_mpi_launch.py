"""MPI from PyPI (shoal[mpi]: mpi4py on Open MPI 5) under mpiexec, under
SLURM's srun with PMIx, and inside a batch job shoal submits."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

ALLREDUCE = (
    "from mpi4py import MPI\n"
    "c = MPI.COMM_WORLD\n"
    "print('rank', c.Get_rank(), 'of', c.Get_size(), 'sum', c.allreduce(c.Get_rank() + 1))\n"
)

# What PyPI's Open MPI printed per rank under srun before shoal's LAUNCH_ENV.
PMIX_WARNING = re.compile(r"find-available:not-valid|help file|Sorry!")


def ranks(output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line.startswith("rank "))


@pytest.mark.mpi
def test_mpiexec_runs_mpi4py_on_pypis_open_mpi(mpi_env):
    done = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-c", ALLREDUCE],
                          env=mpi_env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ranks(done.stdout) == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]


@pytest.mark.slurm
@pytest.mark.mpi
def test_srun_with_pmix_runs_mpi4py_without_the_pmix_warning(mpi_env):
    done = subprocess.run(["srun", "--mpi=pmix", "-n", "2", "--time", "1:00",
                           sys.executable, "-c", ALLREDUCE],
                          env=mpi_env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ranks(done.stdout) == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]
    assert not PMIX_WARNING.search(done.stdout + done.stderr), done.stdout + done.stderr


@pytest.mark.slurm
@pytest.mark.mpi
def test_mpiexec_inside_an_allocation(mpi_env, tmp_path, slurm_jobs):
    script = f'mpiexec -n 2 {sys.executable} -c "$PROG"'
    done = subprocess.run(["sbatch", "--parsable", "--wait", "-n", "2", "--time", "1:00",
                           "--output", str(tmp_path / "out.txt"), "--wrap", script],
                          env=dict(mpi_env, PROG=ALLREDUCE), capture_output=True, text=True,
                          timeout=90)  # fmt: skip
    slurm_jobs.append(int(done.stdout.strip().split(";")[0]))
    output = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, output
    assert ranks(output) == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]


@pytest.mark.slurm
@pytest.mark.mpi
def test_srun_steps_of_a_job_shoal_submits_print_no_pmix_warning(shoal, tmp_path, slurm_jobs):
    # The program starts MPI ranks as a step of its own job; the environment
    # comes from the batch script shoal wrote, not from this test.
    (tmp_path / "steps.py").write_text(
        "import os, sys\n"
        f"os.execvp('srun', ['srun', '-n', '2', '-c', '1', sys.executable, '-c', {ALLREDUCE!r}])\n"
    )
    out = shoal("submit", "steps.py", "--cpus-per-node", "2", "--time", "2:00", "--wait")
    slurm_jobs.append(int(re.search(r"submitted job (\d+)", out.stderr).group(1)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert ranks(out.stdout) == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]
    assert not PMIX_WARNING.search(out.stdout), out.stdout
