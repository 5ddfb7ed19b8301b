"""SLURM's commands, run with timeouts, and their answers parsed.

Every call goes through :func:`run`: a missing command means there is no
SLURM here (exit status 2), a command that fails or does not answer in time
is a :class:`SlurmError` that says what to do (exit status 1).
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

OK, FAILED, USAGE = 0, 1, 2

#: Seconds one SLURM command may take. A busy controller answers in well
#: under this; one that does not answer at all is down or unreachable.
COMMAND_TIMEOUT = 30.0

#: Job states in which a job still holds (or waits for) resources.
LIVE = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
)

#: Why a job waits, in words, for squeue's commonest reasons. Those marked
#: ``never`` do not go away by themselves: the job will not start as it is.
REASONS: dict[str, tuple[str, bool]] = {
    "Resources": ("waiting for free CPUs or nodes", False),
    "Priority": ("other jobs are ahead of it in the queue", False),
    "None": ("about to be scheduled", False),
    "BeginTime": ("its start time has not come; a requeued job waits 2 minutes", False),
    "Dependency": ("waiting for the jobs it depends on", False),
    "ReqNodeNotAvail": ("a node it needs is down, drained or reserved", False),
    "JobHeldUser": ("held by you (scontrol release JOBID)", False),
    "JobHeldAdmin": ("held by an administrator", False),
    "PartitionConfig": (
        "the request does not fit the partition (e.g. more tasks than it has CPUs: "
        "--overcommit lets tasks share CPUs)",
        True,
    ),
    "PartitionTimeLimit": ("its time limit is over the partition's maximum", True),
    "PartitionNodeLimit": ("it asks for more nodes than the partition allows", True),
    "PartitionDown": ("the partition is down", False),
    "PartitionInactive": ("the partition is inactive", False),
    "InvalidAccount": ("the account is not valid", True),
    "InvalidQOS": ("the QOS is not valid", True),
}


class SlurmError(Exception):
    """Ends a command with a message and an exit status."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def no_slurm(command: str) -> SlurmError:
    return SlurmError(
        f"no SLURM here: {command} is not on PATH. Run this on a cluster's login node "
        "(or load its slurm module first).",
        USAGE,
    )


def require(command: str = "sbatch") -> None:
    """Raises the 'no SLURM' error (exit status 2) unless ``command`` is on PATH."""
    if shutil.which(command) is None:
        raise no_slurm(command)


def run(
    args: Sequence[str], *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Runs a SLURM command and returns what it did, whatever its exit status."""
    try:
        return subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        raise no_slurm(args[0]) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{args[0]} did not answer within {timeout:.0f} s: is SLURM's controller up? "
            "(`scontrol ping` tells)"
        ) from None


def check(args: Sequence[str], *, stdin: str | None = None) -> str:
    """Runs a SLURM command and returns its output; its own message if it failed."""
    done = run(args, stdin=stdin)
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        raise SlurmError(said or f"{args[0]} failed with exit status {done.returncode}")
    return done.stdout


def sbatch(script: str) -> int:
    """Submits a batch script (given as text) and returns the job id. sbatch's
    own message (unknown partition, time over the limit...) if it refuses."""
    done = run(["sbatch", "--parsable"], stdin=script)
    if done.returncode != 0:
        said = done.stderr.strip() or f"sbatch failed with exit status {done.returncode}"
        raise SlurmError(f"sbatch refused the job:\n{said}")
    # "1234" or "1234;cluster"
    return int(done.stdout.strip().split(";")[0])


@dataclass(frozen=True)
class Job:
    """A job as squeue shows it."""

    id: int
    state: str  # PENDING, RUNNING, COMPLETING...
    reason: str  # why it is pending ("Resources"), else "None"
    nodes: str  # "node[01-02]"; empty while pending
    time_left: str  # "59:42", "UNLIMITED"
    name: str


_FORMAT = "%i|%T|%r|%N|%L|%j"  # the name last: it is the only free text


def queue(*, job: int | None = None, name: str | None = None, user: str | None = None) -> list[Job]:
    """The live jobs (pending, running, completing) matching the filters."""
    args = ["squeue", "--noheader", "--format", _FORMAT]
    if job is not None:
        args += ["--jobs", str(job)]
    if name is not None:
        args += ["--name", name]
    if user is not None:
        args += ["--user", user]
    done = run(args)
    if done.returncode != 0:
        if job is not None and "Invalid job id" in done.stderr:
            return []  # finished and already forgotten by the controller
        raise SlurmError(done.stderr.strip() or f"squeue failed ({done.returncode})")
    jobs = []
    for line in done.stdout.splitlines():
        fields = line.split("|", 5)
        if len(fields) == 6 and fields[0].isdigit():
            i, state, reason, nodes, left, job_name = fields
            jobs.append(Job(int(i), state, reason, nodes, left, job_name))
    return jobs


def find(job: int) -> Job | None:
    """The job if it is still live, else None."""
    found = [j for j in queue(job=job) if j.id == job]
    return found[0] if found else None


def me() -> str:
    return getpass.getuser()


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:]*)=(.*?)(?=\s[A-Za-z][\w/:]*=|$)")


def details(job: int) -> dict[str, str] | None:
    """``scontrol show job``'s fields (JobState, ExitCode, StdOut...), or None
    once the controller has forgotten the job (MinJobAge after it ended)."""
    done = run(["scontrol", "--oneliner", "show", "job", str(job)])
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise SlurmError(done.stderr.strip() or f"scontrol failed ({done.returncode})")
    line = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return {m.group(1): m.group(2).strip() for m in _FIELD.finditer(line)}


@dataclass(frozen=True)
class Outcome:
    """How a job ended."""

    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL...
    exit_code: int  # the batch script's exit status
    signal: int  # the signal that killed it, or 0

    @property
    def status(self) -> int:
        """An exit status as a shell gives it: the code, or 128 + the signal."""
        if self.signal:
            return 128 + self.signal
        if self.exit_code == 0 and self.state != "COMPLETED":
            return FAILED  # cancelled, lost node...: not a success even at 0
        return self.exit_code


def _outcome(state: str, code: str) -> Outcome | None:
    m = re.fullmatch(r"(\d+):(\d+)", code.strip())
    if not m:
        return None
    # sacct writes "CANCELLED by 0"
    return Outcome(state.split()[0], int(m.group(1)), int(m.group(2)))


def outcome(job: int) -> Outcome | None:
    """How a finished job ended: from the controller while it remembers the
    job, else from accounting (sacct), else None."""
    info = details(job)
    if info is not None and info.get("JobState") not in LIVE:
        return _outcome(info.get("JobState", "UNKNOWN"), info.get("ExitCode", ""))
    if info is None and shutil.which("sacct"):
        done = run(["sacct", "--jobs", str(job), "-X", "--noheader", "--parsable2",
                    "--format", "State,ExitCode"])  # fmt: skip
        lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
        if lines and "|" in lines[-1]:
            return _outcome(*lines[-1].split("|", 1))
    return None


def cancel(job: int, *, wait: float = 60.0) -> None:
    """scancel, then waits until the job is gone from the queue: every process
    of it ended (COMPLETING is not gone). Raises if it is still there after
    ``wait`` seconds."""
    done = run(["scancel", str(job)])
    if done.returncode != 0 and find(job) is not None:
        raise SlurmError(done.stderr.strip() or f"scancel {job} failed")
    deadline = time.monotonic() + wait
    while (j := find(job)) is not None:
        if time.monotonic() > deadline:
            raise SlurmError(
                f"job {job} is still {j.state} {wait:.0f} s after scancel; "
                "ask the cluster's administrators if it stays so"
            )
        time.sleep(0.2)


def explain(reason: str) -> str:
    """squeue's reason with a few words on it, e.g. 'Resources (waiting for...)'."""
    words = REASONS.get(reason)
    if reason == "None" and words:
        return words[0]
    return f"{reason} ({words[0]})" if words else reason


def never_starts(reason: str) -> bool:
    """Whether a pending reason holds the job until someone changes something."""
    return REASONS.get(reason, ("", False))[1]
