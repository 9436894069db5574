"""The CI guard: a skipped test fails the run when CI is set, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _run(tmp_path: Path, body: str, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / 'test_probe.py').write_text(body)
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    env['PYTHONPATH'] = os.pathsep.join([str(TESTS), env.get('PYTHONPATH', '')])
    if ci is not None:
        env['CI'] = ci
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'ci_guard', '-p', 'no:cacheprovider', 'test_probe.py']
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


SKIPPING = 'import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip("no fixture")\n'


@pytest.mark.parametrize('ci, expected', [('true', 1), ('1', 1), (None, 0), ('false', 0)])
def test_skip_fails_only_under_ci(tmp_path, ci, expected):
    proc = _run(tmp_path, SKIPPING, ci)
    assert proc.returncode == expected, proc.stdout + proc.stderr
    if expected:
        assert 'CI: 1 skipped test(s) count as failures: test_probe.py::test_b' in proc.stdout


def test_passing_run_stays_green_under_ci(tmp_path):
    proc = _run(tmp_path, 'def test_a():\n    pass\n', 'true')
    assert proc.returncode == 0, proc.stdout + proc.stderr
