"""Shared memory when processes are killed: no descriptor or mapping left
in the parent or its workers, no process left behind. Shoal's segments are
memfds (never files in /dev/shm), so these tests look at the descriptors
and mappings of shoal's own processes, and at nothing else on the machine."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap

import helpers_mod as h
import numpy as np
import pytest
import shm_helpers as sh
import shoal

pytestmark = [pytest.mark.timeout(60), pytest.mark.isolated]


def test_killing_a_worker_that_holds_segments_leaks_nothing(tmp_path):
    big = np.random.default_rng(0).standard_normal(1 << 20)  # 8 MB
    with shoal.Pool(2) as pool:
        # Warm: the workers and their descriptors exist, and so do the
        # pool's kept copy of `big` and the mapping it compares `big` with.
        pool.map(sh.total, [big] * 2)
        pool.map(sh.total, [big] * 2)
        gc.collect()
        fds_before = len(os.listdir("/proc/self/fd"))
        maps_before = sh.shoal_mappings()
        marker = tmp_path / "died"
        result = pool.apply_async(sh.hold_array_then_die, (big, str(marker)))
        with pytest.raises(shoal.WorkerLostError):
            result.get(timeout=20)
        assert marker.exists()
        assert h.wait_until(lambda: len(pool.worker_pids()) == 2, 10)
        # The pool still works with large arrays after the death.
        assert pool.map(sh.total, [big, big]) == [float(big.sum())] * 2
        del result
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) <= fds_before
        assert sh.shoal_mappings() <= maps_before
        # Idle workers, the replacement among them, hold no segment either.
        assert h.wait_until(
            lambda: all(
                sh.shoal_fds(w) == 0 and sh.shoal_mappings(w) == 0 for w in pool.worker_pids()
            ),
            10,
        ), [(w, sh.shoal_fds(w), sh.shoal_mappings(w)) for w in pool.worker_pids()]


PARENT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import shoal
    sys.path.insert(0, {tests!r})
    import shm_helpers as sh

    if __name__ == "__main__":
        shared = shoal.shared.zeros(1 << 20)
        lock, value, queue = shoal.Lock(), shoal.Value("i", 1), shoal.Queue()
        pool = shoal.Pool(2)
        big = np.ones(1 << 20)
        pending = [pool.apply_async(sh.hold_lock, (lock, 60)) for _ in range(2)]
        pending += [pool.apply_async(sh.total, (big,)) for _ in range(4)]
        child = shoal.Process(target=sh.hold_lock, args=(lock, 60))
        child.start()
        queue.put(big)
        while not lock.locked():
            time.sleep(0.01)
        print(json.dumps({{"workers": pool.worker_pids(), "child": child.pid}}), flush=True)
        time.sleep(60)
    """
)


def test_killing_the_parent_leaves_no_process_and_no_segment_mapped(tmp_path):
    script = tmp_path / "parent.py"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script.write_text(PARENT_SCRIPT.format(tests=tests_dir))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        line = parent.stdout.readline()
        pids = json.loads(line)
        children = pids["workers"] + [pids["child"]]
        assert all(h.pid_alive(p) for p in children)
        assert h.wait_until(lambda: all(sh.shoal_mappings(p) > 0 for p in children), 10)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert not h.wait_pids_gone(children, 10), "a child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        parent.stdout.close()
    # Every process that held the segments is gone, so the kernel has freed
    # them (memfds live only as long as a descriptor or mapping does).
    assert all(sh.shoal_mappings(p) == 0 and sh.shoal_fds(p) == 0 for p in children)
