"""Peak memory over a process tree: a process and everything below it,
every page counted once. Used by ``memory_probe.py`` (arrays passed to
workers), ``compare.py``'s zarr workload, and the test that bounds the
memory of a pass over a zarr array (``tests/test_io.py``).

    with PeakMemory() as peak:
        run_the_work()
    print(peak.peak_unique)                  # bytes, over this process and its children
"""

from __future__ import annotations

import os
import threading


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


def reset_peaks(pids) -> None:
    """Sets each process's peak RSS (VmHWM) back to its current RSS (Linux
    4.0+: ``echo 5 > /proc/PID/clear_refs``), so that :func:`peaks` then
    reads the peak since this moment."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:  # gone, or not ours
            continue


def peaks(pids) -> tuple[int, int]:
    """``(rss, hwm)`` in bytes summed over ``pids``: their resident memory
    now, and the sum of each one's peak since :func:`reset_peaks`. The kernel
    keeps the peak exactly (no sample can miss a short one); the sum is an
    upper bound on the tree's peak, as processes need not peak together."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        rss += int(fields["VmRSS"].split()[0]) * 1024
        hwm += int(fields["VmHWM"].split()[0]) * 1024
    return rss, hwm


class Growth:
    """How much a process tree's memory grows over a block, from the moment
    it is entered (the base):

        with Growth() as grown:
            run_the_work()
        grown.sampled   # bytes: the sampled peak (every page once) above the base
        grown.hwm       # bytes: the sum of each process's exact peak RSS above its base

    ``hwm`` never misses a short peak, and is an upper bound (processes need
    not peak together); ``sampled`` is a lower bound (a sample may miss one).
    Sampling reads every process's smaps every 10 ms, CPU that a timed run
    would feel: ``sample=False`` leaves it out (``sampled`` is then None).
    The tree is the one at entry: start the pool first."""

    def __init__(self, sample: bool = True) -> None:
        self.sample = sample
        self.sampled = None

    def __enter__(self):
        self._tree = process_tree(os.getpid())
        self.base = memory_of(self._tree)[0]
        reset_peaks(self._tree)
        self._base_rss = peaks(self._tree)[0]
        self._peak = PeakMemory().__enter__() if self.sample else None
        return self

    def __exit__(self, *exc):
        if self._peak is not None:
            self._peak.__exit__(*exc)
            self.sampled = self._peak.peak_unique - self.base
        self.hwm = peaks(self._tree)[1] - self._base_rss
