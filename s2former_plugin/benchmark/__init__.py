"""The arch benchmark: ``python -m s2former_plugin.benchmark -opt options/benchmark.yml`` (see :mod:`.driver`).

Modules: :mod:`.options` (YAML schema), :mod:`.data` (pair selection), :mod:`.nets` (building archs),
:mod:`.batches` (the seeded training crops every arch shares, batch records), :mod:`.train_child` (the per-run
training subprocess, and the budget's calibration), :mod:`.eval_child` (one subprocess measuring all archs together,
then scoring every run), :mod:`.measure` (speed, memory, multiply-adds; shared with ``benchmarks/*.py``),
:mod:`.statistics` (mean ± std over seeds, paired bootstrap, the per-arch summaries), :mod:`.report` (tables,
plots), :mod:`.resume` (the stored pieces of a benchmark and whether they may be reused), :mod:`.children`
(launching the subprocesses), :mod:`.driver` (the benchmark's steps in order), :mod:`.cli` (the command line).
Names are re-exported lazily, so running a child module imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    'ARCH_KEYS': 'options',
    'BATCH_RECORD': 'train_child',
    'BenchmarkCrops': 'batches',
    'BenchmarkError': 'options',
    'StatisticsError': 'statistics',
    'batch_digest': 'batches',
    'budget_iterations': 'driver',
    'calibrate': 'train_child',
    'check_batches': 'driver',
    'compare_records': 'batches',
    'crop_plan': 'batches',
    'mean_std': 'statistics',
    'evaluate_all': 'driver',
    'measure_interleaved': 'measure',
    'paired_comparison': 'statistics',
    'pair_order': 'batches',
    'pick_reference': 'driver',
    'read_record': 'batches',
    'summarise': 'statistics',
    'CALIBRATION_WARMUP': 'train_child',
    'DATA_KEYS': 'options',
    'DEFAULTS': 'options',
    'FREE_FORM': 'options',
    'NAME_RE': 'options',
    'OPTION_TYPES': 'options',
    'RESULT_FILE': 'resume',
    'build_net': 'nets',
    'build_parser': 'cli',
    'build_train_options': 'train_child',
    'count_macs': 'measure',
    'data_fingerprint': 'data',
    'evaluate_child': 'eval_child',
    'import_modules': 'nets',
    'is_s2former': 'nets',
    'load_options': 'options',
    'main': 'cli',
    'materialise': 'data',
    'measure_speed': 'measure',
    'parse_pairs': 'data',
    'parse_training_log': 'report',
    'results_markdown': 'report',
    'train_run': 'driver',
    'run_benchmark': 'driver',
    'select_pairs': 'data',
    'time_calls': 'measure',
    'write_plots': 'report',
    'write_results': 'report',
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
