"""``shoal.get_context(method)``: an object with multiprocessing's names
(``ctx.Pool``, ``ctx.Process``, ``ctx.Queue``, ``ctx.Lock``, ...), so code
written as ``ctx = multiprocessing.get_context("spawn")`` runs on shoal
by changing the import.

shoal has one way to start a process: a fresh interpreter (as ``spawn``),
started by its engine, with the parent's ``sys.path``; functions and
classes from ``__main__`` travel by value (cloudpickle), so the script is
not imported again in the child and needs no ``if __name__ ==
"__main__"`` guard for that. ``"fork"`` and ``"forkserver"`` are accepted
and mean the same: shoal never forks (a forked copy of a process whose
engine runs threads could deadlock). What ``fork`` gives multiprocessing
users -- the parent's globals seen by the child -- shoal gives for the
globals a ``__main__`` function reads, captured when it is sent; anything
else goes as an argument, in ``initargs`` or in shared memory.
"""

from __future__ import annotations

from ..cpus import cpu_count

METHODS = ("spawn", "fork", "forkserver")


class ShoalContext:
    """What ``shoal.get_context()`` returns: shoal's API under
    multiprocessing's names."""

    def __init__(self, method: str = "spawn") -> None:
        self._method = method

    def get_start_method(self, allow_none: bool = False) -> str:
        """The method this context was asked for (every one starts a
        fresh interpreter: see the module's documentation)."""
        return self._method

    def get_context(self, method: str | None = None) -> ShoalContext:
        return get_context(method)

    @staticmethod
    def get_all_start_methods() -> list[str]:
        return list(METHODS)

    cpu_count = staticmethod(cpu_count)

    # Classes and factories, imported when first used (a worker that never
    # touches a context does not pay for them).
    def __getattr__(self, name: str):
        module = _NAMES.get(name)
        if module is None:
            raise AttributeError(f"a shoal context has no attribute {name!r}")
        return getattr(__import__(f"shoal.{module}", fromlist=[name]), name)

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(_NAMES))

    def __repr__(self) -> str:
        return f"<shoal context {self._method!r} (fresh interpreters)>"


#: multiprocessing's names -> the shoal module that defines them.
_NAMES = {
    "Pool": "pool.pool",
    "ThreadPool": "pool.threadpool",
    "Process": "sync.process",
    "Queue": "sync.queue",
    "JoinableQueue": "sync.queue",
    "SimpleQueue": "sync.queue",
    "Pipe": "sync.pipe",
    "Lock": "sync.primitives",
    "RLock": "sync.rlock",
    "Semaphore": "sync.semaphore",
    "BoundedSemaphore": "sync.semaphore",
    "Condition": "sync.condition",
    "Event": "sync.event",
    "Barrier": "sync.barrier",
    "Value": "sync.sharedctypes",
    "Array": "sync.sharedctypes",
    "RawValue": "sync.sharedctypes",
    "RawArray": "sync.sharedctypes",
    "Manager": "sync.manager",
}


def get_context(method: str | None = None) -> ShoalContext:
    """A context for ``method`` (``"spawn"``, ``"fork"`` or
    ``"forkserver"``; None means ``"spawn"``). Every method starts fresh
    interpreters: shoal never forks."""
    if method is None:
        method = "spawn"
    if method not in METHODS:
        raise ValueError(
            f"cannot find context for {method!r}: use one of {', '.join(METHODS)} "
            "(each starts a fresh interpreter in shoal)"
        )
    return ShoalContext(method)


def check_context(context) -> None:
    """What ``Pool(context=...)`` accepts: a shoal context or a
    multiprocessing one (shoal starts its workers its own way either way)."""
    if context is None or isinstance(context, ShoalContext):
        return
    if callable(getattr(context, "get_start_method", None)):
        return  # multiprocessing's BaseContext, or one like it
    raise TypeError(
        f"context must be from shoal.get_context() or multiprocessing.get_context(), "
        f"got {context!r}"
    )
