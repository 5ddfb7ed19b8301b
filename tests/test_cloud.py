"""What travels by value (``shoal.wire.cloud``): open files are refused
with a clear error instead of arriving as a snapshot, and tracebacks of
functions from a script or a notebook keep their file and source line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


def kind(x):
    return type(x).__name__


def open_file(path):
    return open(path)  # noqa: SIM115 - returned on purpose


@pytest.mark.parametrize("mode", ["r", "rb", "w"])
def test_an_open_file_argument_is_a_clear_error(make_pool, tmp_path, mode):
    path = tmp_path / "data.txt"
    path.write_text("some data\n")
    pool = make_pool(1)
    with open(path, mode) as f, pytest.raises(TypeError) as raised:
        pool.map(kind, [f])
    message = str(raised.value)
    assert "cannot send an open file" in message
    assert repr(str(path)) in message
    assert "_io." in message  # the type
    assert "f.name" in message and "f.read()" in message  # what to send instead


def test_an_open_file_result_is_a_clear_error(make_pool, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("some data\n")
    pool = make_pool(1)
    with pytest.raises(shoal.SerializationError, match="TextIOWrapper.*cannot send an open file"):
        pool.apply(open_file, (str(path),))


def test_an_open_file_through_a_queue_is_a_clear_error(tmp_path):
    q = shoal.Queue()
    with open(__file__) as f, pytest.raises(TypeError, match="cannot send an open file"):
        q.put(f)


def test_the_parents_stdout_still_means_the_workers(tmp_path):
    # print(..., file=sys.stdout) in a task writes to the worker's stdout,
    # which reaches the parent's, as cloudpickle has always done.
    script = tmp_path / "to_stdout.py"
    script.write_text(
        textwrap.dedent(
            """\
            import sys
            import shoal

            def write_to(stream, text):
                print(text, file=stream)

            if __name__ == "__main__":
                with shoal.Pool(1) as pool:
                    pool.apply(write_to, (sys.stdout, "to stdout"))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[worker 0] to stdout" in done.stdout


def test_a_scripts_function_keeps_its_file_and_line_in_remote_tracebacks(tmp_path):
    script = tmp_path / "workshop.py"
    script.write_text(
        textwrap.dedent(
            """\
            import shoal

            def helper(x):
                return {}[x]  # the failing line

            def task(x):
                return helper(x)

            if __name__ == "__main__":
                with shoal.Pool(1) as pool:
                    pool.map(task, ["missing"])
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    err = done.stderr
    assert "<dynamic-code>" not in err, err
    assert f'File "{script}", line 4, in helper' in err, err
    assert "return {}[x]  # the failing line" in err, err
    assert f'File "{script}", line 7, in task' in err, err
