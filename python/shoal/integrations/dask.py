"""shoal under dask: any ``concurrent.futures.Executor`` is a dask scheduler
(``dask.compute(x, scheduler=executor)``, ``dask.config.set(scheduler=
executor)``), so shoal's executors need no adapter. What this adds: traces
name dask's tasks by their keys.

Imports nothing of dask: it looks at what is already loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["task_name"]


def task_name(fn: Callable, args: tuple) -> str | None:
    """What a trace calls a task: the dask keys it computes, when ``fn`` is
    dask's batch of graph tasks (``dask.local.batch_execute_tasks``, what
    dask submits to an executor); None for anything else."""
    local = sys.modules.get("dask.local")
    if local is None or fn is not getattr(local, "batch_execute_tasks", None):
        return None
    try:
        keys = [str(task[0]) for task in args[0]]
    except (IndexError, TypeError):
        return None
    return ", ".join(keys) if keys else None
