"""Hello from every rank.

shoal run -n 4 hello.py          # on this machine, no MPI needed
mpiexec -n 4 python hello.py     # the same program on MPI (mpi4py)
"""

from shoal import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
size = comm.Get_size()

print(f"Hello from rank {rank} of {size}")
comm.Barrier()
if rank == 0:
    print(f"All {size} ranks said hello")
