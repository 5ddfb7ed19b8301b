"""Worker output lands in the Jupyter cell that ran the pool: a real
ipykernel, driven by jupyter_client as a notebook front end would."""

from __future__ import annotations

import os
import queue
import textwrap
import time

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = [
    pytest.mark.timeout(90),
    # jupyter_client and ipykernel warn about their own deprecations.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

CELL = textwrap.dedent(
    """
    import shoal

    def shout(x):
        print("from the worker", x)
        return x * 10

    with shoal.Pool(2) as pool:
        print("results", pool.map(shout, range(4), chunksize=1))
    """
)


def run_cell(client, code: str, timeout: float = 60) -> list[dict]:
    """Executes ``code``; returns the iopub messages that belong to it."""
    msg_id = client.execute(code)
    deadline = time.monotonic() + timeout
    messages = []
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
    pytest.fail(f"the cell did not finish within {timeout} s; got {messages}")


def test_worker_prints_appear_in_the_cell():
    manager, client = start_new_kernel(
        kernel_name="python3", env=dict(os.environ), startup_timeout=60
    )
    try:
        messages = run_cell(client, CELL)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    stdout = "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )
    lines = stdout.splitlines()
    worker_lines = sorted(line.split("] ", 1)[1] for line in lines if line.startswith("[worker "))
    assert worker_lines == [f"from the worker {i}" for i in range(4)], stdout
    assert "results [0, 10, 20, 30]" in lines
