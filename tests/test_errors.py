"""errors.first_line: how a library's multi-line error is quoted in the project's one-line messages."""

from __future__ import annotations

from s2former_plugin.errors import first_line


def test_first_line_quotes_the_first_line_cut_to_the_limit():
    exc = RuntimeError('  CUDA error: operation not permitted when stream is capturing\nCompile with DSA  ')
    assert first_line(exc) == 'CUDA error: operation not permitted when stream is capturing'
    assert first_line(exc, 10) == 'CUDA error'


def test_an_empty_message_gives_the_default():
    assert first_line(RuntimeError()) == ''
    assert first_line(KeyError(''), default='KeyError') == "''"  # KeyError quotes its key: not empty
    assert first_line(ValueError('   \n  '), default='ValueError') == 'ValueError'
