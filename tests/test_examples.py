"""The examples in examples/ run, at small sizes, and print what they say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *args],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_pi():
    out = run_example("pi.py", "--steps", "20000", "--samples", "16000", "--workers", "2")
    assert out.count("3.141592653") == 2, out
    assert "Monte Carlo, 16,000 samples: 3.1" in out


def test_mandelbrot(tmp_path):
    picture = tmp_path / "m.pgm"
    out = run_example(
        "mandelbrot.py",
        "--width",
        "40",
        "--height",
        "30",
        "--max-iter",
        "60",
        "--out",
        str(picture),
    )
    assert "dynamic" in out and "static" in out and "imbalance" in out, out
    assert picture.read_bytes().startswith(b"P5 40 30 255\n")
    assert len(picture.read_bytes()) == len(b"P5 40 30 255\n") + 40 * 30


def test_primes():
    out = run_example("primes.py", "--start", "1000", "--count", "300", "--workers", "2")
    assert out.count(" 43 primes") == 4, out  # 43 primes in [1000, 1300)
    assert "auto chose" in out


def test_io_waits():
    out = run_example("io_waits.py", "--requests", "4", "--delay", "0.2")
    assert "ThreadPool(4)" in out
    assert "auto chose threads" in out, out
