"""The one option checker: known keys (with a suggestion), numbers and switches, for every YAML the plugin reads.

Policy, the same for the training model, the datasets and the benchmark: **an unknown key is refused**, with the
closest known key as a suggestion (``train:ema_decy: unknown key; did you mean 'ema_decay'?``) or the list of known
keys when none is close. An ignored typo silently changes an experiment; a refused one costs a second. A number must
be a number (``true`` is not 1), a switch ``true`` or ``false``.

Every check raises :class:`~s2former_plugin.errors.OptionError` (or the subclass passed as ``error``), one line
naming the key's path.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from .errors import OptionError

__all__ = ['check_keys', 'check_number', 'check_switch', 'closest', 'is_number', 'suggestion']


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (YAML's ``true`` is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def closest(key: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known key closest to ``key`` (difflib's ratio at least ``cutoff``), or ``None``."""
    close = difflib.get_close_matches(str(key), sorted(map(str, known)), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggestion(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known key, else ``'; the keys are a, b, ...'``."""
    known = sorted(map(str, known))
    close = closest(key, known)
    return f'; did you mean {close!r}?' if close else f'; the keys are {", ".join(known)}'


def check_keys(opt: dict, known: Iterable[str], where: str = '', error: type[Exception] = OptionError) -> None:
    """Refuse any key of ``opt`` not in ``known`` (the first in sorted order), with :func:`suggestion`.

    Args:
        opt: The mapping read from YAML.
        known: The keys it may have.
        where: The path of ``opt`` (``train``, ``datasets:train``); the message is ``<where>:<key>: ...``.
        error: The exception class to raise.
    """
    known = set(map(str, known))
    for key in sorted(map(str, opt), key=str):
        if key not in known:
            path = f'{where}:{key}' if where else key
            raise error(f'{path}: unknown key{suggestion(key, known)}')


def check_number(
    value: Any,
    path: str,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    nullable: bool = False,
    error: type[Exception] = OptionError,
) -> None:
    """Refuse a value that is not a finite number (an integer when ``integer``) of at least ``minimum`` and at most
    ``maximum``: ``<path>: must be a number in [0, 1] (got 1.5)``."""
    if value is None and nullable:
        return
    what = 'an integer' if integer else 'a number'
    ok = is_number(value) and (not integer or isinstance(value, int))
    if ok and not math.isfinite(value):
        ok, what = False, 'a finite number'
    if ok and ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        if maximum is None:
            ok, what = False, f'{what} >= {minimum}'
        else:
            ok, what = False, f'{what} in [{minimum}, {maximum}]' if minimum is not None else f'{what} <= {maximum}'
    if not ok:
        raise error(f'{path}: must be {what}{" or null" if nullable else ""} (got {value!r})')


def check_switch(value: Any, path: str, *, nullable: bool = False, error: type[Exception] = OptionError) -> None:
    """Refuse a value that is not ``true`` or ``false``."""
    if value is None and nullable:
        return
    if not isinstance(value, bool):
        raise error(f'{path}: must be true or false{" or null" if nullable else ""} (got {value!r})')
