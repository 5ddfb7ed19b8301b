"""SPMD message passing: ``from shoal import MPI``, ``shoal run -n N``,
``shoal.spmd(fn, n)``.

- ``MPI``: mpi4py's names (communicators, ops, requests, datatypes) on
  shoal's shared-memory transport; under ``mpiexec``/``srun`` (see
  ``detect``) ``shoal.MPI`` is mpi4py's instead.
- ``comm``, ``collectives``, ``buffered``, ``arena``: the communicator and
  its algorithms. ``request``, ``status``, ``ops``, ``datatypes``,
  ``buffers``, ``constants``, ``exception``: MPI's other objects.
- ``runtime``: this process as a rank; ``report``: what ranks are doing,
  in words; ``payload``: objects as messages.
- ``launcher``: starting and watching ranks; ``rank``: a rank's bootstrap.
"""
