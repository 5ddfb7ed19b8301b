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


def run_in_kernel(code: str) -> list[dict]:
    manager, client = start_new_kernel(
        kernel_name="python3", env=dict(os.environ), startup_timeout=60
    )
    try:
        return run_cell(client, code)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def stream(messages: list[dict], name: str) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


def test_a_progress_bar_without_ipywidgets_is_text_in_the_cell():
    # ipywidgets is not installed here (tqdm's widget needs it): the bar
    # falls back to text, without tqdm's "IProgress not found" warning.
    messages = run_in_kernel(
        textwrap.dedent(
            """
            import importlib.util, shoal
            print("ipywidgets:", importlib.util.find_spec("ipywidgets") is not None)
            with shoal.Pool(2) as pool:
                pool.map(abs, range(40), chunksize=4, progress=True)
            """
        )
    )
    assert not [m for m in messages if m["msg_type"] == "error"]
    assert "ipywidgets: False" in stream(messages, "stdout")
    err = stream(messages, "stderr")
    assert "map(abs)" in err and "40/40" in err, err
    assert "IProgress" not in err


def test_a_remote_traceback_shows_the_cells_source_line():
    messages = run_in_kernel(
        textwrap.dedent(
            """
            import shoal

            def divide(x):
                return 1 / (x - x)  # the line that fails

            with shoal.Pool(1) as pool:
                try:
                    pool.map(divide, [3])
                except ZeroDivisionError as exc:
                    print(exc.__cause__)
            """
        )
    )
    out = stream(messages, "stdout")
    assert "<dynamic-code>" not in out, out
    assert "return 1 / (x - x)  # the line that fails" in out, out
    assert "line 4, in divide" in out, out  # the cell's own numbering
