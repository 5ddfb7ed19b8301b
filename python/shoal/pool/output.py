"""A worker's output in the parent: whole lines of text tagged ``[worker N]``,
written to the parent's current ``sys.stdout``/``sys.stderr`` (so it lands
in a notebook cell too), and ``logging`` records handed to the parent's
loggers."""

from __future__ import annotations

import sys

from .._shoal import Stream
from ..wire.serialize import loads


def parent_log_level() -> int | None:
    """The level worker records are forwarded at: the parent's root level,
    if the parent uses ``logging`` at all."""
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    return logging.root.level  # the root's effective level: it has no parent


def deliver(output: list) -> None:
    """Writes a batch of ``WorkerOutput``s."""
    for o in output:
        slot, body, stream = o.slot, o.data, o.stream
        try:
            if stream == Stream.Log:
                _handle_record(slot, o.pid, body)
                continue
            target = sys.stdout if stream == Stream.Stdout else sys.stderr
            if target is None:
                continue
            tag = f"[worker {slot}] "
            text = body.decode("utf-8", "replace")
            target.write("".join(f"{tag}{line}\n" for line in text.splitlines()))
            target.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stdout must not stop results
            pass


def _handle_record(slot: int, pid: int, body: bytes) -> None:
    import logging

    record = logging.makeLogRecord(loads(body))
    record.processName = f"shoal-worker-{slot}"
    record.process = pid
    logger = logging.getLogger(record.name)
    # The parent's configuration as it is now decides, as for its own records.
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
