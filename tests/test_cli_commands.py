"""``shoal report``, ``shoal bench`` and ``shoal info`` as a user runs them:
their output and exit codes (0 ok, 1 failure, 2 usage error)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from trace_factory import Call, make_trace

pytestmark = pytest.mark.timeout(120)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def shoal(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize("command", ["report", "bench", "info"])
def test_every_command_has_help(command):
    done = shoal(command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: shoal {command}")
    assert command in shoal("--help").stdout


# ------------------------------------------------------------------ report


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "run.json"
    call = Call([0.0001] * 3000, function="mymod.tiny", transport=3e-5)
    path.write_text(json.dumps(make_trace([call], workers=4)))
    return path


def test_report_writes_html_next_to_the_trace_and_prints_the_advice(trace_file):
    done = shoal("report", str(trace_file))
    assert done.returncode == 0, done.stderr
    html = trace_file.with_suffix(".html")
    assert done.stdout.startswith(f"wrote {html}: 3,000 tasks on 4 workers in ")
    assert "- map(mymod.tiny): the median task took 100 µs" in done.stdout
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and '<svg class="timeline"' in page


def test_report_output_option(trace_file, tmp_path):
    out = tmp_path / "elsewhere" / "page.html"
    out.parent.mkdir()
    done = shoal("report", str(trace_file), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.exists() and not trace_file.with_suffix(".html").exists()


def test_report_of_a_missing_file_fails(tmp_path):
    done = shoal("report", str(tmp_path / "nope.json"))
    assert done.returncode == 1
    missing = tmp_path / "nope.json"
    assert done.stderr == f"shoal report: error: cannot read {missing}: No such file or directory\n"


def test_report_of_a_bad_trace_fails_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "shoal-trace", "version": 9}))
    done = shoal("report", str(bad))
    assert done.returncode == 1
    assert done.stderr.startswith(f"shoal report: error: {bad}: trace format version 9 is newer")
    assert not (tmp_path / "bad.html").exists()


def test_report_usage_errors(tmp_path):
    assert shoal("report").returncode == 2
    named_html = tmp_path / "run.html"
    named_html.write_text("{}")
    done = shoal("report", str(named_html))
    assert done.returncode == 2 and "would overwrite its trace" in done.stderr


def test_report_to_an_unwritable_place_fails(trace_file, tmp_path):
    done = shoal("report", str(trace_file), "-o", str(tmp_path / "no-dir" / "x.html"))
    assert done.returncode == 1 and "cannot write" in done.stderr


# ------------------------------------------------------------------ info


def test_info_reports_the_machine_and_passes_its_self_check():
    done = shoal("info", env={"SLURM_CPUS_PER_TASK": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^shoal\s+0\.\d+\.\d+ \(", out, re.M)
    assert re.search(rf"^Python\s+{re.escape(sys.version.split()[0])} \(", out, re.M)
    assert re.search(r"^cpu_count\(\)\s+1: limited by SLURM_CPUS_PER_TASK", out, re.M)
    assert re.search(r"^  SLURM\s+1 \(SLURM_CPUS_PER_TASK\)$", out, re.M)
    assert re.search(r"^shared memory\s+yes", out, re.M)
    assert re.search(r"^GIL\s+(enabled|disabled)", out, re.M)
    assert re.search(r"^self-check\s+ok: Pool\(1\) started and ran a task in worker pid", out, re.M)


def test_info_exits_1_when_the_self_check_fails():
    # Workers are started with sys.executable: make it a program that exits at once.
    script = (
        "import sys; sys.executable = '/bin/false'\n"
        "from shoal.cli.main import main\n"
        "sys.exit(main(['info']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 1
    assert re.search(r"^self-check\s+FAILED: WorkerStartError", done.stdout, re.M)


def test_a_closed_pipe_is_not_a_failure():
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith(b"shoal ")
    proc.stdout.close()  # like `shoal info | head -1`
    with proc.stderr:
        stderr = proc.stderr.read()
    assert proc.wait(timeout=100) == 0
    assert b"BrokenPipe" not in stderr and b"Traceback" not in stderr


# ------------------------------------------------------------------ bench


def test_bench_says_the_fit_is_to_medians(tmp_path):
    args = ["bench_target:spin", "--inputs", "WORK", "--workers", "1,2", "--rounds", "2"]
    done = shoal("bench", *args, "--plot", str(tmp_path / "b.svg"), cwd=TESTS_DIR)
    assert done.returncode == 0, done.stderr
    assert "medians of 2 rounds, each timing the pool and a serial loop" in done.stdout
    assert "Amdahl's law fit (to the medians of 2 rounds): serial fraction" in done.stdout


def test_bench_prints_the_sweep_the_fit_and_writes_the_plot(tmp_path):
    plot = tmp_path / "bench.svg"
    args = ["bench_target:spin", "--inputs", "WORK", "--workers", "1,2", "--rounds", "1"]
    done = shoal("bench", *args, "--plot", str(plot), cwd=TESTS_DIR)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("shoal bench bench_target:spin: 8 inputs, ")
    assert lines[1].split() == ["workers", "pool", "s", "serial", "s", "speed-up", "efficiency"]
    rows = [line.split() for line in lines[2:4]]
    assert [row[0] for row in rows] == ["1", "2"]
    for _, pool_s, serial_s, speedup, efficiency in rows:
        assert float(speedup.rstrip("x")) == pytest.approx(float(serial_s) / float(pool_s), 0.02)
        assert efficiency.endswith("%")
    # One round is a single noisy measurement, and the output says so.
    assert "one round each (a single, noisy measurement;" in lines[0]
    assert re.search(
        r"^Amdahl's law fit \(to single rounds: noisy\): serial fraction f = ", done.stdout, re.M
    )
    assert lines[-1] == f"wrote {plot}"
    root = ET.parse(plot).getroot()
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bench_target"], 2, "expected MODULE:FUNCTION"),
        (["no_such_module:f"], 1, "cannot import no_such_module: No module named"),
        (["bench_target:nope"], 1, "bench_target has no 'nope'"),
        (["bench_target:NOT_A_FUNCTION"], 1, "is not a function (it is int)"),
        (["bench_target:broken"], 1, "bench_target:broken failed: ValueError: no good: 0"),
        (["bench_target:spin", "--inputs", "rang(3)"], 2, "NameError: name 'rang'"),
        (["bench_target:spin", "--inputs", "[]"], 2, "--inputs '[]' is empty"),
        (["bench_target:spin", "--workers", "0,2"], 2, "argument --workers: expected positive"),
        (["bench_target:spin", "--rounds", "none"], 2, "argument --rounds: expected a positive"),
    ],
)
def test_bench_errors(args, code, message, tmp_path):
    quick = ["--workers", "1", "--rounds", "1", "--plot", str(tmp_path / "p.svg")]
    done = shoal("bench", *quick, *args, cwd=TESTS_DIR)  # a repeated option: the last wins
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "p.svg").exists()
