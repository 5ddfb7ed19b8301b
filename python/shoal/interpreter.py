"""The command line of a fresh interpreter that runs a module of shoal's:
a pool's worker (``shoal.worker``) or a ``shoal.Process`` child
(``shoal.sync.child``).

``python -m module`` puts the working directory first on ``sys.path``, so a
``__future__.py`` or a ``shoal/`` folder there would run in every worker.
Instead the interpreter starts with ``-P`` (nothing is put before the
standard library) and ``-c`` with a few lines that install the parent's
``sys.path`` (passed as arguments, so ``-E`` cannot hide it) and run the
module; the parent's isolation flags (``-I``, ``-E``, ``-s``) are passed on.
``-S`` skips ``site`` (.pth files and sitecustomize can cost tens of
milliseconds per start): the parent's ``sys.path`` already holds what
``site`` would add. ``SHOAL_WORKER_SITE=1`` keeps ``site``.

An empty entry in the parent's ``sys.path`` (``python -c``, a notebook)
means the working directory *for the parent*; it is left out until the
module's own code has started, which then installs the parent's exact
``sys.path`` (a pool's worker does so with the Init frame): modules the
parent imports from there, the worker imports too.
"""

from __future__ import annotations

import os
import sys

#: Run by ``-c``: the arguments are the path, then the module, whose
#: ``main()`` returns the exit code.
_BOOTSTRAP = (
    "import sys; sys.path[:] = sys.argv[1:-1]; module = sys.argv[-1]; del sys.argv[1:]; "
    "sys.exit(__import__(module, fromlist=['main']).main())"
)


def _flags() -> list[str]:
    flags = []
    if sys.flags.isolated:
        flags.append("-I")  # also -E, -P and -s
    else:
        if sys.flags.ignore_environment:
            flags.append("-E")
        if sys.flags.no_user_site:
            flags.append("-s")
        flags.append("-P")
    if os.environ.get("SHOAL_WORKER_SITE") != "1":
        flags.append("-S")
    return flags


def command(module: str) -> list[str]:
    """Arguments for ``sys.executable`` that run ``module``'s ``main()``
    with the parent's ``sys.path`` and isolation, and nothing from the
    working directory."""
    path = [entry for entry in sys.path if entry]
    return [*_flags(), "-c", _BOOTSTRAP, *path, module]
