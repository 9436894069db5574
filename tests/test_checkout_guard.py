"""The conftest guard: the suite refuses to run when ``s2former_plugin`` is not the checkout's own code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO, clean_env

import s2former_plugin

TESTS = Path(__file__).resolve().parent


def test_suite_runs_the_checkout_and_subprocesses_do_too(tmp_path):
    assert Path(s2former_plugin.__file__).resolve().parent == REPO / 's2former_plugin'
    code = 'import s2former_plugin; print(s2former_plugin.__file__)'
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert Path(proc.stdout.strip()).resolve().parent == REPO / 's2former_plugin', proc.stderr


def test_another_checkout_is_refused(tmp_path):
    """A second checkout whose package is not the one Python imports (as with a regular install): pytest stops
    with one clear line and runs no test."""
    other = tmp_path / 'other_checkout'
    (other / 's2former_plugin').mkdir(parents=True)
    (other / 's2former_plugin' / '__init__.py').write_text('raise ImportError("the other checkout was imported")\n')
    (other / 'tests').mkdir()
    for name in ('conftest.py', 'helpers.py', 'ci_guard.py'):
        shutil.copy(TESTS / name, other / 'tests' / name)
    (other / 'tests' / 'test_passes.py').write_text('def test_passes():\n    pass\n')
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', str(other / 'tests')]
    proc = subprocess.run(cmd, cwd=other, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert 'tests would import s2former_plugin from' in proc.stderr
    assert str(REPO / 's2former_plugin') in proc.stderr and str(other / 's2former_plugin') in proc.stderr
    assert 'passed' not in proc.stdout
