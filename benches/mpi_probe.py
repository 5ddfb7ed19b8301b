"""The MPI workloads of ``benches/compare.py``, measured inside one launch.

    srun -n 3 -O -c 1 python -m shoal.cluster mpi_probe.py shoal ...   # Pool served by 2 ranks
    python mpi_probe.py shoal ...                                      # local shoal.Pool(2)
    srun -n 3 -O -c 1 python -m mpi4py.futures mpi_probe.py mpi4py ... # MPIPoolExecutor

``mpi_probe.py LIB CALLS PI_STEPS ARRAY_MB ROUNDS``. Runs each workload
ROUNDS times on one warmed pool, interleaved with a serial run of the pi
chunks (CPU speed drifts), and prints one JSON line: the median seconds of
each workload and of the serial pi.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from workloads import array_sum, inc, pi_chunk, pi_chunks  # noqa: E402


def measure(lib: str, calls: int, pi_steps: int, array_mb: int, rounds: int) -> dict:
    import numpy as np

    chunks = pi_chunks(pi_steps, 64)
    array = np.random.default_rng(0).standard_normal(array_mb * (1 << 20) // 8)
    total = float(array.sum())
    if lib == "mpi4py":
        from mpi4py.futures import MPIPoolExecutor

        pool = MPIPoolExecutor()

        def trivial(chunksize=1):
            return list(pool.map(inc, range(calls), chunksize=chunksize))

        def pi():
            return sum(pool.starmap(pi_chunk, chunks))

        def arrays():
            return list(pool.map(array_sum, [array] * 16))

        # mpi4py's default chunksize is 1; the same map with shoal's chunks:
        chunked = -(-calls // 8)
        extra = {"trivial_chunked": lambda: trivial(chunked)}
    else:
        import shoal

        pool = shoal.Pool() if lib == "shoal" else shoal.Pool(2)

        def trivial():
            return pool.map(inc, range(calls))

        def pi():  # 64 tasks, as mpi4py's starmap makes
            return sum(pool.starmap(pi_chunk, chunks, chunksize=1))

        def arrays():
            return pool.map(array_sum, [array] * 16, chunksize=1)

        extra = {}

    workloads = {"trivial": trivial, "pi": pi, "array": arrays, **extra}
    # Warm: workers started, functions and numpy imported.
    trivial_warm = list(pool.map(inc, range(100)))
    assert trivial_warm == list(range(1, 101))
    assert list(pool.map(array_sum, [np.zeros(4)] * 4)) == [0.0] * 4
    times: dict[str, list[float]] = {name: [] for name in [*workloads, "serial_pi"]}
    for _ in range(rounds):
        started = time.perf_counter()
        serial = sum(pi_chunk(*c) for c in chunks)
        times["serial_pi"].append(time.perf_counter() - started)
        assert abs(serial - 3.141592653589793) < 1e-6
        for name, run in workloads.items():
            started = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - started)
            if name.startswith("trivial"):
                assert result == list(range(1, calls + 1)), name
            elif name == "pi":
                assert abs(result - serial) < 1e-9
            else:
                assert len(result) == 16 and all(abs(r - total) < 1e-6 * abs(total) for r in result)
    workers = getattr(pool, "worker_count", None)
    pool.shutdown() if lib == "mpi4py" else pool.terminate()
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return {"lib": lib, "workers": workers, "median": medians}


if __name__ == "__main__":
    lib, calls, pi_steps, array_mb, rounds = sys.argv[1], *map(int, sys.argv[2:6])
    print(json.dumps(measure(lib, calls, pi_steps, array_mb, rounds)), flush=True)
