"""The message-passing benchmarks, as one program that every rank runs:
``shoal run -n N mpi_workloads.py WORKLOAD ROUNDS SCALE`` or
``mpiexec -n N python mpi_workloads.py WORKLOAD ROUNDS SCALE`` (where
``from shoal import MPI`` is mpi4py's). Rank 0 prints one JSON line:
``{"workload": ..., "seconds": [...]}``, one time per round (the median
of that round's repetitions), per operation as described below."""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from shoal import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def timed(fn, reps: int) -> float:
    """Median seconds of one `fn()` over `reps` runs, each between barriers."""
    samples = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def batches(fn, per_batch: int, count: int) -> float:
    """Median seconds of one `fn()` over `count` batches of `per_batch`."""
    samples = []
    for _ in range(count):
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        samples.append((time.perf_counter() - t0) / per_batch)
    return statistics.median(samples)


def pingpong_object(scale: int) -> float:
    """One-way latency of a small dict: half a round trip (send/recv)."""
    obj = {"step": 1, "value": 2.5}

    def trip():
        if rank == 0:
            comm.send(obj, dest=1)
            comm.recv(source=1)
        elif rank == 1:
            comm.recv(source=0)
            comm.send(obj, dest=0)

    return batches(trip, 2000 // scale, 20) / 2


def pingpong_buffer(scale: int) -> float:
    """One-way latency of an 8-byte numpy Send/Recv."""
    buf = np.zeros(1)

    def trip():
        if rank == 0:
            comm.Send(buf, dest=1)
            comm.Recv(buf, source=1)
        elif rank == 1:
            comm.Recv(buf, source=0)
            comm.Send(buf, dest=0)

    return batches(trip, 2000 // scale, 20) / 2


def send_object(scale: int) -> float:
    """A 64 MB float64 array, lower-case send to rank 1 until received."""
    a = np.ones(8_000_000 // scale)

    def once():
        if rank == 0:
            comm.send(a, dest=1)
        elif rank == 1:
            comm.recv(source=0)

    return timed(once, 5)


def send_buffer(scale: int) -> float:
    """A 64 MB float64 array, upper-case Send into a buffer on rank 1."""
    a = np.ones(8_000_000 // scale)
    b = np.empty_like(a)

    def once():
        if rank == 0:
            comm.Send(a, dest=1)
        elif rank == 1:
            comm.Recv(b, source=0)

    return timed(once, 7)


def allreduce(scale: int) -> float:
    """Allreduce (SUM) of an 8 MB float64 array."""
    a = np.full(1_000_000 // scale, rank + 1.0)
    b = np.empty_like(a)
    return batches(lambda: comm.Allreduce(a, b, op=MPI.SUM), 5, 10)


def bcast_object(scale: int) -> float:
    """A 64 MB float64 array broadcast (lower-case bcast) from rank 0."""
    a = np.ones(8_000_000 // scale) if rank == 0 else None
    return timed(lambda: comm.bcast(a, root=0), 5)


WORKLOADS = {
    "pingpong-object": pingpong_object,
    "pingpong-buffer": pingpong_buffer,
    "send-object": send_object,
    "send-buffer": send_buffer,
    "allreduce": allreduce,
    "bcast-object": bcast_object,
}


def main() -> None:
    name, rounds, scale = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fn = WORKLOADS[name]
    fn(max(scale, 10))  # warm up: imports, segments, pages
    seconds = [fn(scale) for _ in range(rounds)]
    if rank == 0:
        print(json.dumps({"workload": name, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
