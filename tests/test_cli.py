"""The ``shoal`` command."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_demo_measures_every_lesson_and_writes_the_timelines(tmp_path):
    page = tmp_path / "demo.html"
    out = run_cli("demo", "--scale", "0.05", "--rounds", "3", "--html", str(page))
    assert out.returncode == 0, out.stderr
    for title in (
        "The GIL: pure-Python CPU work",
        "Waiting for I/O",
        "Compiled code that releases the GIL",
        "pi by the midpoint rule",
        "Mandelbrot: static against dynamic schedules",
        "Tiny tasks and chunking",
        "Shared state: a race condition and its lock",
    ):
        assert title in out.stdout
    # The race: updates lost without the lock (over the rounds), none with it.
    race = re.search(r"Without a lock, ([\d,]+)(?: to ([\d,]+))? of 80,000 increments", out.stdout)
    assert race, out.stdout
    assert int((race.group(2) or race.group(1)).replace(",", "")) > 0, "the race did not show"
    assert "With get_lock() held around both, all 80,000 arrived." in out.stdout
    # Every variant has a time and a speed-up; the baseline is x1.00.
    rows = re.findall(r"^  (\S.*?)\s+(\d+\.\d{3}) s\s+x(\d+\.\d+)$", out.stdout, re.M)
    assert len(rows) >= 14
    assert [r for r in rows if r[0] == "serial"] and all(
        r[2] == "1.00" for r in rows if r[0] == "serial"
    )
    if importlib.util.find_spec("numba") is not None:
        assert "runs in parallel on threads (numba)" in out.stdout
        assert "threads, GIL held" in out.stdout
        assert re.search(r"threads, nogil=True\s+\d+\.\d{3} s", out.stdout)
    pi = re.search(r"pi = (3\.\d{12})", out.stdout)
    assert pi and abs(float(pi.group(1)) - 3.141592653589793) < 1e-6
    html = page.read_text()
    assert html.count("<svg") >= 5, "a timeline per traced run"
    assert "Mandelbrot" in html


def test_demo_says_how_to_get_the_compiled_lesson_without_numba():
    code = (
        "import sys; sys.modules['numba'] = None\n"  # as if numba were not installed
        "from shoal.cli import demo\n"
        "lesson = demo._compiled(2, 0.05, {})\n"
        "lesson.measure(1)\n"
        "print(demo.table(lesson)); print(demo.page([lesson], 2))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "runs in parallel on threads (numba)" in done.stdout
    assert "numba is not installed" in done.stdout and "pip install numba" in done.stdout
    assert "<table>" not in done.stdout


def test_datasets_writes_both_small(tmp_path):
    pytest.importorskip("zarr", reason="needs zarr (the data extra)")
    pytest.importorskip("pyarrow", reason="needs pyarrow (the data extra)")
    out = run_cli(
        "datasets",
        str(tmp_path),
        "--zarr-size",
        "2MiB",
        "--zarr-chunks",
        "4",
        "--parquet-files",
        "3",
        "--parquet-rows",
        "1000",
    )
    assert out.returncode == 0, out.stderr
    assert "field.zarr" in out.stdout and "weather" in out.stdout
    assert sorted(os.listdir(tmp_path / "weather")) == [f"part-{i:03d}.parquet" for i in range(3)]
    assert os.path.isfile(tmp_path / "field.zarr" / "zarr.json")
    too_big = run_cli("datasets", str(tmp_path / "big"), "--zarr-size", "100000TB")
    assert too_big.returncode == 1 and "GB free" in too_big.stderr
    assert run_cli("datasets", str(tmp_path), "--zarr-size", "lots").returncode == 2


def test_usage_errors_exit_with_2():
    assert run_cli().returncode == 2
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("demo", "--rounds", "many").returncode == 2
    assert run_cli("demo", "--scale", "0").returncode == 2


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0
    assert re.fullmatch(r"shoal \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+\)\n", out.stdout), out.stdout


def test_help_is_plain_text():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "``" not in out.stdout
    usage, description = out.stdout.split("\n\n")[:2]
    assert usage.startswith("usage: shoal")
    assert description.startswith("shoal: parallel computing for Python")


def test_counts_of_one_are_singular(tmp_path):
    import shoal

    store = tmp_path / "one.sqlite"
    with shoal.Pool(1, trace=True) as pool:
        pool.map(abs, [-1], checkpoint=str(store))
        trace = pool.trace()
    assert "1 task in 1 call on 1 process worker," in repr(trace)
    info = run_cli("checkpoint", "info", str(store))
    assert ", 1 task, " in info.stdout, info.stdout
    cleared = run_cli("checkpoint", "clear", str(store))
    assert cleared.stdout.strip() == "cleared everything: 1 task of 1 function version"
    page = tmp_path / "one.html"
    trace.save(tmp_path / "one.json")
    report = run_cli("report", str(tmp_path / "one.json"), "-o", str(page))
    assert "1 task on 1 worker in" in report.stdout, report.stdout
    assert "1 process worker on" in page.read_text()
