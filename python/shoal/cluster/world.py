"""Whether this process runs a program whose Pools are served by the other
ranks of an MPI launch. Set by the launcher on rank 0 (``cluster.launch``);
read by ``shoal.Pool`` on construction. Imports nothing: a local Pool pays
one function call for the question."""

from __future__ import annotations

_world = None


def current_world():
    """The ranks that serve this program's Pools (an object with
    ``worker_count`` and ``start_workers(processes, setup,
    maxtasksperchild, max_memory, trace)``), or None outside such a
    launch."""
    return _world


def serve_pools_with(world) -> None:
    """From now on Pools are served by ``world`` (None: by local workers)."""
    global _world
    _world = world
