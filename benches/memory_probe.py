"""Peak memory of one library while 2 workers read one large array, for
``compare.py``'s array-memory workload. Run in a fresh interpreter per
library, importing only numpy and that library, so nothing else counts:

    python benches/memory_probe.py shoal 512     # prints [memory, rss_sum]
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)

from peak_memory import PeakMemory  # noqa: E402
from workloads import array_sum  # noqa: E402

WORKERS = 2


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
