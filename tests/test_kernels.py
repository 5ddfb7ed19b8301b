"""Compiled kernels that release the GIL (examples/kernels/): numba's
``nogil=True`` functions and C through cffi, on threads, and
``backend="auto"`` choosing threads for them."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys

import helpers_mod as h
import numpy as np
import pytest
import shoal

pytestmark = pytest.mark.timeout(180)

KERNELS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "kernels"
)
if KERNELS not in sys.path:
    sys.path.insert(0, KERNELS)  # workers start with the parent's sys.path


def has_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def has_cffi_and_cc() -> bool:
    return importlib.util.find_spec("cffi") is not None and (
        shutil.which(os.environ.get("CC", "cc")) is not None or shutil.which("gcc") is not None
    )


needs_numba = pytest.mark.skipif(not has_numba(), reason="numba is not installed (test extra)")
needs_cffi = pytest.mark.skipif(
    not has_cffi_and_cc(), reason="cffi or a C compiler is missing (cffi is in the test extra)"
)


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory):
    """A cache of built C kernels for this test run, not the user's."""
    path = str(tmp_path_factory.mktemp("kernels"))
    old = os.environ.get("SHOAL_KERNEL_CACHE")
    os.environ["SHOAL_KERNEL_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("SHOAL_KERNEL_CACHE", None)
    else:
        os.environ["SHOAL_KERNEL_CACHE"] = old


def run_example(name: str, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, os.path.join(KERNELS, name), *args],
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


SMALL = ("--size", "300", "--max-iter", "100", "--steps", "2000000", "--workers", "2")


@needs_numba
def test_the_numba_example_runs():
    out = run_example("numba_kernels.py", *SMALL)
    assert "Mandelbrot 300 x 300" in out and "(numba)" in out
    assert out.count("pi = 3.14159265") == 2, out


@needs_cffi
def test_the_c_example_builds_once_into_the_cache(tmp_path):
    env = {"SHOAL_KERNEL_CACHE": str(tmp_path)}
    out = run_example("c_kernels.py", *SMALL, env=env)
    assert "(C)" in out and out.count("pi = 3.14159265") == 2, out
    (built,) = [p for p in os.listdir(tmp_path) if p.endswith(".so")]
    stamp = os.stat(tmp_path / built).st_mtime_ns
    run_example("c_kernels.py", *SMALL, env=env)  # loaded, not built again
    assert os.listdir(tmp_path) == [built]
    assert os.stat(tmp_path / built).st_mtime_ns == stamp


def mandelbrot_reference(size: int, max_iter: int) -> np.ndarray:
    """The picture computed by numpy, whole-array at a time."""
    re0, re1, im0, im1 = -2.0, 1.0, -1.5, 1.5
    y, x = np.mgrid[0:size, 0:size]
    c = (re0 + (re1 - re0) * x / size) + 1j * (im0 + (im1 - im0) * y / size)
    z = np.zeros_like(c)
    counts = np.zeros(c.shape, dtype=np.int32)
    for _ in range(max_iter):
        alive = np.abs(z) <= 2.0
        z[alive] = z[alive] ** 2 + c[alive]
        counts += alive
    return counts


@pytest.mark.parametrize(
    "module",
    [pytest.param("numba_kernels", marks=needs_numba), pytest.param("c_kernels", marks=needs_cffi)],
)
def test_kernels_on_threads_share_one_image(module, kernel_cache):
    kernels = importlib.import_module(module)
    image = kernels.mandelbrot(120, 50, workers=3, chunk=7)
    expected = mandelbrot_reference(120, 50)
    # Points on the edge may escape one step apart in numpy's complex arithmetic.
    assert (image != expected).mean() < 0.01
    assert abs(kernels.pi(1_000_000, workers=2) - np.pi) < 1e-10


@pytest.mark.skipif(shoal.cpu_count() < 2, reason="needs two cores")
@pytest.mark.parametrize("how", ["map", "parallel_reduce"])
@pytest.mark.parametrize(
    "module",
    [
        pytest.param("numba_kernels", marks=needs_numba),
        pytest.param("c_kernels", marks=needs_cffi),
    ],
)
def test_auto_picks_threads_for_a_compiled_kernel(module, how, kernel_cache):
    kernels = importlib.import_module(module)
    steps = 200_000_000
    bounds = [(steps * k // 64, steps * (k + 1) // 64, steps) for k in range(64)]
    expected = [kernels.pi_chunk(b) for b in bounds]  # also compiles / builds it

    def run():
        if how == "map":
            assert shoal.map(kernels.pi_chunk, bounds, workers=2, backend="auto") == expected
        else:
            body = functools.partial(kernels.pi_span, n=steps)
            total = shoal.parallel_reduce(steps, body, workers=2, backend="auto")
            assert abs(total - np.pi) < 1e-9

    h.auto_picks_threads(run, kernels.pi_chunk, bounds[0])
