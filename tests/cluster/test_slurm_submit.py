"""``shoal submit``: a program as a batch job on a real SLURM."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(120)


def sbatch(*args: str) -> int:
    done = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().split(";")[0])


def node_cpus() -> int:
    done = subprocess.run(
        ["sinfo", "--noheader", "--format", "%c"], capture_output=True, text=True, timeout=30
    )
    return int(done.stdout.split()[0])


def read_until(stream, pattern: str, timeout: float = 60) -> str:
    """Lines of a Popen's text stream up to the first that matches."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    pytest.fail(f"no line matching {pattern!r} in:\n{seen}")


@pytest.mark.slurm
def test_submit_wait_follows_the_output_and_returns_the_jobs_exit_status(
    shoal, slurm_jobs, tmp_path
):
    (tmp_path / "prog.py").write_text(
        "import os, sys\n"
        "print('hello from job', os.environ['SLURM_JOB_ID'], 'args', sys.argv[1:])\n"
        "print('cpus', os.environ['SLURM_CPUS_PER_TASK'])\n"
        "sys.exit(3)\n"
    )
    out = shoal("submit", "prog.py", "--cpus-per-node", "2", "--time", "2:00", "--wait",
                "--", "--flag", "x")  # fmt: skip
    job = int(re.search(r"submitted job (\d+)", out.stderr).group(1))
    slurm_jobs.append(job)
    assert out.returncode == 3, out.stderr
    assert f"hello from job {job} args ['--flag', 'x']" in out.stdout
    assert "cpus 2" in out.stdout
    assert f"job {job} FAILED, exit status 3" in out.stderr
    assert (tmp_path / f"shoal-prog-{job}.out").read_text() == out.stdout

    (tmp_path / "ok.py").write_text("print('fine')\n")
    out = shoal("submit", "ok.py", "--wait")
    slurm_jobs.append(int(re.search(r"submitted job (\d+)", out.stderr).group(1)))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "fine\n"


@pytest.mark.slurm
def test_submit_without_wait_returns_once_submitted(shoal, slurm_jobs, tmp_path):
    (tmp_path / "prog.py").write_text("print('done')\n")
    out = shoal("submit", "prog.py", "--output", "custom-%j.txt")
    assert out.returncode == 0, out.stderr
    job = int(re.search(r"submitted job (\d+); its output goes to (\S+)", out.stderr).group(1))
    slurm_jobs.append(job)
    assert f"custom-{job}.txt" in out.stderr


@pytest.mark.slurm
def test_submit_wait_says_why_the_job_is_pending(shoal_started, slurm_jobs, tmp_path):
    # A job that holds every CPU of the node keeps the next one waiting.
    blocker = sbatch("--cpus-per-task", str(node_cpus()), "--time", "2:00",
                     "--output", "/dev/null", "--wrap", "sleep 100")  # fmt: skip
    slurm_jobs.append(blocker)
    (tmp_path / "prog.py").write_text("print('ran after the blocker')\n")
    p = shoal_started("submit", "prog.py", "--wait", "--time", "2:00")
    said = read_until(p.stderr, r"is pending: (Resources|Priority)")
    slurm_jobs.append(int(re.search(r"submitted job (\d+)", said).group(1)))
    assert "waiting for free CPUs or nodes" in said or "ahead of it" in said
    subprocess.run(["scancel", str(blocker)], check=True, timeout=30)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out == "ran after the blocker\n"


@pytest.mark.slurm
def test_submit_requeue_follows_the_job_through_its_requeue(
    shoal_started, slurm_jobs, release_requeued, tmp_path
):
    # The first run waits to be requeued; the second (SLURM_RESTART_COUNT=1) ends.
    (tmp_path / "prog.py").write_text(
        "import os, time\n"
        "run = int(os.environ.get('SLURM_RESTART_COUNT', '0'))\n"
        "print('run', run, flush=True)\n"
        "if run == 0:\n"
        "    time.sleep(100)\n"
    )
    p = shoal_started("submit", "prog.py", "--requeue", "--wait", "--time", "3:00")
    job = int(re.search(r"submitted job (\d+)", read_until(p.stderr, "submitted")).group(1))
    slurm_jobs.append(job)
    assert p.stdout.readline() == "run 0\n"
    subprocess.run(["scontrol", "requeue", str(job)], check=True, timeout=30)
    release_requeued(job)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "run 1\n" in out  # appended to the same output, and followed
    assert (tmp_path / f"shoal-prog-{job}.out").read_text().count("run ") == 2


@pytest.mark.slurm
def test_submit_gives_sbatchs_message_when_it_refuses(shoal, tmp_path):
    (tmp_path / "prog.py").write_text("print('never')\n")
    out = shoal("submit", "prog.py", "--partition", "no-such-partition")
    assert out.returncode == 1
    assert "sbatch: error:" in out.stderr and "partition" in out.stderr.lower()
    out = shoal("submit", "prog.py", "--cpus-per-node", "100000")
    assert out.returncode == 1
    assert "sbatch: error:" in out.stderr


def test_submit_dry_run_prints_the_batch_script(shoal, tmp_path):
    (tmp_path / "prog.py").write_text("print('hi')\n")
    out = shoal("submit", "prog.py", "--nodes", "2", "--cpus-per-node", "32",
                "--time", "2:00:00", "--partition", "big", "--requeue", "--dry-run",
                "--", "--in", "data file.csv")  # fmt: skip
    assert out.returncode == 0, out.stderr
    script = out.stdout
    for line in (
        "#SBATCH --job-name=shoal-prog",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --time=2:00:00",
        "#SBATCH --partition=big",
        f"#SBATCH --chdir={tmp_path}",
        "#SBATCH --output=shoal-prog-%j.out",
        "#SBATCH --signal=B:USR1@60",  # srun passes USR1 on; it ends the job on TERM
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        'export PMIX_MCA_psec="${PMIX_MCA_psec:-native}"',
        "export SHOAL_REQUEUE=1",
        f"exec srun {sys.executable} -m shoal run --pool {tmp_path}/prog.py --in 'data file.csv'",
    ):
        assert line in script, line
    one = shoal("submit", "prog.py", "--dry-run", "--setup", "module load python/3.11").stdout
    assert f"exec python3 {tmp_path}/prog.py" in one
    assert "module load python/3.11" in one
    assert "--requeue" not in one and "--cpus-per-task" not in one
    assert "#SBATCH --signal=B:TERM@60" in one and "SHOAL_REQUEUE" not in one
