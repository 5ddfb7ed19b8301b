"""``shoal lab``: Jupyter on a compute node, through sbatch.

``shoal lab`` writes a batch script that runs Jupyter, submits it, shows why
the job waits while it is queued, reads Jupyter's URL and token from the log
(``session_logs/nb_session_<jobid>.log``), checks that Jupyter answers, and
prints how to connect: directly, or through an SSH tunnel. The job keeps
running until its time runs out or ``shoal lab stop``. ``shoal lab list``
shows this user's sessions.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import batch, config, jobs
from .jobs import FAILED, OK, USAGE, SlurmError

JOB_NAME = "shoal-lab"
LOG_DIR = "session_logs"

#: Defaults where neither the command line nor lab.toml says.
DEFAULTS = {"cores": 1, "time": "1:00:00", "app": "lab"}

#: The Jupyter front ends, by the command that starts each.
APPS = {"lab": "jupyter-lab", "notebook": "jupyter-notebook", "server": "jupyter-server"}

#: Seconds Jupyter gets to answer once its job runs: it starts in seconds,
#: a minute or more on a slow shared file system.
START_TIMEOUT = 180.0

# In the log: "http://vm:15234/lab?token=3015c8bb..." (also 127.0.0.1, 0.0.0.0).
_URL = re.compile(r"https?://[^\s/:]+:(\d+)(/[^\s?]*)\?token=([0-9A-Za-z]+)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lab",
        help="start Jupyter on a SLURM compute node",
        description="Submits a batch job that runs Jupyter on a compute node, waits until "
        "it answers, and prints how to connect (directly, or through an SSH tunnel). "
        f"Defaults come from {_tilde(config.path())} (partition, cores, time, mem, account, "
        "setup, port, app); flags win. The job keeps running, and being charged, until its "
        "time runs out or `shoal lab stop`. Exit status: 0 done, 1 failed, 2 usage error "
        "or no SLURM here.",
    )
    p.add_argument("--partition", help="the partition (default: the cluster's)")
    p.add_argument("--cores", type=_positive_int, help=f"CPUs (default {DEFAULTS['cores']})")
    p.add_argument("--time", help=f"wall time, e.g. 2:00:00 (default {DEFAULTS['time']})")
    p.add_argument("--mem", help="memory, e.g. 8G (default: the cluster's)")
    p.add_argument("--account", help="the account to charge (default: yours)")
    p.add_argument(
        "--setup",
        help="shell lines run before Jupyter, e.g. 'module load python/3.11' "
        "(default: use the Python environment shoal runs in)",
    )
    p.add_argument("--port", type=_port, help="Jupyter's port (default: random, 15001-30000)")
    p.add_argument("--app", choices=sorted(APPS), help=f"which Jupyter (default {DEFAULTS['app']})")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the job to start (default 600); it then stays queued",
    )
    p.add_argument("--dry-run", action="store_true", help="print the batch script and stop")
    actions = p.add_subparsers(dest="action", metavar="{list,stop}")
    actions.add_parser("list", help="your sessions: job, node, state, time left, URL")
    stop = actions.add_parser("stop", help="cancel a session and wait until it is gone")
    stop.add_argument("job", nargs="?", type=int, help="its job id (needed if several)")
    p.set_defaults(run=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            return list_sessions()
        if args.action == "stop":
            return stop(args.job)
        return start(args)
    except SlurmError as e:
        print(f"shoal lab: error: {e}", file=sys.stderr)
        return e.code


def settings(args: argparse.Namespace) -> dict:
    """DEFAULTS, then lab.toml, then the flags."""
    merged = dict(DEFAULTS)
    merged.update(config.load())
    for key in config.LAB_KEYS:
        if getattr(args, key, None) is not None:
            merged[key] = getattr(args, key)
    if merged["app"] not in APPS:
        raise SlurmError(f"app {merged['app']!r}: must be one of {', '.join(APPS)}", USAGE)
    if merged["cores"] <= 0:
        raise SlurmError(f"cores {merged['cores']}: must be positive", USAGE)
    if not 1024 <= merged.get("port", 1024) <= 65535:
        raise SlurmError(f"port {merged['port']}: must be from 1024 to 65535", USAGE)
    return merged


def script(opts: dict, port: int, log_dir: Path) -> str:
    command = APPS[opts["app"]]
    body = f"""\
echo "shoal lab: job $SLURM_JOB_ID on $(hostname): {command} on port {port}"
if ! command -v {command} >/dev/null; then
    echo "shoal lab: error: {command} is not installed on $(hostname) (PATH=$PATH)." \\
         "Install it in the environment the job uses, or give --setup lines that activate one."
    exit 127
fi
root=""
[ "$(id -u)" = 0 ] && root="--allow-root"  # Jupyter refuses root without it
# All interfaces: reachable from the login node (the SSH tunnel) and the cluster's network.
exec {command} --no-browser --ip=0.0.0.0 --port={port} --ServerApp.port_retries=50 $root
"""
    directives = {
        "job-name": JOB_NAME,
        "ntasks": 1,
        "cpus-per-task": opts["cores"],
        "time": opts["time"],
        "partition": opts.get("partition"),
        "mem": opts.get("mem"),
        "account": opts.get("account"),
        "output": log_dir / "nb_session_%j.log",
    }
    return batch.render(
        directives,
        setup=opts.get("setup"),
        body=body,
        comment="Jupyter on a compute node, written by `shoal lab`.",
    )


def start(args: argparse.Namespace) -> int:
    opts = settings(args)
    port = opts.get("port") or random.randint(15001, 30000)  # few collisions on shared nodes
    log_dir = Path.cwd() / LOG_DIR
    text = script(opts, port, log_dir)
    if args.dry_run:
        print(text, end="")
        return OK
    jobs.require("sbatch")
    log_dir.mkdir(exist_ok=True)
    job = jobs.sbatch(text)
    log = log_dir / f"nb_session_{job}.log"
    _status(f"submitted job {job}; its log is {_here(log)}")
    try:
        session = _wait(job, log, args.timeout)
    except KeyboardInterrupt:
        _status(f"interrupted: cancelling job {job}")
        jobs.cancel(job, wait=30)
        return 130
    if session is None:
        return FAILED  # still queued; _wait said so
    print(session.describe(), flush=True)
    return OK


@dataclass(frozen=True)
class Session:
    job: int
    node: str
    port: int
    path: str
    token: str
    time_left: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.node}:{self.port}{self.path}?token={self.token}"

    def describe(self) -> str:
        local = f"http://localhost:{self.port}{self.path}?token={self.token}"
        login = f"{jobs.me()}@{login_host()}"
        return f"""\
Jupyter is running in job {self.job} on {self.node} (time left {self.time_left}).
  From the cluster's network, open:
    {self.url}
  From your own computer, start a tunnel through this login node:
    ssh -N -L {self.port}:{self.node}:{self.port} {login}
  then open:
    {local}
The job keeps running (and is charged) until its time runs out or you stop it:
    shoal lab stop {self.job}
Log: {_here(self.log)}"""


def login_host() -> str:
    """This machine's name as users reach it: the full name if the resolver
    knows one that extends the short name (getfqdn alone often says
    'localhost')."""
    name = socket.gethostname()
    if "." not in name:
        full = socket.getfqdn(name)
        if full.startswith(name + "."):
            return full
    return name


def find_url(log: Path) -> tuple[int, str, str] | None:
    """(port, path, token) from Jupyter's log, once it printed them."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return None
    m = _URL.search(text)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


def answers(node: str, port: int, token: str) -> bool:
    """Whether Jupyter's HTTP API answers, with the token, from here."""
    request = urllib.request.Request(
        f"http://{node}:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait(job: int, log: Path, timeout: float) -> Session | None:
    """Follows the job until Jupyter answers. Returns None if it is still
    queued after ``timeout`` seconds (it stays queued); raises, with the
    log's last lines and the job cancelled, if Jupyter does not start."""
    queued_until = time.monotonic() + timeout
    said, running_since, pause = None, None, 0.2
    while True:
        j = jobs.find(job)
        if j is None or j.state not in jobs.LIVE:
            raise SlurmError(_ended(job, log))
        if j.state == "RUNNING" and j.nodes:
            if running_since is None:
                running_since = time.monotonic()
                _status(f"job {job} is running on {j.nodes}; waiting for Jupyter")
            found = find_url(log)
            if found is not None and answers(j.nodes, found[0], found[2]):
                return Session(job, j.nodes, found[0], found[1], found[2], j.time_left, log)
            if time.monotonic() - running_since > START_TIMEOUT:
                jobs.cancel(job, wait=30)
                raise SlurmError(
                    f"Jupyter did not answer within {START_TIMEOUT:.0f} s of job {job} "
                    f"starting on {j.nodes}; cancelled the job. {_tail(log)}"
                )
        else:  # pending, or on its way to running (configuring, suspended...)
            news = f"pending: {jobs.explain(j.reason)}" if j.state == "PENDING" else j.state
            if news != said and not (j.state == "PENDING" and j.reason == "None" and said):
                # (reason None: between two scheduling passes; nothing to tell)
                _status(f"job {job} is {news}")
                said = news
            if j.state == "PENDING" and jobs.never_starts(j.reason):
                jobs.cancel(job, wait=30)
                raise SlurmError(
                    f"job {job} cannot start as submitted ({j.reason}); cancelled it. "
                    "Change the request (cores, time, partition) and try again."
                )
            if time.monotonic() > queued_until:
                _status(
                    f"job {job} is still {j.state.lower()} after {timeout:.0f} s; it stays "
                    f"queued. `shoal lab list` shows its URL once it runs; "
                    f"`shoal lab stop {job}` removes it."
                )
                return None
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)


def _ended(job: int, log: Path) -> str:
    """The error for a job that ended before Jupyter answered."""
    how = jobs.outcome(job)
    # It ended by itself; scancel in case a step of it lingers.
    jobs.run(["scancel", str(job)])
    state = f" ({how.state}, exit status {how.status})" if how else ""
    return f"job {job} ended{state} before Jupyter answered. {_tail(log)}"


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()
    except FileNotFoundError:
        return f"Its log {_here(log)} was never written."
    last = "\n".join("    " + line for line in text[-lines:])
    return f"Last lines of {_here(log)}:\n{last}"


def sessions() -> list[tuple[jobs.Job, str]]:
    """This user's lab jobs, each with its URL (or '-' while it has none)."""
    found = []
    for j in jobs.queue(name=JOB_NAME, user=jobs.me()):
        url = "-"
        info = jobs.details(j.id) if j.state == "RUNNING" else None
        if info and info.get("StdOut") and (got := find_url(Path(info["StdOut"]))):
            url = f"http://{j.nodes}:{got[0]}{got[1]}?token={got[2]}"
        found.append((j, url))
    return found


def list_sessions() -> int:
    jobs.require("squeue")
    found = sessions()
    if not found:
        print("no shoal lab sessions")
        return OK
    rows = [("JOBID", "STATE", "NODE", "TIME LEFT", "URL")]
    for j, url in found:
        state = j.state if j.state != "PENDING" else f"PENDING ({j.reason})"
        rows.append((str(j.id), state, j.nodes or "-", j.time_left, url))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4])
    return OK


def stop(job: int | None) -> int:
    jobs.require("scancel")
    ids = [j.id for j, _ in sessions()]
    if job is None:
        if not ids:
            raise SlurmError("no shoal lab sessions to stop")
        if len(ids) > 1:
            listed = ", ".join(map(str, ids))
            raise SlurmError(
                f"several sessions ({listed}): say which, e.g. shoal lab stop {ids[0]}", USAGE
            )
        job = ids[0]
    elif job not in ids:
        raise SlurmError(f"job {job} is not one of your shoal lab sessions (`shoal lab list`)")
    jobs.cancel(job)
    print(f"stopped job {job}")
    return OK


def _status(text: str) -> None:
    print(f"shoal lab: {text}", file=sys.stderr, flush=True)


def _here(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tilde(path: Path) -> str:
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1024 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1024 to 65535, got {text}")
    return value
