"""Running the benchmark's steps in fresh subprocesses (the budget's calibration, each training run, the evaluation),
and the progress lines printed around them.

A child's output goes to its log file; a failure becomes one :class:`.options.BenchmarkError` line naming the step,
the exit status, the log's last line and the log.
"""

from __future__ import annotations

import os
import subprocess

from .options import BenchmarkError

__all__ = ['child_env', 'log', 'run_child']


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of a child: this one, with ``OMP_NUM_THREADS`` set to ``threads`` (when given)."""
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    # A fixed mmap threshold (glibc) returns every large freed block to the system at once, so the resident set
    # follows the live tensors and the CPU peak-memory figure does not depend on what ran before.
    env.setdefault('MALLOC_MMAP_THRESHOLD_', str(128 * 1024))
    return env


def run_child(cmd: list[str], cwd: str, log_path: str, threads: int | None, what: str) -> None:
    """Run ``cmd`` in ``cwd``, its output appended to ``log_path``.

    Args:
        cmd: The command (``[sys.executable, '-m', module, ...]``).
        cwd: Its working directory.
        log_path: The log its stdout and stderr are appended to.
        threads: ``OMP_NUM_THREADS`` of the child, or ``None``: inherited.
        what: The step, for the message (``budget calibration``, ``<arch> seed0: training``, ``evaluation``).

    Raises:
        BenchmarkError: the child failed.
    """
    with open(log_path, 'a', encoding='utf-8') as log_file:
        proc = subprocess.run(cmd, cwd=cwd, env=child_env(threads), stdout=log_file, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, encoding='utf-8', errors='replace') as f:
            tail = [ln.strip() for ln in f if ln.strip()]
        last = tail[-1] if tail else 'no output'
        raise BenchmarkError(f'{what} failed (exit {proc.returncode}): {last} [log: {log_path}]')


def log(msg: str) -> None:
    """Print one progress line (``[benchmark] msg``)."""
    print(f'[benchmark] {msg}', flush=True)
