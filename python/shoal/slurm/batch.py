"""Batch scripts: the ``#SBATCH`` lines, the environment, then the command."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

from .jobs import USAGE, SlurmError

#: Environment every program shoal launches on SLURM gets, unless the user
#: set it. Under ``srun``, SLURM's PMIx server offers its clients the
#: security modes "munge,native"; PyPI's Open MPI has no munge component, so
#: every rank printed a warning ("find-available:not-valid", about a help file
#: it cannot find either) before falling back to native. Asking for native
#: first is the same outcome without the warning.
LAUNCH_ENV: Mapping[str, str] = {"PMIX_MCA_psec": "native"}


def directive_value(option: str, value: object) -> str:
    """A value for an ``#SBATCH`` line: sbatch splits those lines on white
    space, so a partition, time or account may not contain any."""
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise SlurmError(f"--{option} {text!r}: must be one word, without spaces", USAGE)
    return text


def render(
    directives: Mapping[str, object],
    *,
    setup: str | None,
    body: str,
    comment: str,
) -> str:
    """The whole batch script. ``directives`` maps sbatch's long options to a
    value (True: a flag; None or False: left out). ``setup`` is shell text run
    first (``module load ...``); without it, the script puts the Python that
    runs shoal first on PATH, so the node uses the same environment."""
    lines = ["#!/bin/bash"]
    for option, value in directives.items():
        if value is True:
            lines.append(f"#SBATCH --{option}")
        elif value is not None and value is not False:
            lines.append(f"#SBATCH --{option}={directive_value(option, value)}")
    lines += ["", f"# {comment}", ""]
    if setup and setup.strip():
        lines += ["# Set-up, as given:", setup.strip(), ""]
    else:
        bindir = os.path.dirname(sys.executable)
        lines += [
            "# The Python environment shoal was started from:",
            f'export PATH={shlex.quote(bindir)}:"$PATH"',
            "",
        ]
    lines.append("# MPI ranks started by srun: no PMIx warning from PyPI's Open MPI.")
    for name, value in LAUNCH_ENV.items():
        lines.append(f'export {name}="${{{name}:-{value}}}"')
    lines += ["", body.rstrip(), ""]
    return "\n".join(lines)
