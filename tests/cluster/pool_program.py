"""A program the cluster tests run with ``python -m shoal.cluster`` under
mpiexec and srun (and without either). ``python pool_program.py SCENARIO
[ARGS]``; each scenario prints what the test checks, one ``key: value``
line (JSON values) each."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys
import time

import shoal


def say(key: str, value) -> None:
    print(f"{key}: {json.dumps(value)}", flush=True)


def square_where(x):
    """x squared, and which serving rank's worker computed it (the
    worker's parent process is the rank's engine)."""
    return x * x, os.getppid()


def square(x):
    return x * x


def fails_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def sleeps(seconds):
    time.sleep(seconds)
    return seconds


def exits_on_one(x):
    if x == 1:
        os._exit(7)
    return x


def exits_once(path):
    """Its worker dies the first time (a file marks it), and it returns
    the second."""
    if not os.path.exists(path):
        open(path, "w").close()
        os._exit(9)
    return "second try"


def os_pid(_):
    return os.getpid()


def prints(x):
    print("line from task", x)
    return x


def total(a):
    return float(a.sum())


def doubled(a):
    return a * 2.0


def set_base(value):
    os.environ["BASE"] = str(value)  # process-wide: functions travel by value


def plus_base(x):
    return x + int(os.environ["BASE"])


def noted(x):
    """Slow enough to be interrupted; notes that it ran (for the resume
    tests: which items each run computed)."""
    time.sleep(0.02)
    with open(os.path.join(os.environ["NOTES"], f"{os.environ['RUN']}-{x}"), "w"):
        pass
    return x * x


# ----------------------------------------------------------------- scenarios
def api() -> None:
    """The whole Pool API, served by the ranks."""
    import numpy as np

    with shoal.Pool(trace=True) as pool:
        say("workers", pool.worker_count)
        results = pool.map(square_where, range(1000))
        say("map", [r for r, _ in results] == [x * x for x in range(1000)])
        say("ranks", len({rank for _, rank in pool.map(square_where, range(64), chunksize=1)}))
        say("starmap", pool.starmap(pow, [(2, 3), (3, 2)]))
        say("imap", list(pool.imap(square, range(10), chunksize=3)))
        say("imap_unordered", sorted(pool.imap_unordered(square, range(10))))
        say("submit", pool.submit(square, 7).result(timeout=30))
        say("apply_async", pool.apply_async(square, (8,)).get(timeout=30))
        say("lambda", pool.map(lambda v: v + 1, [1, 2, 3]))
        try:
            pool.map(fails_on_three, range(8))
        except ValueError as exc:
            say("raised", [str(exc), type(exc.__cause__).__name__])
        try:
            pool.apply(sleeps, (30,), timeout=0.5)
        except shoal.TaskTimeoutError as exc:
            say("timeout", str(exc))
        try:
            pool.map(exits_on_one, range(4), chunksize=1)
        except shoal.WorkerLostError as exc:
            say("worker_lost", [exc.exitcode, str(exc)])
        marker = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shoal-retry-{os.getpid()}")
        say("retried", pool.apply(exits_once, (marker,), retries=1))
        os.unlink(marker)
        seen = []
        pool.map(square, range(40), chunksize=4, on_progress=lambda done, n: seen.append(done))
        say("progress", [seen[-1], len(seen)])
        pool.map(prints, range(2), chunksize=1)
        slow = pool.submit(sleeps, 30)
        time.sleep(0.3)
        pool.cancel(slow)
        try:
            slow.result(timeout=30)
        except concurrent.futures.CancelledError:
            say("cancelled", True)
        from shoal.cluster.world import current_world

        sent = dict(current_world().blob_bytes)
        x = np.arange(8_000_000, dtype=np.float64)  # 64 MB
        say("array", pool.map(total, [x] * 16, chunksize=1) == [float(x.sum())] * 16)
        # Bytes of large buffers sent to each serving rank for that call.
        now = current_world().blob_bytes
        say("array_sent", sorted(now[rank] - sent.get(rank, 0) for rank in now))
        back = pool.map(doubled, [x[:1_000_000], x[1_000_000:2_000_000]])
        say("array_back", [bool((b == 2 * x[k * 1_000_000 : (k + 1) * 1_000_000]).all())
                           for k, b in enumerate(back)] + [back[0].flags.writeable])  # fmt: skip
        trace = pool.trace()
        ran = [t for t in trace.tasks if t.worker is not None]
        say("trace", [trace.pool.workers, sorted({t.worker for t in ran}),
                      all(0 <= t.start <= trace.wall for t in ran)])  # fmt: skip
        say("pids", len(pool.worker_pids()))
    with shoal.Pool(initializer=set_base, initargs=(100,)) as pool:
        say("initializer", sorted(set(pool.map(plus_base, [0] * 8, chunksize=1))))
    with shoal.Pool(2) as pool:
        say("two", [pool.worker_count, pool.map(square, range(5))])
    with shoal.Pool(maxtasksperchild=1) as pool:
        say("maxtasksperchild", len(set(pool.map(os_pid, range(6), chunksize=1))))
    with shoal.Pool() as pool:
        stored = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shoal-imap-{os.getpid()}.sqlite")
        first = list(pool.imap(square, range(20), checkpoint=stored))
        again = list(pool.imap(square, range(20), checkpoint=stored))
        say("imap_checkpoint", [first == again == [x * x for x in range(20)]])
        os.unlink(stored)
    pool = shoal.Pool()
    pool.close()
    pool.join()
    say("closed", True)
    shared = shoal.shared.zeros(4)
    with shoal.Pool() as pool:
        try:
            pool.map(total, [shared])
        except TypeError as exc:
            say("shared", str(exc))
    say("end", True)


def map1000() -> None:
    with shoal.Pool() as pool:
        results = pool.map(square_where, range(1000))
    say("sum", sum(r for r, _ in results))
    say("ranks", len({rank for _, rank in results}))


def resume() -> None:
    """A checkpointed map of 300 slow items (see ``noted``)."""
    os.makedirs(os.environ["NOTES"], exist_ok=True)
    with shoal.Pool() as pool:
        results = pool.map(noted, range(300), chunksize=1, checkpoint=os.environ["STORE"])
    say("sum", sum(results))


def kill_rank() -> None:
    """Sends ``sys.argv[2]`` to serving rank 1 in the middle of a map."""
    from shoal.cluster.world import current_world

    with shoal.Pool() as pool:
        rank = current_world().peers[1]
        say("victim", [rank.rank, rank.host, rank.pid])
        result = pool.map_async(sleeps, [0.05] * 400, chunksize=1)
        time.sleep(0.5)
        os.kill(rank.pid, getattr(signal, sys.argv[2]))
        result.get(timeout=60)
    say("end", True)


def exits() -> None:
    """The program ends while a Pool is open and busy: how is chosen by
    ``sys.argv[2]``."""
    pool = shoal.Pool()
    pool.map_async(sleeps, [10] * 8, chunksize=1)
    time.sleep(0.3)
    how = sys.argv[2]
    if how == "exit":
        sys.exit(3)
    if how == "raise":
        raise RuntimeError("the program failed")


def local() -> None:
    """Run outside an MPI launch: an ordinary local Pool."""
    from shoal.cluster.world import current_world

    with shoal.Pool(2) as pool:
        say("local", [current_world() is None, pool.map(square, range(5))])
    say("argv", sys.argv[1:])


if __name__ == "__main__":
    {"api": api, "map1000": map1000, "resume": resume, "kill_rank": kill_rank,
     "exits": exits, "local": local}[sys.argv[1]]()  # fmt: skip
