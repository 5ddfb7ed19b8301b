"""The package's names (``shoal/__init__.py``)."""

from __future__ import annotations

import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


def test_dir_shows_the_public_names_only():
    names = dir(shoal)
    assert "TYPE_CHECKING" not in names
    assert "annotations" not in names
    assert not [n for n in names if n.startswith("_") and not n.startswith("__")]
    for name in ("Pool", "Manager", "Pipe", "Semaphore", "get_context", "map", "shared"):
        assert name in names


def test_every_public_name_resolves():
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None, name
    assert "map" not in shoal.__all__  # `from shoal import *` keeps the builtin
