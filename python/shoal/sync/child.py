"""The child of a ``shoal.Process``, started by the engine (see
``shoal.interpreter``). It receives its work as one frame, runs it, and
exits with multiprocessing's exit codes."""

from __future__ import annotations

import sys

from .. import _shoal
from ..errors import ShoalError
from ..wire.serialize import loads
from ..wire.transfer import unpack
from ..worker.identity import name_process


def _run() -> int:
    try:
        link = _shoal.Link()
        frame, *_ = link.recv()
        body, fds = frame.body, frame.fds
    except (ShoalError, EOFError) as exc:
        print(f"shoal.sync.child: {exc}; it is started by shoal.Process", file=sys.stderr)
        return 2
    name = "?"
    try:
        name, target, args, kwargs = loads(body) if fds is None else unpack(body, fds)
        del body, fds
        name_process(name)
        if target is not None:
            target(*args, **kwargs)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as multiprocessing does
        import traceback

        print(f"Process {name}:", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


def main() -> int:
    code = _run()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
