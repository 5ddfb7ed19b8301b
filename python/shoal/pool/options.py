"""A pool's options and each call's, checked once where the user gives them:
a bad value is refused with what was wrong, before anything is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

#: The options every map-family call takes, and those of a single task.
TASK_KEYS = ("timeout", "retries", "retry_on")
CALL_KEYS = (*TASK_KEYS, "progress", "on_progress", "checkpoint", "checkpoint_key")


class Options(NamedTuple):
    """Per-task options the engine enforces."""

    timeout: float | None  # seconds; the worker is killed and replaced after it
    retries: int  # re-runs of a task whose worker died (or that raised retry_on)
    retry_on: tuple  # exception classes that are retried, not failed

    def override(self, timeout: Any, retries: Any, retry_on: Any) -> Options:
        """A call's options: these, overridden where given."""
        if timeout is None and retries is None and retry_on is None:
            return self
        return check_options(
            self.timeout if timeout is None else timeout,
            self.retries if retries is None else retries,
            self.retry_on if retry_on is None else retry_on,
        )


class CallOptions(NamedTuple):
    """One call's options: the pool's, overridden where the call gives them."""

    task: Options
    progress: bool | str
    on_progress: Callable | None
    checkpoint: Any  # a file name, or None/False for none
    checkpoint_key: Callable | None

    @classmethod
    def of(cls, defaults: CallOptions, method: str, given: dict, keys=CALL_KEYS) -> CallOptions:
        """``defaults`` overridden by ``given`` (a call's keyword arguments,
        None meaning "the pool's"), checked."""
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise TypeError(
                f"{method}() got an unexpected keyword argument {unknown[0]!r}; "
                f"its options are {', '.join(keys)}"
            )
        if not given:
            return defaults
        merged = defaults._replace(
            **{k: v for k, v in given.items() if v is not None and k not in TASK_KEYS}
        )
        check_progress(merged.progress, merged.on_progress)
        check_checkpoint_key(merged.checkpoint_key)
        task = defaults.task.override(*(given.get(k) for k in TASK_KEYS))
        return merged._replace(task=task)


def check_options(timeout: Any, retries: Any, retry_on: Any) -> Options:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not isinstance(retry_on, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
    ):
        raise TypeError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    if retry_on and retries == 0:
        raise ValueError(
            f"retry_on={retry_on!r} needs retries=N: how many times to re-run a task "
            "that raises one of them"
        )
    return Options(None if timeout is None else float(timeout), retries, retry_on)


def check_workers(n: Any, what: str) -> int:
    """A number of workers: an int of at least 1."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(
            f"{what} must be an int (or None for shoal.cpu_count()), got {type(n).__name__} {n!r}"
        )
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n!r}")
    return n


def check_callable(func: Any, what: str | None = None) -> None:
    if not callable(func):
        if what is None:
            raise TypeError(f"{func!r} is not callable; pass a function")
        raise TypeError(f"{what} must be a callable, got {func!r}")


def check_chunksize(chunksize: Any) -> None:
    if chunksize is not None and (
        isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1
    ):
        raise ValueError(f"chunksize must be a positive int or None, got {chunksize!r}")


def check_progress(progress: Any, on_progress: Any) -> None:
    if not (progress is True or progress is False or progress == "always"):
        raise ValueError(f"progress must be True, False or 'always', got {progress!r}")
    if on_progress is not None and not callable(on_progress):
        raise TypeError(f"on_progress must be a callable(done, total), got {on_progress!r}")


def check_checkpoint_key(key: Any) -> Callable | None:
    if key is not None and not callable(key):
        raise TypeError(f"checkpoint_key must be a callable, got {key!r}")
    return key
