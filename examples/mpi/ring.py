"""A token goes around a ring of ranks: rank 0 starts it, each rank adds
its number and passes it on with ``send``/``recv``, for a few laps.

    shoal run -n 4 ring.py [--laps N]
"""

import argparse

from shoal import MPI

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--laps", type=int, default=3)
laps = parser.parse_args().laps

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right = (rank + 1) % size
left = (rank - 1) % size

token = 0
for lap in range(laps):
    if rank == 0:
        comm.send(token, dest=right, tag=lap)
        token = comm.recv(source=left, tag=lap)
        print(f"after lap {lap + 1} the token is {token}")
    else:
        token = comm.recv(source=left, tag=lap)
        comm.send(token + rank, dest=right, tag=lap)

if rank == 0:
    expected = laps * size * (size - 1) // 2
    print(f"every rank added its number {laps} times: {token} == {expected}: {token == expected}")
