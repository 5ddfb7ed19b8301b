"""``python -m shoal.cluster PROGRAM [ARGS]``: see ``shoal.cluster.launch``."""

import sys

from .launch import main

if __name__ == "__main__":
    sys.exit(main())
