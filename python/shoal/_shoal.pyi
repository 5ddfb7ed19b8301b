# Stub of the native module built from crates/shoal-python (kept by hand).
from collections.abc import Callable
from os import PathLike
from typing import final

from typing_extensions import disjoint_base

class ShoalError(Exception): ...
class CheckpointError(ShoalError): ...
class QueueClosed(ValueError): ...

OUTCOME_DONE: int
OUTCOME_FAILED: int
OUTCOME_LOST: int
OUTCOME_TIMED_OUT: int
OUTCOME_CANCELLED: int
OUTCOME_INIT_FAILED: int
OUTCOME_CANNOT_START: int
OUTCOME_OVER_MEMORY: int

STREAM_STDOUT: int
STREAM_STDERR: int
STREAM_LOG: int

KIND_INIT: int
KIND_FUNC: int
KIND_TASK: int
KIND_FORGET: int
KIND_EXIT: int
KIND_READY: int
KIND_DONE: int
KIND_FAILED: int
KIND_INIT_FAILED: int
KIND_OUTPUT: int
KIND_LOG: int
KIND_RETIRE: int

ACCESS_READ_ONLY: int
ACCESS_OWNED: int
ACCESS_SHARED: int

def cpu_report() -> tuple[int, int, int | None, float | None, int | None]: ...

KEY_LEN: int
STORE_FORMAT_VERSION: int

def digest(parts: list[bytes | memoryview]) -> bytes: ...
def task_keys(salt: bytes, payloads: list[bytes]) -> bytes: ...

@final
class Store:
    def __new__(cls, path: str | PathLike[str]) -> Store: ...
    def function_id(self, digest: bytes, module: str, qualname: str) -> int: ...
    def get_many(self, keys: bytes) -> list[bytes | None]: ...
    def put_many(
        self, function: int, keys: bytes, values: list[bytes], tasks: list[int] | None = None
    ) -> None: ...
    def flush(self) -> None: ...
    def info(
        self,
    ) -> tuple[int, int, int, list[tuple[str, str, int, int, int, int | None, int | None]]]: ...
    def clear(self, function: str | None = None) -> tuple[int, int]: ...
    def close(self) -> None: ...

# A payload: pickled bytes, or (bytes, [Fd | Segment]) when parts of it are
# in shared memory.
Payload = bytes | tuple[bytes, list[Fd | Segment]]

@final
class Fd:
    def fileno(self) -> int: ...
    def size(self) -> int: ...

@final
class Segment:
    @staticmethod
    def create(nbytes: int) -> Segment: ...
    @staticmethod
    def map(fd: Fd, access: int) -> Segment: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    @property
    def access(self) -> int: ...
    @property
    def address(self) -> int: ...
    def fd(self) -> Fd: ...

def copy_to_segment(buffer: object, sealed: bool) -> Fd: ...
def locate(buffer: object) -> tuple[int, int, Segment | None, int]: ...
def find_segment_at(address: int, nbytes: int) -> tuple[Segment, int] | None: ...
def scan_pickle(pickle: bytes, threshold: int) -> int: ...
def all_plain(pickles: list[bytes], threshold: int) -> bool: ...

@final
class SharedLock:
    def __new__(cls, segment: Segment, offset: int) -> SharedLock: ...
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...

@final
class MessageQueue:
    def __new__(cls, tx: Fd | None = None, rx: Fd | None = None) -> MessageQueue: ...
    def fds(self) -> tuple[Fd, Fd]: ...
    def put(
        self, body: bytes, fds: list[Fd | Segment] | tuple[()], timeout: float | None = None
    ) -> bool: ...
    def get(self, timeout: float | None = None) -> tuple[bytes, list[Fd]] | None: ...
    def empty(self) -> bool: ...
    def close(self) -> None: ...

@final
class Child:
    def __new__(
        cls,
        program: str | PathLike[str],
        args: list[str],
        env: list[tuple[str, str]],
        body: bytes,
        fds: list[Fd | Segment] | tuple[()],
    ) -> Child: ...
    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int | None: ...
    def signal(self, signal: int) -> None: ...

@final
class Engine:
    def __new__(
        cls,
        workers: int,
        program: str | PathLike[str],
        args: list[str],
        env: list[tuple[str, str]],
        init: Payload,
        max_tasks_per_child: int | None = None,
        max_memory: int | None = None,
        trace: bool = False,
    ) -> Engine: ...
    @staticmethod
    def with_threads(
        workers: int, start_worker: Callable[[Link, int], None], trace: bool = False
    ) -> Engine: ...
    def register_function(self, fn_id: int, body: Payload) -> None: ...
    def release_function(self, fn_id: int) -> None: ...
    def submit(
        self,
        fn_id: int,
        first_id: int,
        payloads: list[Payload],
        timeout: float | None = None,
        retries: int = 0,
    ) -> None: ...
    def submit_one(
        self,
        fn_id: int,
        task_id: int,
        payload: Payload,
        timeout: float | None = None,
        retries: int = 0,
    ) -> None: ...
    def cancel(self, task_ids: list[int], stop_running: bool = False) -> None: ...
    def wait_completions(
        self, timeout: float | None = None
    ) -> (
        tuple[
            list[tuple[int, int, object, int, tuple[int, int, int, int, int] | None]],
            list[tuple[int, int, int, bytes]],
        ]
        | None
    ): ...
    def workers(self) -> list[tuple[int, int, int, int | None, int]]: ...
    def worker_pids(self) -> list[int]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...

@final
class Link:
    def __new__(cls) -> Link: ...
    def recv(
        self, timeout: float | None = None
    ) -> list[tuple[int, int, int, bytes, list[Fd] | None]]: ...
    def send(self, kind: int, a: int, b: int, body: bytes) -> None: ...
    def flush(self) -> None: ...
    def begin(self, task_id: int) -> None: ...
    def done(
        self, task_id: int, body: Payload, deser_ns: int = 0, result_ser_ns: int = 0
    ) -> None: ...
    def failed(
        self, task_id: int, body: bytes, retryable: bool = False, deser_ns: int = 0
    ) -> None: ...
    def close(self) -> None: ...
    def rss(self) -> int | None: ...

# ------------------------------------------------------------ message passing

class SpmdFailure(Exception):
    """A wait between ranks failed: ``args`` are ``(kind, *details)``."""

SPMD_STATE_RUNNING: int
SPMD_STATE_BLOCKED: int
SPMD_STATE_FINALIZING: int

#: A rank's slot: (pid, state, ended_order, exit_code, signal, finalized,
#: op, ctx, peer, tag, seq, root, location, drained).
SlotView = tuple[
    int, int, int, int | None, int | None, bool, int, int, int, int, int, int, str, bool
]
#: A received payload: a pickle, or a pickle and its segments.
SpmdPayload = bytes | tuple[bytes, list[Fd]]

def adopt_fd(n: int) -> Fd: ...
def local_world(size: int) -> tuple[Fd, list[tuple[Fd, Fd]]]: ...

@final
class Endpoint:
    rank: int
    size: int
    inline_max: int
    main_by_value: bool
    def __new__(
        cls,
        rank: int,
        world: Fd,
        inbox: Fd,
        outboxes: list[Fd],
        spin_us: float,
        yield_in_spin: bool,
        where_fn: Callable[[], str],
    ) -> Endpoint: ...
    def add_group(self, ranks: list[int]) -> int: ...
    def send(
        self,
        dest: int,
        ctx: int,
        tag: int,
        op: int,
        root: int,
        dtype: int,
        payload: object,
        fds: list[Fd] | None,
        what: int,
    ) -> None: ...
    def send_many(
        self,
        dests: list[int],
        ctx: int,
        tag: int,
        op: int,
        root: int,
        dtype: int,
        payload: object,
        fds: list[Fd] | None,
        what: int,
    ) -> None: ...
    def send_obj(self, dest: int, ctx: int, tag: int, obj: object, what: int) -> bool: ...
    def recv_obj(self, ctx: int, src: int, tag: int, what: int, deps: int) -> object: ...
    def recv_obj_status(
        self, ctx: int, src: int, tag: int, what: int, deps: int
    ) -> tuple[int, int, int, object]: ...
    def recv(
        self, ctx: int, src: int, tag: int, op: int, root: int, what: int, deps: int
    ) -> tuple[int, int, SpmdPayload]: ...
    def recv_into(
        self,
        ctx: int,
        src: int,
        tag: int,
        op: int,
        root: int,
        what: int,
        deps: int,
        buffer: object,
        dtype: int,
    ) -> tuple[int, int, int]: ...
    def probe(
        self, ctx: int, src: int, tag: int, what: int, deps: int, block: bool
    ) -> tuple[int, int, int, int] | None: ...
    def post(self, ctx: int, src: int, tag: int) -> int: ...
    def test(self, request: int) -> Message | None: ...
    def wait_any(self, ids: list[int], what: int, deps: int) -> tuple[int, Message]: ...
    def cancel(self, request: int) -> bool: ...
    def finalize(self, what: int) -> list[tuple[int, int, int, int, int]]: ...
    def snapshot(self) -> list[SlotView]: ...
    def pending(self) -> list[tuple[int, int, int, int, int, int]]: ...
    def abort(self, code: int) -> None: ...

@final
class Message:
    src: int
    tag: int
    nbytes: int
    dtype: int
    def payload(self) -> SpmdPayload: ...
    def read_into(self, buffer: object, dtype: int) -> int: ...

@final
class Job:
    pids: list[int]
    def __new__(
        cls,
        size: int,
        program: str,
        args: list[str],
        env: list[tuple[str, str]],
        init: bytes,
        init_fds: list[Fd] | tuple[()],
        stdin_to_rank0: bool,
        tick: float,
    ) -> Job: ...
    def events(self, timeout: float | None = None) -> list[tuple]: ...
    def signal(self, signal: int) -> None: ...
    def snapshot(self) -> list[SlotView]: ...
    def close(self) -> None: ...

@disjoint_base
class CommCore:
    """The base of ``shoal.mpi.comm.Comm``: ``send`` and ``recv`` in their
    common case; the subclass gives ``_send_slow``, ``_recv_slow`` and
    ``_translate`` for the rest."""

    def __new__(cls, ep: Endpoint, ctx: int, ranks: list[int], *rest: object) -> CommCore: ...
    @property
    def _core_deps(self) -> int: ...
    def send(self, obj: object, dest: object, tag: object | None = None) -> None: ...
    def recv(
        self,
        buf: object | None = None,
        source: object | None = None,
        tag: object | None = None,
        status: object | None = None,
    ) -> object: ...
