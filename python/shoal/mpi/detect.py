"""Was this process started by an MPI launcher (``mpiexec``, ``srun``)?
Then ``shoal.MPI`` is mpi4py's ``MPI``, untouched; otherwise shoal's own.

The launchers say so in the environment: Open MPI's ``OMPI_COMM_WORLD_*``,
PMIx's ``PMIX_RANK``, MPICH and Intel MPI's ``PMI_RANK``/``PMI_SIZE`` (and
Hydra's ``MPI_LOCALNRANKS``), MVAPICH's ``MV2_COMM_WORLD_*``, and Slurm's
``srun`` (``SLURM_PROCID`` in a job step of more than one task).
"""

from __future__ import annotations

import os

_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "Open MPI's mpiexec"),
    ("PMIX_RANK", "a PMIx launcher"),
    ("PMI_SIZE", "an MPICH (PMI) launcher"),
    ("PMI_RANK", "an MPICH (PMI) launcher"),
    ("MPI_LOCALNRANKS", "MPICH's mpiexec"),
    ("MV2_COMM_WORLD_SIZE", "MVAPICH's launcher"),
)


def launcher(environ=None) -> str | None:
    """What started this process as an MPI rank (and how we know), or None."""
    from . import runtime

    if runtime.attached:  # a rank of shoal's own launcher
        return None
    env = os.environ if environ is None else environ
    for var, who in _VARIABLES:
        if var in env:
            return f"{who} ({var} is set)"
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
        try:
            many = int(tasks) > 1
        except ValueError:
            many = False
        if many:
            return f"srun (SLURM_PROCID is set in a step of {tasks} tasks)"
    return None


def mpi_module():
    """``mpi4py.MPI`` under an MPI launcher, else ``shoal.mpi.MPI``."""
    who = launcher()
    if who is None:
        from . import MPI

        return MPI
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            f"this program was started by {who}, so `from shoal import MPI` needs mpi4py: "
            "pip install 'shoal[mpi]' (or mpi4py built for your cluster's MPI); to run it "
            "without MPI, start it with `shoal run -n N`"
        ) from None
    return MPI
