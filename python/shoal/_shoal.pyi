# Stub of the native module built from crates/shoal-python (kept by hand).
from collections.abc import Callable
from os import PathLike
from typing import final

class ShoalError(Exception): ...
class CheckpointError(ShoalError): ...

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

@final
class Engine:
    def __new__(
        cls,
        workers: int,
        program: str | PathLike[str],
        args: list[str],
        env: list[tuple[str, str]],
        init: bytes,
        max_tasks_per_child: int | None = None,
        max_memory: int | None = None,
        trace: bool = False,
    ) -> Engine: ...
    @staticmethod
    def with_threads(
        workers: int, start_worker: Callable[[Link, int], None], trace: bool = False
    ) -> Engine: ...
    def register_function(self, fn_id: int, body: bytes) -> None: ...
    def release_function(self, fn_id: int) -> None: ...
    def submit(
        self,
        fn_id: int,
        first_id: int,
        payloads: list[bytes],
        timeout: float | None = None,
        retries: int = 0,
    ) -> None: ...
    def submit_one(
        self,
        fn_id: int,
        task_id: int,
        payload: bytes,
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
    def recv(self) -> list[tuple[int, int, int, bytes]]: ...
    def send(self, kind: int, a: int, b: int, body: bytes) -> None: ...
    def flush(self) -> None: ...
    def begin(self, task_id: int) -> None: ...
    def done(
        self, task_id: int, body: bytes, deser_ns: int = 0, result_ser_ns: int = 0
    ) -> None: ...
    def failed(
        self, task_id: int, body: bytes, retryable: bool = False, deser_ns: int = 0
    ) -> None: ...
    def close(self) -> None: ...
    def rss(self) -> int | None: ...
