"""``python -m s2former_plugin.benchmark``: see :mod:`.driver`."""

import sys

from .driver import main

sys.exit(main())
