"""The arch benchmark: ``python -m s2former_plugin.benchmark -opt options/benchmark.yml`` (see :mod:`.driver`).

Modules: :mod:`.options` (YAML schema), :mod:`.data` (pair selection), :mod:`.nets` (building archs),
:mod:`.train_child` and :mod:`.eval_child` (the per-arch subprocesses), :mod:`.measure` (speed, memory,
multiply-adds; shared with ``benchmarks/*.py``), :mod:`.report` (tables, plots), :mod:`.driver` (the command).
Names are re-exported lazily, so running a child module imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    'BenchmarkError': 'options',
    'CALIBRATION_WARMUP': 'train_child',
    'DATA_KEYS': 'options',
    'DEFAULTS': 'options',
    'FREE_FORM': 'options',
    'NAME_RE': 'options',
    'OPTION_TYPES': 'options',
    'RESULT_FILE': 'driver',
    'build_net': 'nets',
    'build_parser': 'driver',
    'build_train_options': 'train_child',
    'count_macs': 'measure',
    'data_fingerprint': 'data',
    'evaluate_child': 'eval_child',
    'import_modules': 'nets',
    'is_s2former': 'nets',
    'load_options': 'options',
    'main': 'driver',
    'materialise': 'data',
    'measure_speed': 'measure',
    'parse_pairs': 'data',
    'parse_training_log': 'report',
    'results_markdown': 'report',
    'run_arch': 'driver',
    'run_benchmark': 'driver',
    'select_pairs': 'data',
    'time_calls': 'measure',
    'write_plots': 'report',
    'write_reports': 'report',
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
