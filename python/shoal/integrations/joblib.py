"""joblib on shoal's engine: ``with joblib.parallel_config(backend="shoal"):``
runs ``joblib.Parallel`` -- and everything built on it, scikit-learn's
``n_jobs`` among them -- on a ``shoal.ProcessPoolExecutor``.

The backend is registered under the name ``"shoal"`` as soon as both shoal
and joblib are imported, in either order (``shoal.integrations`` watches for
joblib's import; ``register()`` does it by hand). Options of
``parallel_config(backend="shoal", ...)`` beyond joblib's own are shoal's
(``timeout``, ``retries``, ``retry_on``, ``max_memory``, ``progress``,
``trace``).

- The workers are kept from one ``Parallel`` call to the next (as loky's
  are) while ``n_jobs`` and the options stay the same.
- A large array (128 KiB or more) given to several tasks of one call is
  copied to shared memory once and mapped read-only by the workers, as
  joblib's default ``mmap_mode="r"`` memmaps are, with no temporary files;
  as with joblib, what is written into the array during the call is not
  seen by its later tasks. The next call of the same ``Parallel`` object
  (or ``parallel_config`` block) reuses the copy if the array still holds
  the same bytes (compared at memory speed), so a loop of calls over one
  array copies it once; copies go with their array, or after a call that
  did not use them. ``max_nbytes=None`` or a writable ``mmap_mode``
  (``"r+"``, ``"w+"``, ``"c"``) give each batch its own writable copy
  instead; ``temp_folder`` is not used.
- ``n_jobs=-1`` is :func:`shoal.cpu_count`; ``batch_size="auto"`` grows
  batches until each runs about 50 ms (shoal's hand-over is cheap, so
  batches need not be as long as loky's 200 ms); ``return_as="generator"``,
  ``timeout`` and ``verbose`` behave as joblib documents.
- A task's exception comes back as itself, with the worker's traceback as
  its cause; a worker's death fails its batch with
  ``shoal.errors.ExecutorWorkerLostError`` (also ``BrokenProcessPool``).
- Nested ``Parallel`` calls inside a task run on threads (joblib's default
  for nested calls).
"""

from __future__ import annotations

import threading

from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    register_parallel_backend,
)

from ..cpus import cpu_count
from ..pool.executor import ProcessPoolExecutor
from ..wire.kept import CopyCache

__all__ = ["ShoalBackend", "current_executor", "register"]

#: The memmap modes under which workers get arrays read-only.
_READ_ONLY_MODES = ("r", None)

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None
_executor_key: tuple | None = None


def register() -> None:
    """Registers the backend as ``"shoal"`` (idempotent)."""
    register_parallel_backend("shoal", ShoalBackend)


def current_executor() -> ProcessPoolExecutor | None:
    """The executor the backend's ``Parallel`` calls run on (None before the
    first): e.g. its ``trace()`` with ``parallel_config(backend="shoal",
    trace=True)``."""
    return _executor


def _executor_for(n_jobs: int, options: dict) -> ProcessPoolExecutor:
    """The shared executor, a new one if ``n_jobs`` or the options changed.
    The one it replaces is not shut down here: a call on another thread may
    still be using it; once no backend holds it, it finishes its work and
    stops (as any dropped executor does)."""
    global _executor, _executor_key
    key = (n_jobs, tuple(sorted(options.items(), key=lambda kv: kv[0])))
    with _lock:
        if _executor is None or _executor_key != key or _executor._shutdown_thread:
            _executor = ProcessPoolExecutor(n_jobs, **options)
            _executor_key = key
        return _executor


def _run_batch(batch):
    """A worker's task: one joblib batch (a ``BatchedCalls``)."""
    return batch()


def _batch_name(batch) -> str:
    """What a trace calls a batch: its function, and how many calls."""
    try:
        func = batch.items[0][0]
    except (AttributeError, IndexError, TypeError):
        return type(batch).__name__
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{name} x{len(batch.items)}"


class ShoalBackend(AutoBatchingMixin, ParallelBackendBase):
    """The joblib backend (see the module's docstring)."""

    supports_retrieve_callback = True
    supports_return_generator = True
    supports_timeout = True
    supports_inner_max_num_threads = False
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = 1
    MIN_IDEAL_BATCH_DURATION = 0.05
    MAX_IDEAL_BATCH_DURATION = 1.0

    def __init__(self, nesting_level=None, inner_max_num_threads=None, **options) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._options = options  # shoal's executor options
        self._workers: ProcessPoolExecutor | None = None
        self._cache = CopyCache()  # this backend's calls' shared copies
        self._copies: CopyCache | None = None  # the current call's, if shared
        self._outstanding: set = set()

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._workers = _executor_for(n_jobs, self._options)
        # joblib's memmapping options, read as what they mean here.
        share = (
            backend_kwargs.get("max_nbytes", 1) is not None
            and backend_kwargs.get("mmap_mode", "r") in _READ_ONLY_MODES
        )
        self._copies = self._cache if share else None
        return n_jobs

    def submit(self, func, callback=None):
        workers = self._workers
        name = _batch_name(func) if workers._recorder is not None else None
        future = workers._submit(_run_batch, (func,), {}, copies=self._copies, name=name)
        outstanding = self._outstanding
        outstanding.add(future)
        future.add_done_callback(outstanding.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        return future.result()

    def abort_everything(self, ensure_ready=True):
        """Stops this call's batches (running ones by replacing their worker);
        the executor stays ready for the next call."""
        if self._workers is not None and self._outstanding:
            self._workers.cancel(*list(self._outstanding))
        self._outstanding = set()

    def terminate(self):
        """The end of a ``Parallel`` call: the workers stay for the next one,
        and so do the shared copies of the arrays it used (the next call
        checks that an array is unchanged before it reuses its copy)."""
        self._cache.end_call()
        self._outstanding = set()
        self.reset_batch_stats()

    def __reduce__(self):
        return (ShoalBackend, ())
