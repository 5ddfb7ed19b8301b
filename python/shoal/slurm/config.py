"""The user's defaults for ``shoal lab``: ``~/.config/shoal/lab.toml``.

```toml
partition = "broadwl"
cores = 4
time = "2:00:00"
mem = "8G"
account = "pi-smith"
setup = ["module load python/3.11", "source ~/venvs/work/bin/activate"]
port = 15001
app = "lab"
```
Every key is optional; flags on the command line win over the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from .jobs import USAGE, SlurmError

#: Keys and their types; setup may also be a list of lines.
LAB_KEYS: dict[str, type] = {
    "partition": str,
    "cores": int,
    "time": str,
    "mem": str,
    "account": str,
    "setup": str,
    "port": int,
    "app": str,
}


_KIND = {int: "an integer", str: "a string"}


def path() -> Path:
    """Where the file is: $XDG_CONFIG_HOME/shoal/lab.toml, ~/.config/... by default."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "shoal" / "lab.toml"


def load(file: Path | None = None) -> dict[str, Any]:
    """The file's settings, checked; empty if there is no file."""
    file = file or path()
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SlurmError(f"{file}: {e}", USAGE) from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        kind = LAB_KEYS.get(key)
        if kind is None:
            known = ", ".join(LAB_KEYS)
            raise SlurmError(f"{file}: unknown setting {key!r} (known: {known})", USAGE)
        if key == "setup" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise SlurmError(
                f"{file}: {key} must be {_KIND[kind]}, got {value!r}"
                + (" (or a list of lines)" if key == "setup" else ""),
                USAGE,
            )
        settings[key] = value
    return settings
