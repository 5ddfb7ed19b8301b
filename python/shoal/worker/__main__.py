"""``python -m shoal.worker``: a pool's worker process, started by the engine."""

import sys

from .process import main

sys.exit(main())
