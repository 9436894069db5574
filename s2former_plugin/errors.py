"""One way to fail: the project's error base class and the runner that prints it as one line.

Every error a user can cause (a bad option, a missing or damaged file, a folder in use) derives from
:class:`S2FormerError`; its message is one line naming the file, key or option, and its ``exit_status`` is what the
command returns (2: bad arguments or inputs, nothing done; 1: done, but something was skipped). A command's ``main``
runs its body through :func:`run_command`, which prints ``<command>: error: <message>`` on stderr and returns the
status, so no command prints a traceback for bad input. A command that ran to the end but left something out
(files skipped, a check failed) returns :func:`incomplete_status`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ['S2FormerError', 'CommandError', 'OptionError', 'first_line', 'incomplete_status', 'run_command']


class S2FormerError(Exception):
    """Base of the project's user-facing errors: a one-line message and the exit status of the command."""

    exit_status: int = 2
    #: Printed without a traceback (every subclass is; kept for code that asks).
    one_line: bool = True


class CommandError(S2FormerError):
    """Bad command-line arguments or inputs: nothing was done."""


class OptionError(S2FormerError, ValueError):
    """A bad key or value in an options file (the message names the key's path, e.g. ``train:compile:mode``)."""


def first_line(exc: BaseException, limit: int | None = None, default: str = '') -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), ``default`` where it has none: how a
    library's multi-line error is quoted in a one-line message."""
    return (str(exc).strip().splitlines() or [default])[0][:limit]


def run_command(command: str, body: Callable[[], int]) -> int:
    """Run a command's body; an :class:`S2FormerError` becomes ``<command>: error: <message>`` and its status.

    Args:
        command: The name printed before the message (``infer``, ``report``, ...).
        body: The command's work; returns its exit status.

    Returns:
        ``body()``'s status, or the error's ``exit_status``.
    """
    try:
        return body()
    except S2FormerError as exc:
        print(f'{command}: error: {exc}', file=sys.stderr)
        return exc.exit_status


def incomplete_status(command: str, problem: str | None) -> int:
    """The exit status of a command that ran to the end: 0, or 1 after printing ``<command>: <problem>`` on stderr.

    Args:
        command: The name printed before the problem.
        problem: What was left out (``3 file(s) skipped: ...``), or ``None`` when nothing was.

    Returns:
        1 when there is a problem, else 0.
    """
    if problem is None:
        return 0
    print(f'{command}: {problem}', file=sys.stderr)
    return 1
