"""Task functions for the shoal.io tests, importable by workers (module
level, pickled by reference)."""

from __future__ import annotations

import os
import time


def chunk_stats(ref) -> tuple[float, float]:
    """The workshop's per-chunk statistics: mean and standard deviation."""
    block = ref.read()
    return float(block.mean()), float(block.std())


def chunk_sum(ref) -> float:
    return float(ref.read().sum(dtype="float64"))


def double_into(out: str, ref) -> int:
    """Reads a chunk and writes twice it to the same box of ``out``."""
    block = ref.read()
    ref.write(block * 2, out)
    return os.getpid()


def logged_stats(log: str, delay: float, ref) -> tuple[float, float]:
    """``chunk_stats``, noting the chunk's index in ``log`` and taking
    ``delay`` seconds longer."""
    with open(log, "a") as f:
        f.write(f"{ref.index}\n")
    time.sleep(delay)
    return chunk_stats(ref)


def opened_arrays(ref) -> int:
    """Reads ``ref`` and says how many arrays this process has open."""
    from shoal.io import zarr_ref

    ref.read()
    return len(zarr_ref._opened._items)


def station_totals(part):
    """Per station: the sum and count of temperatures in one part."""
    table = part.read()
    return table.group_by("station").aggregate([("temp", "sum"), ("temp", "count")])


def part_rows(part) -> int:
    return part.read().num_rows


def logged_part_rows(log: str, part) -> int:
    with open(log, "a") as f:
        f.write(f"{part.index}\n")
    return part_rows(part)
