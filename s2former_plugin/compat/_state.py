"""State the compat modules share: the plugin's name, basicsr's logger, basicsr's replaced functions, and messages
for the training log written once basicsr has created its logger."""

from __future__ import annotations

import logging
from collections.abc import Callable

PLUGIN = 's2former_plugin'
logger = logging.getLogger('basicsr')
#: basicsr's functions that the patches replace and still call.
ORIGINAL: dict[str, Callable] = {}
#: Messages for the training log, written once basicsr has created its logger (resume happens before that).
pending_log: list[str] = []
