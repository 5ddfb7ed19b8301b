"""``python -m shoal``: the ``shoal`` command (as batch scripts run it,
where the ``shoal`` script may not be on the path)."""

import sys

from .cli.main import main

sys.exit(main())
