"""A process pool's set of workers: fresh interpreters started by the
engine, to which functions, arguments and results travel pickled (large
buffers in shared memory). The pipeline (``pool.pipeline``) drives it."""

from __future__ import annotations

import os
import sys
import time

from .. import _shoal, interpreter
from ..cpus import cpu_count
from ..wire.kept import KeptCopies
from ..wire.transfer import (
    dumps_function,
    pack,
    pack_batches,
    payload_nbytes,
)
from ..worker.output import ParentLogLevel
from .output import parent_log_level

#: Thread-count variables of numeric libraries, capped per worker so N
#: workers do not each start a thread per core.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def worker_env(processes: int) -> list[tuple[str, str]]:
    per_worker = str(max(1, cpu_count() // processes))
    return [(var, per_worker) for var in THREAD_VARS if var not in os.environ]


def timed_batches(chunks: list[list], kept: KeptCopies | None = None):
    """``pack_batches(chunks, kept)`` as ``(start, payloads, ns spent packing
    them)``; a call that copied large buffers ends for ``kept`` (see
    ``ProcessWorkers.pack``) once the last batch is packed."""
    batches = pack_batches(chunks, kept)
    copied = False
    while True:
        started = time.perf_counter_ns()
        try:
            start, payloads = next(batches)
        except StopIteration:
            if copied:
                kept.end_call()
            return
        copied = copied or (kept is not None and bool(payloads) and type(payloads[-1]) is not bytes)
        yield start, payloads, time.perf_counter_ns() - started


class EngineWorkers:
    """A set of workers the engine runs: the calls ``pool.pipeline`` lists
    that are the engine's own."""

    def __init__(self, engine: _shoal.Engine) -> None:
        self.engine = engine
        self.cancel = engine.cancel
        self.withdraw = engine.withdraw
        self.held = engine.held
        self.wait_completions = engine.wait_completions
        self.worker_pids = engine.worker_pids
        self.records = engine.workers
        self.join = engine.join

    def close(self) -> None:
        self.engine.close()

    def terminate(self) -> None:
        self.engine.terminate()


class ProcessWorkers(EngineWorkers):
    """See the module's docstring."""

    kind = "process"
    pickled = True
    settle = None  # completions are decoded as they come

    def __init__(self, engine: _shoal.Engine, log_level: ParentLogLevel | None = None) -> None:
        super().__init__(engine)
        self.release = engine.release_function
        self._log_level = log_level
        self._followed_level: int | None = -1  # none yet: the first call writes it
        self.kept = KeptCopies()  # large arguments' copies, for the calls after

    def close(self) -> None:
        self.kept.clear()
        super().close()

    def terminate(self) -> None:
        self.kept.clear()
        super().terminate()

    def follow_logging(self) -> None:
        """At the start of a call: the workers' logging level becomes the
        parent's, as it is now."""
        if self._log_level is not None:
            level = parent_log_level()
            if level != self._followed_level:
                self._log_level.follow(level)
                self._followed_level = level

    @classmethod
    def start(
        cls,
        processes: int,
        initializer,
        initargs: tuple,
        maxtasksperchild: int | None,
        max_memory: int | None,
        trace: bool,
    ) -> ProcessWorkers:
        """Starts ``processes`` workers, each running ``initializer(*initargs)``
        first. Their logging level follows the parent's (``follow_logging``)."""
        log_level = ParentLogLevel(parent_log_level())
        # What each worker's Init frame carries (see
        # ``worker.process.ProcessSide.initialise``).
        setup = (list(sys.path), initializer, tuple(initargs), max_memory, log_level)
        init = pack(setup + (processes,))
        return cls.start_packed(processes, init, maxtasksperchild, max_memory, trace, log_level)

    @classmethod
    def start_packed(
        cls,
        processes: int,
        init,
        maxtasksperchild: int | None,
        max_memory: int | None,
        trace: bool,
        log_level: ParentLogLevel | None = None,
    ) -> ProcessWorkers:
        """``start``, with the Init frame's body packed already (a serving
        rank of an MPI launch gets it so from rank 0, with a fixed logging
        level)."""
        engine = _shoal.Engine(
            processes,
            sys.executable,
            interpreter.command("shoal.worker.process"),
            worker_env(processes),
            init,
            maxtasksperchild,
            max_memory,
            trace,
        )
        return cls(engine, log_level)

    def register(self, fn_id: int, func, mode: int, retry_on: tuple) -> None:
        self.engine.register_function(fn_id, dumps_function(func, mode, retry_on))

    def pack(self, obj, by_value: bool = False, kept: KeptCopies | None = None):
        """``obj`` packed for the workers. A large buffer (an array) is
        copied to shared memory once, and the copy kept while the array
        lives: a later call that passes it again, unchanged, sends the same
        copy. Copies that a call with large buffers did not use go at its
        end. ``kept``: a front end's own copies instead (the joblib
        backend's, which ends its calls itself)."""
        if kept is not None:
            return pack(obj, by_value, kept)
        packed = pack(obj, by_value, self.kept)
        if type(packed) is not bytes:
            self.kept.end_call()
        return packed

    def pack_many(self, chunks: list) -> list:
        """``pack_many``, with copies kept as ``pack`` keeps them."""
        return [p for _, batch, _ in self.pack_batches(chunks) for p in batch]

    def pack_batches(self, chunks: list):
        """``timed_batches``, with copies kept as ``pack`` keeps them."""
        return timed_batches(chunks, self.kept)

    @staticmethod
    def sizes(payloads: list) -> list[int]:
        return [payload_nbytes(p) for p in payloads]

    def submit(self, fn_id: int, first_id: int, chunks: list, payloads: list, options) -> None:
        self.engine.submit(fn_id, first_id, payloads, options.timeout, options.retries)

    def submit_one(self, fn_id: int, task_id: int, args, payload, options) -> None:
        self.engine.submit_one(fn_id, task_id, payload, options.timeout, options.retries)
