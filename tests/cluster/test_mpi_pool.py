"""One Pool across an MPI launch (``python -m shoal.cluster``, which ``shoal
run --pool`` runs): rank 0 runs the program, the other ranks serve its
Pools. Run for real under Open MPI's mpiexec (from PyPI) and under SLURM's
srun, each program in a process of its own with a time limit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.timeout(180)

PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pool_program.py")
LAUNCH = [sys.executable, "-m", "shoal.cluster", PROGRAM]


def said(output: str) -> dict:
    """The ``key: value`` lines a scenario printed."""
    found = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if sep and re.fullmatch(r"[a-z_0-9]+", key):
            try:
                found[key] = json.loads(value)
            except ValueError:
                continue
    return found


def mpiexec(mpi_env, *args, timeout=120, env=None, n=3):
    return subprocess.run(
        ["mpiexec", "-n", str(n), "--oversubscribe", *LAUNCH, *args],
        env=dict(mpi_env, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def srun(mpi_env, *args, timeout=120, env=None):
    # The node has 2 CPUs: 3 tasks need --overcommit; -c 1 makes each
    # serving rank run one worker.
    return subprocess.run(
        ["srun", "-n", "3", "-O", "-c", "1", "--time", "3:00", *LAUNCH, *args],
        env=dict(mpi_env, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------- the whole API
@pytest.mark.mpi
def test_under_mpiexec_the_ranks_serve_the_whole_pool_api(mpi_env, tmp_path):
    done = mpiexec(mpi_env, "api", env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    got = said(done.stdout)
    assert got["workers"] == 4  # two serving ranks, shoal.cpu_count() = 2 workers each
    assert got["map"] is True
    assert got["ranks"] == 2  # tasks ran on both serving ranks
    assert got["starmap"] == [8, 9]
    assert got["imap"] == [x * x for x in range(10)]
    assert got["imap_unordered"] == [x * x for x in range(10)]
    assert (got["submit"], got["apply_async"], got["lambda"]) == (49, 64, [2, 3, 4])
    assert got["raised"] == ["three", "RemoteTraceback"]
    assert "ran longer than its timeout of 0.5 s" in got["timeout"]
    assert got["worker_lost"][0] == 7 and "exited with code 7" in got["worker_lost"][1]
    assert got["retried"] == "second try"
    assert got["progress"] == [40, 10]
    assert got["cancelled"] is True
    assert got["array"] is True
    assert got["array_sent"] == [64_000_000, 64_000_000]  # once per serving rank, not per task
    assert got["array_back"] == [True, True, True]  # large results come back, writable
    assert got["trace"] == [4, [0, 1, 2, 3], True]  # workers numbered across the ranks
    assert got["pids"] == 4
    assert got["initializer"] == [100]
    assert got["two"] == [2, [0, 1, 4, 9, 16]]
    assert got["maxtasksperchild"] == 6  # a fresh worker for every task
    assert got["imap_checkpoint"] == [True]
    assert got["closed"] is True
    assert "shoal.shared array" in got["shared"]
    assert got["end"] is True
    # What tasks print reaches rank 0's output, tagged with their worker.
    assert re.search(r"^\[worker \d\] line from task 0$", done.stdout, re.M)
    assert re.search(r"^\[worker \d\] line from task 1$", done.stdout, re.M)


# ----------------------------------------------------------------- on SLURM
@pytest.mark.slurm
@pytest.mark.mpi
def test_a_batch_job_runs_a_1000_task_map_on_srun_n3(mpi_env, tmp_path, slurm_jobs):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nexec srun -n 3 -O -c 1 {' '.join(LAUNCH)} map1000\n")
    done = subprocess.run(["sbatch", "--parsable", "--wait", "-n", "3", "-O", "--time", "3:00",
                           "--output", str(tmp_path / "out.txt"), str(script)],
                          env=mpi_env, capture_output=True, text=True, timeout=150)  # fmt: skip
    slurm_jobs.append(int(done.stdout.strip().split(";")[0]))
    output = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, output
    got = said(output)
    assert got["sum"] == sum(x * x for x in range(1000))
    assert got["ranks"] == 2  # each serving rank's worker did some of it


def _notes(path) -> dict[str, set[int]]:
    runs: dict[str, set[int]] = {}
    for name in os.listdir(path):
        run, _, item = name.partition("-")
        runs.setdefault(run, set()).add(int(item))
    return runs


def _stored(store) -> int:
    from shoal import _shoal

    s = _shoal.Store(str(store))
    try:
        return s.info()[1]
    finally:
        s.close()


@pytest.mark.slurm
@pytest.mark.mpi
def test_sigterm_mid_checkpointed_map_then_a_resubmission_resumes(mpi_env, tmp_path, slurm_jobs):
    notes, store = tmp_path / "ran", tmp_path / "run.sqlite"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nexec srun -n 3 -O -c 1 {' '.join(LAUNCH)} resume\n")
    notes.mkdir()
    env = dict(mpi_env, NOTES=str(notes), STORE=str(store))

    def submit(run: str, *wait: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["sbatch", "--parsable", *wait, "-n", "3", "-O", "--time", "3:00",
                               "--output", str(tmp_path / f"{run}.out"), str(script)],
                              env=dict(env, RUN=run), capture_output=True, text=True,
                              timeout=150)  # fmt: skip
        slurm_jobs.append(int(done.stdout.strip().split(";")[0]))
        return done

    submit("first")
    job = slurm_jobs[-1]
    deadline = time.monotonic() + 60
    while len(_notes(notes).get("first", ())) < 30:  # well into the map (300 items)
        assert time.monotonic() < deadline, "the first job did not start computing"
        time.sleep(0.1)
    # As SLURM does before the time limit (--signal): SIGTERM to the job's tasks.
    subprocess.run(["scancel", "--signal=TERM", str(job)], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h", "-j", str(job)], capture_output=True, text=True,
                         timeout=30).stdout.strip():  # fmt: skip
        assert time.monotonic() < deadline, "the job did not stop after SIGTERM"
        time.sleep(0.2)
    first_out = (tmp_path / "first.out").read_text()
    assert "SIGTERM received: stopping" in first_out, first_out
    assert "resubmit the job" in first_out
    assert "sum:" not in first_out  # it did stop in the middle
    stored = _stored(store)
    assert 0 < stored < 300

    done = submit("second", "--wait")
    second_out = (tmp_path / "second.out").read_text()
    assert done.returncode == 0, second_out
    assert said(second_out)["sum"] == sum(x * x for x in range(300))
    runs = _notes(notes)
    # Exactly what was not stored was computed again: nothing stored twice.
    assert len(runs["second"]) == 300 - stored
    assert runs["first"] | runs["second"] == set(range(300))


@pytest.mark.slurm
@pytest.mark.mpi
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_lost_serving_rank_ends_the_run_with_an_error_naming_it_under_srun(mpi_env, how):
    started = time.monotonic()
    done = srun(mpi_env, "kill_rank", how, env={"SHOAL_MPI_TIMEOUT": "4"}, timeout=90)
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    victim = said(done.stdout)["victim"]
    assert "end: true" not in done.stdout
    rank = f"rank 1 (node {victim[1]}, pid {victim[2]})"
    if how == "SIGSTOP":  # alive but silent: only shoal can tell
        assert f"{rank} of the MPI launch is lost: it has said nothing for 4 s" in output
        assert "WorkerLostError" in output and "the run ends with an error" in output
    else:  # gone: shoal or SLURM (which cancels the step) names it, whichever is first
        assert f"{rank} of the MPI launch is lost" in output or "vm: task 1: Killed" in output
    assert took < 60


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_lost_serving_rank_ends_the_run_with_an_error_naming_it_under_mpiexec(mpi_env, how):
    started = time.monotonic()
    done = mpiexec(mpi_env, "kill_rank", how, env={"SHOAL_MPI_TIMEOUT": "4"}, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    victim = said(done.stdout)["victim"]
    assert "end: true" not in done.stdout
    if how == "SIGSTOP":
        assert f"rank 1 (node {victim[1]}, pid {victim[2]}) of the MPI launch is lost" in output
        assert "it has said nothing for 4 s" in output
    else:  # Open MPI's own message names it too
        assert f"pid {victim[2]}" in output
    assert time.monotonic() - started < 60


@pytest.mark.mpi
@pytest.mark.parametrize(("how", "status"), [("exit", 3), ("raise", 1)])
def test_the_programs_end_stops_the_serving_ranks(mpi_env, how, status):
    # A Pool still busy with 10-second tasks when the program ends.
    started = time.monotonic()
    done = mpiexec(mpi_env, "exits", how, timeout=60)
    assert done.returncode == status, done.stdout + done.stderr
    assert time.monotonic() - started < 8  # the tasks were not waited for
    if how == "raise":
        assert "RuntimeError: the program failed" in done.stderr


@pytest.mark.mpi
def test_under_mpiexec_n_1_the_program_runs_with_a_local_pool(mpi_env):
    done = mpiexec(mpi_env, "local", "x", n=1, timeout=60)
    assert done.returncode == 0, done.stderr
    assert said(done.stdout) == {"local": [True, [0, 1, 4, 9, 16]], "argv": ["local", "x"]}


@pytest.mark.mpi
def test_shoal_run_pool_is_the_same_launcher(mpi_env):
    # What `shoal submit` writes into batch scripts: python -m shoal run --pool.
    command = [sys.executable, "-m", "shoal", "run", "--pool", PROGRAM, "map1000"]
    done = subprocess.run(["mpiexec", "-n", "3", "--oversubscribe", *command], env=mpi_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert said(done.stdout)["ranks"] == 2  # tasks ran on both serving ranks


@pytest.mark.slurm
@pytest.mark.mpi
def test_srun_without_an_mpi_plugin_is_refused_with_the_reason(mpi_env):
    done = subprocess.run(["srun", "--mpi=none", "-n", "2", "--time", "1:00", *LAUNCH, "local"],
                          env=mpi_env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "MPI sees each one alone" in done.stderr and "--mpi=pmix" in done.stderr
    assert "local:" not in done.stdout  # no task ran the program on its own


# --------------------------------------------------------- outside MPI
def test_outside_an_mpi_launch_the_program_runs_with_a_local_pool(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI", "SLURM_"))}
    done = subprocess.run([*LAUNCH, "local", "a", "--b"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert said(done.stdout) == {"local": [True, [0, 1, 4, 9, 16]], "argv": ["local", "a", "--b"]}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("import sys; sys.exit(4)", 4, ""),
        ("import sys; sys.exit('bye')", 1, "bye"),
        ("raise KeyError('k')", 1, "KeyError: 'k'"),
        ("print('fine')", 0, ""),
    ],
)
def test_the_launchers_exit_status_is_the_programs(tmp_path, body, status, error):
    (tmp_path / "prog.py").write_text(textwrap.dedent(body) + "\n")
    done = subprocess.run([sys.executable, "-m", "shoal.cluster", "prog.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == status, done.stderr
    assert error in done.stderr


def test_a_missing_program_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "shoal.cluster", "nope.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "nope.py: no such file" in done.stderr


# --------------------------------------------------------- the pieces
def test_workers_are_spread_over_the_ranks_by_their_cores():
    from shoal.cluster.link import split

    assert split(64, [32, 32]) == [32, 32]
    assert split(4, [32, 32]) == [2, 2]
    assert split(3, [32, 32]) == [2, 1]
    assert split(5, [8, 2]) == [4, 1]
    assert split(1, [1, 1, 1]) == [1, 0, 0]
    assert split(7, [16, 16, 32]) == [2, 2, 3]
    assert split(2, [0, 0]) == [2, 0]


def test_launches_are_told_by_their_environment():
    from shoal.cluster.launch import launched_tasks

    assert launched_tasks({}) is None
    assert launched_tasks({"OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "0"}) == 4
    assert launched_tasks({"SLURM_STEP_NUM_TASKS": "3", "SLURM_PROCID": "1"}) == 3
    assert launched_tasks({"PMI_SIZE": "2"}) == 2
    # A batch script is not a launch of tasks, even with SLURM_NTASKS.
    assert launched_tasks({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "3", "SLURM_PROCID": "0"}) is None
    assert launched_tasks({"PMIX_RANK": "0"}) == 0  # a launcher that does not say how many


def test_the_time_limit_setting_is_checked():
    from shoal.cluster.launch import DEFAULT_TIMEOUT, timeout_setting

    assert timeout_setting({}) == DEFAULT_TIMEOUT
    assert timeout_setting({"SHOAL_MPI_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit, match="SHOAL_MPI_TIMEOUT must be a positive number"):
            timeout_setting({"SHOAL_MPI_TIMEOUT": bad})
