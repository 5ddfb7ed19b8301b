"""Worker output reaches the parent: prints (stdout and stderr) and logging
records, tagged with the worker, whole lines only (``shoal.worker.output``).

The parent writes to its *current* ``sys.stdout``/``sys.stderr`` objects, not
to file descriptors: pytest's ``capsys`` replaces them exactly as Jupyter
does, so these tests also show the output would land in a notebook cell.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import helpers_mod as h
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)

TAG = re.compile(r"^\[worker (\d+)\] (.*)$")


def tagged(text: str) -> list[tuple[int, str]]:
    """``[(slot, line)]``; fails on any line without a tag."""
    out = []
    for line in text.splitlines():
        m = TAG.match(line)
        assert m, f"untagged line: {line!r}"
        out.append((int(m.group(1)), m.group(2)))
    return out


def test_prints_reach_the_parents_stdout_and_stderr_tagged(make_pool, capsys):
    p = make_pool(2)
    assert p.map(h.chatty, range(6), chunksize=1) == list(range(6))
    captured = capsys.readouterr()
    out, err = tagged(captured.out), tagged(captured.err)
    assert sorted(line for _, line in out) == [f"out {i}" for i in range(6)]
    assert sorted(line for _, line in err) == [f"err {i}" for i in range(6)]
    assert {slot for slot, _ in out + err} <= {0, 1}


def test_a_tasks_output_is_written_before_its_result_is_returned(make_pool, capsys):
    p = make_pool(1)
    for i in range(5):
        assert p.apply(h.chatty, (i,)) == i
        assert tagged(capsys.readouterr().out) == [(0, f"out {i}")]


def test_lines_from_different_workers_never_mix(make_pool, capsys):
    p = make_pool(2)
    lines, width = 300, 200
    assert p.starmap(h.print_many, [("A", lines, width), ("B", lines, width)], chunksize=1) == [
        lines,
        lines,
    ]
    got = tagged(capsys.readouterr().out)
    assert len(got) == 2 * lines
    for _, line in got:
        tag, i, body = line.split(":")
        assert body == tag * width, f"a line was cut or mixed: {line[:80]!r}"
    for tag in "AB":
        numbers = [int(line.split(":")[1]) for _, line in got if line.startswith(tag)]
        assert numbers == list(range(lines)), "lines of one worker stay in order"


def test_a_partial_line_is_sent_when_the_task_ends(make_pool, capsys):
    p = make_pool(1)
    assert p.apply(h.print_partial, ("no newline",)) == "no newline"
    assert tagged(capsys.readouterr().out) == [(0, "no newline")]


def test_prints_from_a_thread_inside_the_task(make_pool, capsys):
    p = make_pool(1)
    assert p.apply(h.print_from_thread, ("from a thread",)) == "from a thread"
    assert tagged(capsys.readouterr().out) == [(0, "from a thread")]


def test_initializer_output_is_forwarded(capsys):
    with shoal.Pool(1, initializer=h.initializer_that_prints) as p:
        p.apply(h.identity, (1,))
    assert (0, "initializer ran") in tagged(capsys.readouterr().out)


def test_output_written_before_a_crash_still_arrives(make_pool, capsys):
    p = make_pool(1)
    with pytest.raises(shoal.WorkerLostError):
        p.apply(h.print_then_die, ("last words",))
    assert tagged(capsys.readouterr().out) == [(0, "last words")]


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def root_handler():
    """A handler on the parent's root logger at INFO, removed afterwards."""
    root = logging.getLogger()
    handler, level = ListHandler(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_logging_records_reach_the_parents_loggers(root_handler):
    with shoal.Pool(1) as p:
        pid = p.worker_pids()[0]
        assert p.apply(h.log_record, ("shoal.test.worker", "hello")) == "hello"
    records = [r for r in root_handler.records if r.name == "shoal.test.worker"]
    assert [r.getMessage() for r in records] == ["hello says 42", "it failed"]
    info, error = records
    assert (info.levelno, error.levelno) == (logging.INFO, logging.ERROR)
    assert info.processName == "shoal-worker-0"
    assert info.process == pid
    assert "ValueError: inside" in error.exc_text
    # Formatting works in the parent as for a local record.
    assert "ValueError: inside" in logging.Formatter().format(error)


def test_workers_import_logging_only_when_the_tasks_do(root_handler):
    # It costs a worker ~25 ms at start; forwarding is set up on first import.
    with shoal.Pool(1) as p:
        assert not p.apply(h.imported, ("logging",))
        p.apply(h.log_record, ("shoal.test.late", "late"))
        assert p.apply(h.imported, ("logging",))
    records = [r for r in root_handler.records if r.name == "shoal.test.late"]
    assert [r.getMessage() for r in records] == ["late says 42", "it failed"]


def test_a_level_set_after_the_pool_started_reaches_its_workers(root_handler):
    # A notebook makes the pool first and calls logging.basicConfig later.
    logging.getLogger().setLevel(logging.WARNING)
    with shoal.Pool(1) as p:
        p.apply(h.log_record, ("shoal.test.before", "quiet"))
        logging.getLogger().setLevel(logging.INFO)
        p.apply(h.log_record, ("shoal.test.after", "loud"))
        logging.getLogger().setLevel(logging.ERROR)
        p.starmap(h.log_record, [("shoal.test.again", "hushed")] * 3, chunksize=1)
    names = {}
    for r in root_handler.records:
        names.setdefault(r.name, []).append(r.getMessage())
    assert names["shoal.test.before"] == ["it failed"]
    assert names["shoal.test.after"] == ["loud says 42", "it failed"]
    assert names["shoal.test.again"] == ["it failed"] * 3


def test_basic_config_after_pool_in_a_script(tmp_path):
    script = tmp_path / "late_config.py"
    script.write_text(
        "import logging, sys\n"
        "import shoal, helpers_mod as h\n"
        "if __name__ == '__main__':\n"
        "    with shoal.Pool(1) as pool:\n"
        "        logging.basicConfig(level=logging.INFO, stream=sys.stdout,\n"
        "                            format='%(processName)s %(levelname)s %(message)s')\n"
        "        pool.apply(h.log_record, ('late', 'hello'))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "shoal-worker-0 INFO hello says 42" in done.stdout
    assert "shoal-worker-0 ERROR it failed" in done.stdout


def test_records_below_the_parents_level_are_not_sent(root_handler):
    logging.getLogger().setLevel(logging.ERROR)
    with shoal.Pool(1) as p:
        p.apply(h.log_record, ("shoal.test.quiet", "hello"))
    records = [r for r in root_handler.records if r.name == "shoal.test.quiet"]
    assert [r.getMessage() for r in records] == ["it failed"]
