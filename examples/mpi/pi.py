"""pi by the midpoint rule, the sum split over the ranks by a stride and
combined with ``reduce``.

    shoal run -n 4 pi.py [--steps N]
"""

import argparse
import math

from shoal import MPI

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=10_000_000)
steps = parser.parse_args().steps

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

start = MPI.Wtime()
h = 1.0 / steps
partial = 0.0
for i in range(rank, steps, size):  # this rank's share: every size-th step
    x = (i + 0.5) * h
    partial += 4.0 / (1.0 + x * x)

pi = comm.reduce(partial * h, op=MPI.SUM, root=0)
if rank == 0:
    print(f"pi is about {pi:.12f} (error {abs(pi - math.pi):.1e})")
    print(f"{steps:,} steps on {size} ranks in {MPI.Wtime() - start:.2f} s")
