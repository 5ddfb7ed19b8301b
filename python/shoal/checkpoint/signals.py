"""Jobs that survive their time limit.

A batch system warns a job before it kills it: SLURM sends the signal asked
for with ``--signal`` (``shoal submit`` asks for SIGTERM a minute before the
limit, SIGUSR1 through ``srun`` on several nodes), and ``scancel`` and most
schedulers send SIGTERM. Once a checkpoint store is open, this process
answers SIGTERM and SIGUSR1 by committing every open store, then exits
(status 128 + the signal's number) with a message saying that running the
program again resumes where it stopped. In a job submitted with
``--requeue`` (``SHOAL_REQUEUE=1`` in its environment), it first asks SLURM
to requeue the job, which then resumes by itself.

The handler is installed only where that is safe and wanted: in the main
thread (Python runs handlers there), not in a pool's worker (its parent
decides), and around whatever handler was there: a handler of the user's
own is called after the stores are committed (and decides what happens
next); an ignored signal stays ignored (the stores are committed anyway).
A child forked from this process (a fork-started multiprocessing pool's
worker) gets the handlers that were there before: the stores are the
parent's, and SIGTERM, as the pool's ``terminate()`` sends it, ends the
child as it would have.
"""

from __future__ import annotations

import os
import sys
import threading

_installed = False
_previous: dict = {}
_flush = None
_handling = False


def _in_worker() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "shoal.worker.__main__"


def install(flush) -> None:
    """Installs the handler once, from the main thread; ``flush()`` commits
    the open stores and returns their paths."""
    global _installed, _flush
    if _installed or threading.current_thread() is not threading.main_thread() or _in_worker():
        return
    import signal

    _flush = flush
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        previous = signal.getsignal(signum)
        if previous is None:  # a handler set outside Python: leave it alone
            continue
        _previous[signum] = previous
        signal.signal(signum, _on_signal)
    _installed = True


def _restore_in_child() -> None:
    """After a fork, in the child: the handlers that were there before."""
    global _installed, _flush
    if not _installed:
        return
    import signal

    for signum, previous in _previous.items():
        try:
            signal.signal(signum, previous)
        except (ValueError, OSError):  # not the main thread: Python runs no handler here
            pass
    _previous.clear()
    _installed, _flush = False, None


os.register_at_fork(after_in_child=_restore_in_child)


def _on_signal(signum, frame) -> None:
    global _handling
    import signal

    previous = _previous.get(signum, signal.SIG_DFL)
    if _handling:  # again while stopping (a requeue signals the job too)
        return
    _handling = True
    try:
        paths = _flush()
    finally:
        _handling = previous is signal.SIG_DFL  # from here on, this process stops
    if previous is signal.SIG_IGN:
        return
    if callable(previous):
        previous(signum, frame)
        return
    name = signal.Signals(signum).name
    stores = ", ".join(paths) or "the checkpoint store"
    print(
        f"shoal: {name} received: stopping. Every result that came back is saved in {stores}; "
        f"{_resume()}",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(128 + signum)


def _resume() -> str:
    """How the work resumes: SLURM requeues the job, or the user runs it again."""
    job = os.environ.get("SLURM_JOB_ID")
    again = "run the program again (resubmit the job) to resume from there"
    if not job or os.environ.get("SHOAL_REQUEUE") != "1":
        return again
    import subprocess

    try:
        done = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"requeueing job {job} failed ({exc}): {again}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"scontrol exited with {done.returncode}"
        return f"requeueing job {job} failed ({why}): {again}"
    return f"job {job} is requeued, and resumes from there when it runs again"
