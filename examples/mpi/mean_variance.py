"""Mean and variance of a large array spread over the ranks: each rank
holds a chunk, sums go through ``allreduce``, and the two-pass formula
keeps the variance accurate.

    shoal run -n 4 mean_variance.py [--size N]
"""

import argparse

import numpy as np
from shoal import MPI

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--size", type=int, default=20_000_000)
n = parser.parse_args().size

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

# Rank 0 makes the data and hands each rank its chunk (large arrays travel
# through shared memory: a pickle of the chunk, not a copy through a pipe).
if rank == 0:
    data = np.random.default_rng(42).normal(loc=10.0, scale=3.0, size=n)
    chunks = np.array_split(data, size)
else:
    chunks = None
chunk = comm.scatter(chunks, root=0)

count = comm.allreduce(chunk.size, op=MPI.SUM)
mean = comm.allreduce(chunk.sum(), op=MPI.SUM) / count
squares = comm.allreduce(((chunk - mean) ** 2).sum(), op=MPI.SUM)
variance = squares / (count - 1)

if rank == 0:
    print(f"{count:,} values on {size} ranks")
    print(f"mean {mean:.6f}, variance {variance:.6f}")
    print(
        "numpy agrees:",
        bool(np.isclose(mean, data.mean()) and np.isclose(variance, data.var(ddof=1))),
    )
