"""The race-condition lesson: many tasks add 1 to one shared counter.

``counter.value += 1`` is two steps, a read and a write. When two processes
interleave them, both read the same number and one increment is lost. With
``counter.get_lock()`` held around the two steps, none is.

    python examples/race_condition.py
"""

from __future__ import annotations

import time

import shoal

INCREMENTS = 2_000
TASKS = 20


def add(counter, times, use_lock):
    for _ in range(times):
        if use_lock:
            with counter.get_lock():
                current = counter.value
                time.sleep(0.00001)  # a little work between the read and the write
                counter.value = current + 1
        else:
            current = counter.value
            time.sleep(0.00001)
            counter.value = current + 1


def run(pool, use_lock):
    counter = shoal.Value("i", 0)
    per_task = INCREMENTS // TASKS
    pool.starmap(add, [(counter, per_task, use_lock)] * TASKS, chunksize=1)
    return counter.value


if __name__ == "__main__":
    with shoal.Pool() as pool:
        unlocked = run(pool, use_lock=False)
        locked = run(pool, use_lock=True)
    print(f"without a lock: {unlocked} of {INCREMENTS} increments ({INCREMENTS - unlocked} lost)")
    print(f"with get_lock(): {locked} of {INCREMENTS} increments")
