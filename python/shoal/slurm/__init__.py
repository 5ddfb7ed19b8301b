"""shoal on a SLURM cluster: ``shoal lab`` (Jupyter on a compute node) and
``shoal submit`` (a program as a batch job).

One concept per module: ``jobs`` runs SLURM's commands and reads their
answers, ``batch`` writes batch scripts, ``config`` reads lab.toml, and
``lab`` and ``submit`` are the commands.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``lab`` and ``submit`` to the ``shoal`` command's subparsers."""
    from . import lab, submit

    lab.add_parser(sub)
    submit.add_parser(sub)
