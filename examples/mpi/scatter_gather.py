"""``Scatter`` a numpy array from rank 0 in equal parts, work on each part,
``Gather`` the results back.

    shoal run -n 4 scatter_gather.py [--per-rank N]
"""

import argparse

import numpy as np
from shoal import MPI

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--per-rank", type=int, default=1_000_000)
per_rank = parser.parse_args().per_rank

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

data = np.arange(size * per_rank, dtype="f8") if rank == 0 else None
part = np.empty(per_rank, dtype="f8")
comm.Scatter(data, part, root=0)  # rank i gets data[i * per_rank:(i + 1) * per_rank]

part = np.sqrt(part) * 2.0  # each rank works on its own part

result = np.empty(size * per_rank, dtype="f8") if rank == 0 else None
comm.Gather(part, result, root=0)

if rank == 0:
    print(f"{size} ranks worked on {per_rank:,} numbers each")
    print(f"first {result[:4].tolist()}, last {result[-1]:.6f}")
    print(f"same as on one rank: {np.array_equal(result, np.sqrt(data) * 2.0)}")
