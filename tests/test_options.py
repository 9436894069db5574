"""s2former_plugin.options: the one option checker (unknown keys refused with a suggestion, numbers, switches)."""

from __future__ import annotations

import math

import pytest

from s2former_plugin.errors import OptionError
from s2former_plugin.options import check_keys, check_number, check_switch, is_number, suggestion


def test_unknown_keys_are_refused_with_the_closest_known_key_or_the_list():
    check_keys({'lr': 1, 'betas': 2}, ['lr', 'betas', 'eps'], 'train:optim_g')
    with pytest.raises(OptionError, match=r"^train:optim_g:lrr: unknown key; did you mean 'lr'\?$"):
        check_keys({'lrr': 1}, ['lr', 'betas'], 'train:optim_g')
    with pytest.raises(OptionError, match=r'^zzz: unknown key; the keys are betas, lr$'):
        check_keys({'zzz': 1}, ['lr', 'betas'])
    assert suggestion('ema_decy', ['ema_decay', 'total_iter']) == "; did you mean 'ema_decay'?"


def test_numbers_and_switches():
    assert is_number(3) and is_number(0.5) and not is_number(True) and not is_number('3')
    check_number(3, 'a', integer=True, minimum=1)
    for bad, what in ((True, 'an integer'), (2.5, 'an integer'), (0, r'an integer >= 1'), (None, 'an integer')):
        with pytest.raises(OptionError, match=rf'^a: must be {what} \(got '):
            check_number(bad, 'a', integer=True, minimum=1)
    with pytest.raises(OptionError, match='a finite number'):
        check_number(math.inf, 'a')
    check_number(None, 'a', nullable=True)
    check_number(1, 'a', minimum=0, maximum=1)
    for bad in (-0.5, 1.5):
        with pytest.raises(OptionError, match=r'^a: must be a number in \[0, 1\] \(got '):
            check_number(bad, 'a', minimum=0, maximum=1)
    with pytest.raises(OptionError, match=r'^a: must be a number <= 1 \(got 2\)$'):
        check_number(2, 'a', maximum=1)
    check_switch(False, 's')
    with pytest.raises(OptionError, match=r"^s: must be true or false \(got 'yes'\)$"):
        check_switch('yes', 's')


def test_a_caller_chooses_its_error_class():
    class BenchError(ValueError):
        pass

    with pytest.raises(BenchError):
        check_keys({'x': 1}, [], 'data', error=BenchError)
