"""Run something when a module is first imported, without importing it
first: a worker sets up ``logging`` and ``multiprocessing``'s process name
only if the user's code imports them (importing them up front would cost
every worker tens of milliseconds at start)."""

from __future__ import annotations

import sys


def when_imported(name: str, then) -> None:
    """Calls ``then(module)`` once module ``name`` has run: now if it is
    already imported, else right after its first import."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))


class _AfterImport:
    """A meta path finder that lets the other finders import ``name``, then
    calls ``then(module)`` once the module has run; used once, then gone."""

    def __init__(self, name: str, then) -> None:
        self._name = name
        self._then = then

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != self._name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        run = getattr(spec.loader, "exec_module", None)
        if run is None:
            return spec  # an old-style loader: imported, but not watched
        then = self._then

        def exec_module(module) -> None:
            run(module)
            then(module)

        spec.loader.exec_module = exec_module  # this spec's own loader object
        return spec
