"""A pytest plugin: under CI (the ``CI`` environment variable set), a skipped test fails the run.

A skip in CI hides a check that did not run (a missing fixture, a missing extra), so CI must say so loudly. Tests
that need hardware CI lacks are deselected by marker instead (``-m 'not gpu'`` in pyproject.toml), never skipped.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def _in_ci() -> bool:
    return os.environ.get('CI', '').strip().lower() not in ('', '0', 'false', 'no')


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _in_ci() and _skipped:
        terminalreporter.write_line(f'CI: {len(_skipped)} skipped test(s) count as failures: {", ".join(_skipped)}')


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _in_ci() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
