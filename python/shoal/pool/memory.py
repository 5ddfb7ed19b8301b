"""Memory sizes as users write them: ``2_000_000_000``, ``"2GB"``, ``"512 MiB"``."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*")


def parse_memory(value: int | str | None, name: str) -> int | None:
    """Bytes from an int or a string with a unit (KB/MB/GB/TB are powers of
    1000, KiB/MiB/GiB/TiB of 1024); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        number, unit = m.groups()
        if unit.lower() not in _UNITS:
            raise ValueError(
                f"{name}={value!r}: unknown unit {unit!r}; "
                "use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            )
        size = int(float(number) * _UNITS[unit.lower()])
    else:
        raise ValueError(f"{name} must be a number of bytes or a size like '2GB', got {value!r}")
    if size <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return size


def format_bytes(n: int) -> str:
    """``1536000000`` -> ``'1.5 GB'``."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"
