"""Shared pytest configuration for the shoal test suite.

Every test module also sets ``pytestmark = pytest.mark.timeout(60)`` so that a
hang in the engine turns into a test failure instead of a stuck CI job.
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Make ``helpers_mod`` importable from the test modules regardless of pytest's
# import mode.  Deliberately *not* exported through PYTHONPATH: like
# multiprocessing, shoal's workers are expected to be able to import whatever
# the parent could import (functions from the test modules and helpers_mod).
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


@pytest.fixture
def make_pool():
    """Factory for fresh pools; every pool is terminated at teardown."""
    import shoal

    pools = []

    def factory(*args, **kwargs):
        p = shoal.Pool(*args, **kwargs)
        pools.append(p)
        return p

    yield factory
    for p in pools:
        with contextlib.suppress(ValueError, OSError, shoal.ShoalError):
            p.terminate()
            p.join()
