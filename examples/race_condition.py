"""The race-condition lesson: four processes each add 1 to one shared
counter 20,000 times.

``counter.value += 1`` is two steps: a read, then a write (each holds the
counter's lock for a moment, as multiprocessing's ``Value`` does). When
another process writes between them, one of the two updates is lost. With
``counter.get_lock()`` held around both steps, none is.

A ``Barrier`` lets the processes start counting at the same moment: each
is a fresh interpreter, started one after the other, and without it the
first could finish before the last began. (On a machine busy with other
programs, a run may now and then lose nothing: the processes took turns.
multiprocessing's Value does the same.)

    python examples/race_condition.py [--processes 4] [--increments 20000]
"""

from __future__ import annotations

import argparse

import shoal


def add(counter, start, times, use_lock):
    start.wait(timeout=60)  # all together
    if use_lock:
        for _ in range(times):
            with counter.get_lock():  # the read and the write, as one step
                counter.value += 1
    else:
        for _ in range(times):
            counter.value += 1  # read, then write: another process may come between


def run(processes: int, times: int, use_lock: bool) -> int:
    counter = shoal.Value("i", 0)
    start = shoal.Barrier(processes)
    workers = [
        shoal.Process(target=add, args=(counter, start, times, use_lock)) for _ in range(processes)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    return counter.value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--increments", type=int, default=20_000, help="per process")
    args = parser.parse_args()
    total = args.processes * args.increments
    unlocked = run(args.processes, args.increments, use_lock=False)
    locked = run(args.processes, args.increments, use_lock=True)
    print(f"without a lock: {unlocked:,} of {total:,} increments ({total - unlocked:,} lost)")
    print(f"with get_lock(): {locked:,} of {total:,} increments")
