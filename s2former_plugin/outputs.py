"""Output folders a command owns for its run: one run at a time, and no earlier run's outputs passed off as this one's.

Every command that writes a folder of results (``infer --output``, ``report --out``) opens it with
:class:`OutputFolder`:

* a lock file (``.s2former-<command>.lock``, holding the process id) makes a second run into the same folder fail
  with one line while the first is running; a lock left by a process that no longer exists is taken over;
* :meth:`OutputFolder.set_aside` moves the previous run's report files into ``.previous-<command>/`` before the new
  run computes anything, so a run that is killed leaves no stale ``metrics.json`` looking current (and loses
  nothing: the old files are still there until the new run has written its own);
* :meth:`OutputFolder.claim` refuses to overwrite files an earlier run wrote unless ``overwrite`` was asked for.
"""

from __future__ import annotations

import errno
import os
import shutil

from .errors import CommandError

__all__ = ['OutputBusy', 'OutputFolder']


class OutputBusy(CommandError):
    """Another run is writing into the same output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


class OutputFolder:
    """A command's output folder, locked for one run (a context manager).

    Args:
        path: The folder (created).
        command: The command's name (``infer``, ``report``), used in file names and messages.
        option: The command-line option that named the folder (for messages).
    """

    def __init__(self, path: str, command: str, option: str) -> None:
        self.path, self.command, self.option = path, command, option
        self.lock = os.path.join(path, f'.s2former-{command}.lock')
        self.previous = os.path.join(path, f'.previous-{command}')
        self._held = False

    def __enter__(self) -> OutputFolder:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise CommandError(f'{self.option}: cannot create {exc.filename or self.path} ({exc.strerror})') from None
        if not os.access(self.path, os.W_OK):
            raise CommandError(f'{self.option}: {self.path} is not writable')
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._lock_pid()
                if pid is not None and _alive(pid) and pid != os.getpid():
                    raise OutputBusy(
                        f'{self.option}: {self.path} is being written by another {self.command} run (process {pid}); '
                        'wait for it or choose another folder'
                    ) from None
                os.remove(self.lock)  # left by a run that was killed
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(f'{os.getpid()}\n')
            self._held = True
            return self
        raise OutputBusy(f'{self.option}: cannot lock {self.path}')  # pragma: no cover - a race lost twice

    def __exit__(self, *exc_info: object) -> None:
        if self._held:
            self._held = False
            try:
                os.remove(self.lock)
            except FileNotFoundError:  # pragma: no cover
                pass

    def _lock_pid(self) -> int | None:
        try:
            with open(self.lock, encoding='utf-8') as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def set_aside(self, names: list[str]) -> list[str]:
        """Move the listed earlier outputs (files or folders) into ``.previous-<command>/``; returns those moved.

        Call it before the run computes anything; call :meth:`drop_previous` once the new outputs are written.
        """
        moved = []
        for name in names:
            src = os.path.join(self.path, name)
            if not os.path.lexists(src):
                continue
            os.makedirs(self.previous, exist_ok=True)
            dst = os.path.join(self.previous, name)
            if os.path.lexists(dst):
                shutil.rmtree(dst) if os.path.isdir(dst) and not os.path.islink(dst) else os.remove(dst)
            os.replace(src, dst)
            moved.append(name)
        return moved

    def drop_previous(self) -> None:
        """Delete what :meth:`set_aside` kept (the new run's outputs are complete)."""
        shutil.rmtree(self.previous, ignore_errors=True)

    def claim(self, names: list[str], overwrite: bool, flag: str = '--overwrite') -> None:
        """Refuse to write over files already in the folder unless ``overwrite``.

        Raises:
            CommandError: Some of ``names`` exist and ``overwrite`` is false (the message gives the count and one).
        """
        existing = [n for n in names if os.path.lexists(os.path.join(self.path, n))]
        if existing and not overwrite:
            raise CommandError(
                f"{self.option}: {self.path} already holds {len(existing)} of this run's output name(s) (e.g. "
                f'{existing[0]}) from an earlier run; choose an empty folder or pass {flag}'
            )
