"""Peak memory of one library while 2 workers read one large array, for
``compare.py``'s array-memory workload. Run in a fresh interpreter per
library, importing only numpy and that library, so nothing else counts:

    python benches/memory_probe.py shoal 512     # prints [memory, rss_sum]
"""

from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)

from workloads import array_sum  # noqa: E402

WORKERS = 2


def process_tree(root):
    """``root`` and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def memory_of(pids):
    """``(unique, rss)`` in bytes over ``pids``. ``rss`` is the plain sum of
    RSS, which counts a shared page once per process mapping it. ``unique``
    counts it once: shared file mappings (memfds, /dev/shm files) by their
    largest RSS in any process, everything else by PSS (which already
    divides pages a fork shares). Summing PSS alone would be close, but is
    inflated for a moment whenever a process maps or unmaps a large segment
    while the others are being read."""
    shared_files = {}
    unique = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        key = None
        for line in lines:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header
                shared = head[1][3] == "s" and head[4] != "0"
                key = (head[3], head[4]) if shared else None
            elif line.startswith("Rss:"):
                size = int(head[1]) * 1024
                rss += size
                if key is not None:
                    shared_files[key] = max(shared_files.get(key, 0), size)
            elif line.startswith("Pss:") and key is None:
                unique += int(head[1]) * 1024
    return unique + sum(shared_files.values()), rss


class PeakMemory:
    """Samples the memory of this process tree every few ms."""

    def __init__(self):
        self.peak_unique = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            unique, rss = memory_of(process_tree(me))
            self.peak_unique = max(self.peak_unique, unique)
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def pool_for(key):
    """``(run(fn, items), close())`` for a pool of the library ``key``."""
    if key == "shoal":
        import shoal

        pool = shoal.Pool(WORKERS)
        return (lambda fn, items: pool.map(fn, items, chunksize=1)), pool.terminate
    if key == "mp":
        import multiprocessing

        pool = multiprocessing.Pool(WORKERS)
        return (lambda fn, items: pool.map(fn, items, chunksize=1)), pool.terminate
    if key == "joblib":
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=WORKERS, backend="loky")
        return (lambda fn, items: par(delayed(fn)(x) for x in items)), lambda: None
    if key == "mpire":
        from mpire import WorkerPool

        pool = WorkerPool(n_jobs=WORKERS, keep_alive=True)

        def run(fn, items):
            return pool.map(fn, [(x,) for x in items], chunk_size=1)

        return run, pool.terminate
    raise SystemExit(f"memory_probe: unknown library {key!r}")


def main(key: str, mb: int) -> None:
    n = mb * (1 << 20) // 8
    run, close = pool_for(key)
    try:
        run(array_sum, [np.zeros(4)] * 4)  # workers up, numpy imported
        if key == "shoal":
            import shoal

            big = shoal.shared.zeros(n)
        else:
            big = np.zeros(n)
        big[:] = 1.0  # touched: resident in the parent
        with PeakMemory() as peak:
            res = run(array_sum, [big, big])
        if list(res) != [float(n)] * 2:
            raise AssertionError(f"wrong sums {res}")
    finally:
        close()
    print(json.dumps([peak.peak_unique, peak.peak_rss]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
