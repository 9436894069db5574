"""``python -m s2former_plugin.benchmark``: see :mod:`.cli` (the command line) and :mod:`.driver` (the benchmark)."""

import sys

from .cli import main

sys.exit(main())
