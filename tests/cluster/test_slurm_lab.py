"""``shoal lab``: Jupyter on a real SLURM node (tests/cluster/start.sh)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(150)


def squeue(job: int) -> str:
    done = subprocess.run(
        ["squeue", "--noheader", "--jobs", str(job), "--format", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip()


def processes_of(job: int) -> list[int]:
    """Pids of live processes started for the job (SLURM puts its id in their
    environment), SLURM's own slurmstepd aside."""
    found = []
    needle = f"\0SLURM_JOB_ID={job}\0".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in b"\0" + f.read():
                    found.append(int(pid))
        except OSError:
            continue  # gone, or not ours to read
    return found


def get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            assert json.load(r)["started"]  # /api/status
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slurm
def test_lab_starts_jupyter_that_answers_then_list_shows_it_and_stop_ends_it(
    shoal, slurm_jobs, tmp_path
):
    out = shoal("lab", "--app", "server", "--time", "10:00")
    assert out.returncode == 0, out.stderr
    job = int(re.search(r"running in job (\d+) on (\S+)", out.stdout).group(1))
    slurm_jobs.append(job)
    url = re.search(r"^ +(http://\S+:\d+/\S*\?token=\S+)$", out.stdout, re.M).group(1)
    base, token = re.fullmatch(r"(http://[^/]+)/\S*\?token=(\S+)", url).groups()
    port = base.rsplit(":", 1)[1]
    assert f"ssh -N -L {port}:" in out.stdout
    assert f"http://localhost:{port}/" in out.stdout
    assert f"shoal lab stop {job}" in out.stdout
    assert "pending" in out.stderr or "running" in out.stderr  # it said what it waited for
    log = tmp_path / "session_logs" / f"nb_session_{job}.log"
    assert token in log.read_text()

    # Jupyter's HTTP API answers with the token, and only with it.
    assert get(f"{base}/api/status", token) == 200
    assert get(f"{base}/api/status", None) == 403

    listed = shoal("lab", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(str(job)))
    assert "RUNNING" in row and url in row
    assert processes_of(job), "Jupyter runs as a process of the job"

    stopped = shoal("lab", "stop")  # the only session: no id needed
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped job {job}" in stopped.stdout
    assert squeue(job) == "", "stop returns once the job is gone"
    assert processes_of(job) == []
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/api/status", timeout=5)
    assert "no shoal lab sessions" in shoal("lab", "list").stdout


@pytest.mark.slurm
def test_lab_without_jupyter_on_the_node_shows_the_log_and_cancels_the_job(
    shoal, slurm_jobs, tmp_path
):
    # The node's PATH without the environment that has Jupyter.
    out = shoal("lab", "--setup", "export PATH=/usr/bin:/bin", "--time", "5:00")
    assert out.returncode == 1
    job = int(re.search(r"submitted job (\d+)", out.stderr).group(1))
    slurm_jobs.append(job)
    assert "jupyter-lab is not installed on" in out.stderr  # from the log's last lines
    assert f"nb_session_{job}.log" in out.stderr
    assert squeue(job) == ""


@pytest.mark.slurm
def test_lab_gives_sbatchs_message_for_a_bad_partition_or_time(shoal):
    out = shoal("lab", "--partition", "no-such-partition")
    assert out.returncode == 1
    assert "sbatch: error:" in out.stderr and "partition" in out.stderr.lower()
    out = shoal("lab", "--time", "3-00:00:00")  # over the partition's day
    assert out.returncode == 1
    assert "sbatch: error:" in out.stderr and "time limit" in out.stderr


@pytest.mark.slurm
def test_lab_stop_refuses_a_job_that_is_no_session(shoal):
    out = shoal("lab", "stop", "999999")
    assert out.returncode == 1
    assert "not one of your shoal lab sessions" in out.stderr


def test_lab_dry_run_takes_defaults_from_lab_toml_and_flags_win(shoal, cli_env, tmp_path):
    config = os.path.join(cli_env["XDG_CONFIG_HOME"], "shoal")
    os.makedirs(config)
    with open(os.path.join(config, "lab.toml"), "w") as f:
        f.write(
            'partition = "broadwl"\ncores = 4\ntime = "2:00:00"\naccount = "pi-smith"\n'
            'setup = ["module load python/3.11", "source ~/venv/bin/activate"]\nport = 15001\n'
        )
    out = shoal("lab", "--dry-run", "--cores", "8", "--mem", "8G")
    assert out.returncode == 0, out.stderr
    script = out.stdout
    assert script.startswith("#!/bin/bash\n")
    for line in (
        "#SBATCH --job-name=shoal-lab",
        "#SBATCH --partition=broadwl",
        "#SBATCH --cpus-per-task=8",  # the flag wins over the file's 4
        "#SBATCH --time=2:00:00",
        "#SBATCH --mem=8G",
        "#SBATCH --account=pi-smith",
        "module load python/3.11\nsource ~/venv/bin/activate",
        'export PMIX_MCA_psec="${PMIX_MCA_psec:-native}"',
        "--port=15001",
    ):
        assert line in script
    assert re.search(r"^#SBATCH --output=\S+/session_logs/nb_session_%j\.log$", script, re.M)
    assert "exec jupyter-lab --no-browser" in script
    assert not (tmp_path / "session_logs").exists()  # nothing submitted


def test_lab_rejects_a_bad_lab_toml_with_a_usage_error(shoal, cli_env):
    config = os.path.join(cli_env["XDG_CONFIG_HOME"], "shoal")
    os.makedirs(config)
    with open(os.path.join(config, "lab.toml"), "w") as f:
        f.write('partiton = "broadwl"\n')
    out = shoal("lab", "--dry-run")
    assert out.returncode == 2
    assert "lab.toml: unknown setting 'partiton'" in out.stderr
    with open(os.path.join(config, "lab.toml"), "w") as f:
        f.write('cores = "four"\n')
    out = shoal("lab", "--dry-run")
    assert out.returncode == 2
    assert "lab.toml: cores must be an integer, got 'four'" in out.stderr


def test_without_slurm_the_commands_say_so_and_exit_2(shoal, cli_env, tmp_path):
    # A PATH with Python and shoal but none of SLURM's commands.
    env = dict(cli_env, PATH=os.path.dirname(sys.executable))
    (tmp_path / "prog.py").write_text("print('hi')\n")
    for args in (["lab"], ["lab", "list"], ["lab", "stop"], ["submit", "prog.py", "--wait"]):
        out = shoal(*args, env=env)
        assert out.returncode == 2, (args, out.stderr)
        assert "no SLURM here" in out.stderr, args
    # A dry run needs no SLURM.
    assert shoal("lab", "--dry-run", env=env).returncode == 0
    assert shoal("submit", "prog.py", "--dry-run", env=env).returncode == 0


def test_lab_and_submit_usage_errors_exit_2(shoal):
    assert shoal("lab", "--cores", "0").returncode == 2
    assert shoal("lab", "--port", "80").returncode == 2
    assert shoal("lab", "--partition", "two words", "--dry-run").returncode == 2
    assert shoal("submit").returncode == 2
    out = shoal("submit", "no_such_program.py")
    assert out.returncode == 2 and "no such file" in out.stderr
    assert shoal("submit", "--nodes", "0", "x.py").returncode == 2


@pytest.fixture
def node_busy(slurm_jobs):
    """A job that holds every CPU of the node, so the next one waits."""
    cpus = subprocess.run(["sinfo", "--noheader", "--format", "%c"],
                          capture_output=True, text=True, timeout=30).stdout.split()[0]  # fmt: skip
    done = subprocess.run(["sbatch", "--parsable", "--cpus-per-task", cpus, "--time", "2:00",
                           "--output", "/dev/null", "--wrap", "sleep 100"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    slurm_jobs.append(int(done.stdout.split(";")[0]))
    return slurm_jobs[-1]


@pytest.mark.slurm
def test_lab_says_why_it_waits_and_leaves_a_queued_job_queued(shoal, slurm_jobs, node_busy):
    out = shoal("lab", "--app", "server", "--time", "5:00", "--timeout", "3")
    job = int(re.search(r"submitted job (\d+)", out.stderr).group(1))
    slurm_jobs.append(job)
    assert out.returncode == 1
    assert f"job {job} is pending: Resources (waiting for free CPUs or nodes)" in out.stderr
    assert "still pending after 3 s; it stays queued" in out.stderr
    assert squeue(job) == "PENDING"
    listed = shoal("lab", "list").stdout
    assert re.search(rf"^{job} +PENDING \(Resources\) +- .* -$", listed, re.M), listed
    stopped = shoal("lab", "stop", str(job))
    assert stopped.returncode == 0, stopped.stderr
    assert squeue(job) == ""


@pytest.mark.slurm
def test_lab_interrupted_while_waiting_cancels_its_job(shoal_started, slurm_jobs, node_busy):
    p = shoal_started("lab", "--app", "server", "--time", "5:00")
    said = ""
    while "is pending" not in said:
        line = p.stderr.readline()
        assert line, f"shoal lab ended early: {said}"
        said += line
    job = int(re.search(r"submitted job (\d+)", said).group(1))
    slurm_jobs.append(job)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert f"cancelling job {job}" in err
    assert squeue(job) == ""
