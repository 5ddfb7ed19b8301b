"""One Pool across an MPI launch: ``srun shoal run --pool prog.py`` or
``mpiexec -n N python -m shoal.cluster prog.py``.

Rank 0 runs the program; every other rank serves it: ``shoal.Pool()`` in
the program hands its tasks to the serving ranks, and each runs them on
shoal's local engine (a process pool on the cores the launcher gave it).
Messages between ranks travel over mpi4py, without ``MPI_Comm_spawn``.

- ``world``: whether this process is rank 0 of such a launch (light: the
  Pool asks it on every construction; it imports no MPI);
- ``launch``: the launcher (``run_pool``) and the CLI glue;
- ``link``: rank 0's side of the MPI traffic (one thread);
- ``workers``: ``MpiWorkers``, the set of workers a Pool's pipeline drives;
- ``server``: a serving rank's loop;
- ``messages``: what the ranks say to each other.
"""
