"""Jobs that survive their time limit, on a real SLURM: ``shoal submit``
asks SLURM to warn the program before the limit (``--signal=B:TERM@60``);
here ``scancel --batch --signal=TERM`` sends that warning early. The
program's checkpointed map stores what it has and exits saying so; a
resubmission (or, with ``--requeue``, the job itself) resumes."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

pytestmark = pytest.mark.timeout(240)

PROGRAM = """\
import os, sys, time
import shoal

HERE = os.path.dirname(os.path.abspath(__file__))

def noted(x):
    time.sleep(0.02)
    with open(os.path.join(os.environ["NOTES"], os.environ["RUN"] + "-" + str(x)), "w"):
        pass
    return x * x

if __name__ == "__main__":
    os.environ["NOTES"] = os.path.join(HERE, "ran")
    os.environ["RUN"] = "run" + os.environ.get("SLURM_RESTART_COUNT", "0") + "".join(sys.argv[1:])
    os.makedirs(os.environ["NOTES"], exist_ok=True)
    with shoal.Pool(2) as pool:
        results = pool.map(noted, range(300), chunksize=1,
                           checkpoint=os.path.join(HERE, "run.sqlite"))
    print("sum", sum(results), flush=True)
"""

TOTAL = sum(x * x for x in range(300))


def ran(tmp_path) -> dict[str, set[int]]:
    runs: dict[str, set[int]] = {}
    for name in os.listdir(tmp_path / "ran") if (tmp_path / "ran").exists() else ():
        run, _, item = name.rpartition("-")
        runs.setdefault(run, set()).add(int(item))
    return runs


def stored(tmp_path) -> int:
    from shoal import _shoal

    store = _shoal.Store(str(tmp_path / "run.sqlite"))
    try:
        return store.info()[1]
    finally:
        store.close()


def job_of(p: subprocess.Popen) -> int:
    line = p.stderr.readline()
    found = re.search(r"submitted job (\d+)", line)
    assert found, line
    return int(found.group(1))


def warn_when_busy(tmp_path, job: int, run: str) -> None:
    """SLURM's warning before the time limit, once the map is well under way."""
    deadline = time.monotonic() + 90
    while len(ran(tmp_path).get(run, ())) < 30:
        assert time.monotonic() < deadline, "the job did not start computing"
        time.sleep(0.1)
    subprocess.run(["scancel", "--batch", "--signal=TERM", str(job)], check=True, timeout=30)


@pytest.mark.slurm
def test_a_warned_job_stores_its_checkpoint_and_its_resubmission_resumes(
    shoal_started, slurm_jobs, tmp_path
):
    (tmp_path / "prog.py").write_text(PROGRAM)
    p = shoal_started("submit", "prog.py", "--wait", "--time", "3:00", "--", "-first")
    job = job_of(p)
    slurm_jobs.append(job)
    warn_when_busy(tmp_path, job, "run0-first")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, out + err  # --wait returns the job's exit status
    assert f"job {job} FAILED, exit status 143" in err
    assert "shoal: SIGTERM received: stopping" in out
    assert "resubmit the job" in out
    kept = stored(tmp_path)
    assert 0 < kept < 300

    p = shoal_started("submit", "prog.py", "--wait", "--time", "3:00", "--", "-second")
    slurm_jobs.append(job_of(p))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert f"sum {TOTAL}" in out
    runs = ran(tmp_path)
    assert len(runs["run0-second"]) == 300 - kept  # nothing that was stored ran again
    assert runs["run0-first"] | runs["run0-second"] == set(range(300))


@pytest.mark.slurm
def test_with_requeue_a_warned_job_requeues_itself_and_resumes(
    shoal_started, slurm_jobs, release_requeued, tmp_path
):
    (tmp_path / "prog.py").write_text(PROGRAM)
    p = shoal_started("submit", "prog.py", "--requeue", "--wait", "--time", "3:00")
    job = job_of(p)
    slurm_jobs.append(job)
    warn_when_busy(tmp_path, job, "run0")
    release_requeued(job)
    out, err = p.communicate(timeout=150)
    assert p.returncode == 0, out + err
    assert f"job {job} is requeued, and resumes from there when it runs again" in out
    assert f"sum {TOTAL}" in out
    runs = ran(tmp_path)
    assert runs["run0"] | runs["run1"] == set(range(300))
    assert len(runs["run0"] & runs["run1"]) <= 2  # at most the tasks running at the warning
