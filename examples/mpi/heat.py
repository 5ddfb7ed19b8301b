"""Heat flowing along a rod, the 1-D heat equation by explicit finite
differences. Each rank owns a piece of the rod plus one ghost cell at each
end; every step it swaps edge values with its neighbours (``Sendrecv``,
``MPI.PROC_NULL`` past the ends of the rod).

    shoal run -n 4 heat.py [--points N] [--steps N]
"""

import argparse

import numpy as np
from shoal import MPI

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--points", type=int, default=1_000)
parser.add_argument("--steps", type=int, default=20_000)
args = parser.parse_args()

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
if args.points % size:
    raise SystemExit(f"--points ({args.points}) must split evenly over {size} ranks")
local = args.points // size
alpha = 0.25  # diffusion number: stable for <= 0.5
left = rank - 1 if rank > 0 else MPI.PROC_NULL
right = rank + 1 if rank < size - 1 else MPI.PROC_NULL


def step_rod(u, steps):
    """`steps` steps of the rod `u` (with its two ghost cells)."""
    for _ in range(steps):
        u[1:-1] += alpha * (u[:-2] - 2 * u[1:-1] + u[2:])
    return u


# The rod starts cold (0) with a hot middle (100); its ends stay at 0.
x = (np.arange(rank * local, (rank + 1) * local) + 0.5) / args.points
u = np.zeros(local + 2)
u[1:-1] = np.where(np.abs(x - 0.5) < 0.1, 100.0, 0.0)

for _ in range(args.steps):
    # Halo exchange: my first value goes left while the right neighbour's
    # first value arrives in my right ghost cell, and the other way round.
    comm.Sendrecv(u[1:2], dest=left, recvbuf=u[-1:], source=right)
    comm.Sendrecv(u[-2:-1], dest=right, recvbuf=u[0:1], source=left)
    u[1:-1] += alpha * (u[:-2] - 2 * u[1:-1] + u[2:])

rod = np.empty(args.points) if rank == 0 else None
comm.Gather(np.ascontiguousarray(u[1:-1]), rod, root=0)

if rank == 0:
    print(f"{args.points} points, {args.steps} steps, {size} ranks")
    print(f"hottest {rod.max():.6f}, middle {rod[args.points // 2]:.6f}, heat {rod.sum():.6f}")
    serial = np.zeros(args.points + 2)
    middle = np.abs((np.arange(args.points) + 0.5) / args.points - 0.5) < 0.1
    serial[1:-1] = np.where(middle, 100.0, 0.0)
    step_rod(serial, args.steps)
    print(f"same as on one rank: {np.array_equal(rod, serial[1:-1])}")
