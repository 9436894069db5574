"""The benchmark's YAML schema: defaults, typed options, checked by :mod:`s2former_plugin.options` (unknown keys
refused with a "did you mean" hint, numbers, switches)."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import yaml

from s2former_plugin.errors import CommandError
from s2former_plugin.options import check_keys, check_number, check_switch, suggestion

DEFAULTS: dict[str, Any] = {
    'name': 'benchmark',
    'imports': [],
    'device': 'auto',
    'reference': None,
    'data': {'layout': 'paired'},
    'train': {
        'seed': 0,
        'seeds': 3,
        'batch_size': 4,
        'crop': 64,
        'num_workers': 0,
        'use_hflip': True,
        'use_rot': True,
        'total_iter': None,
        'max_minutes': None,
        'calibration_iters': 4,
        'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.999]},
        'scheduler': {'type': 'CosineAnnealingRestartLR', 'eta_min': 1e-6},
        'ema_decay': 0,
        'print_freq': 10,
        'save_checkpoint_freq': 100,
        'threads': None,
    },
    'loss': {'s2former_multiscale': False, 's2former_udl': False},
    'eval': {'tile': 256, 'tile_overlap': 32, 'protocol': 'standard', 'metrics': ['psnr', 'ssim']},
    'speed': {'sizes': [256, 512], 'macs_size': 256, 'runs': 5, 'threads': None},
    'bootstrap': {'resamples': 10000, 'confidence': 0.95, 'seed': 0},
}
#: The keys of one ``archs:`` entry.
ARCH_KEYS = ('name', 'network_g', 'checkpoint', 'param_key', 'model_type', 'loss')
DATA_KEYS = ('layout', 'dataroot', 'split', 'subset', 'lq_dir', 'gt_dir', 'template', 'pairs')
# Blocks whose keys are not checked against DEFAULTS (passed to basicsr as they are).
FREE_FORM = ('train:optim_g', 'train:scheduler')
# Typed options: (kind, smallest value, None allowed). 'int': an integer; 'number': int or float; 'bool': a boolean.
# YAML's true/false are Python bools, and bool is a subclass of int: they are refused where a number is expected.
OPTION_TYPES: dict[str, tuple[str, float | None, bool]] = {
    'train:seed': ('int', None, False),
    'train:seeds': ('int', 1, False),
    'train:batch_size': ('int', 1, False),
    'train:crop': ('int', 1, False),
    'train:num_workers': ('int', 0, False),
    'train:use_hflip': ('bool', None, False),
    'train:use_rot': ('bool', None, False),
    'train:total_iter': ('number', None, True),
    'train:max_minutes': ('number', None, True),
    'train:calibration_iters': ('int', 1, False),
    'train:ema_decay': ('number', 0, False),
    'train:print_freq': ('int', 1, False),
    'train:save_checkpoint_freq': ('int', 1, False),
    'train:threads': ('int', 1, True),
    'loss:s2former_multiscale': ('bool', None, False),
    'loss:s2former_udl': ('bool', None, False),
    'eval:tile': ('int', 0, True),
    'eval:tile_overlap': ('int', 0, False),
    'speed:macs_size': ('int', 1, False),
    'speed:runs': ('int', 1, False),
    'speed:threads': ('int', 1, True),
    'bootstrap:resamples': ('int', 100, False),
    'bootstrap:confidence': ('number', 0, False),
    'bootstrap:seed': ('int', None, False),
}
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


class BenchmarkError(CommandError):
    """A bad option or a failed step; ``str()`` is one line that names the option or the folder."""


# ----------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------
def _merge(base: dict, over: dict | None, where: str = '') -> dict:
    """``base`` updated with ``over``, nested mappings merged; a key that ``base`` lacks is an error.

    ``where`` is the key path of ``base`` (``''`` at the top); the blocks of :data:`FREE_FORM` take any key, and
    ``data:`` takes :data:`DATA_KEYS` and ``train``/``test`` (checked by :func:`select_pairs`).
    """
    out = copy.deepcopy(base)
    if over is None:
        return out
    if not isinstance(over, dict):
        raise BenchmarkError(f'{where or "options"}: expected a mapping, got {type(over).__name__}')
    if where not in FREE_FORM:
        check_keys(over, (*DATA_KEYS, 'train', 'test') if where == 'data' else base, where, error=BenchmarkError)
    for k, v in over.items():
        path = f'{where}:{k}' if where else str(k)
        out[k] = _merge(out[k], v, path) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _check_value(path: str, value: Any) -> None:
    """Check one :data:`OPTION_TYPES` option; raises a :class:`BenchmarkError` naming ``path``."""
    kind, lowest, nullable = OPTION_TYPES[path]
    if kind == 'bool':
        check_switch(value, path, nullable=nullable, error=BenchmarkError)
    else:
        check_number(value, path, integer=kind == 'int', minimum=lowest, nullable=nullable, error=BenchmarkError)


def load_options(path: str, overrides: dict | None = None) -> dict:
    """Read a benchmark YAML, fill in the defaults, apply CLI ``overrides`` and check it.

    Args:
        path: The YAML file.
        overrides: ``data_root``, ``total_iter``, ``max_minutes``, ``seeds``, ``only`` (list of arch names), when given.

    Returns:
        The complete options.

    Raises:
        BenchmarkError: unreadable file or a bad option (the message names it).
    """
    if not os.path.isfile(path):
        raise BenchmarkError(f'-opt: file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise BenchmarkError(f'-opt: {path} is not valid YAML: {str(err).splitlines()[0]}') from None
    if not isinstance(raw, dict):
        raise BenchmarkError(f'-opt: {path} must hold a mapping with an archs: list')
    check_keys(raw, {*DEFAULTS, 'archs'}, error=BenchmarkError)
    archs = raw.pop('archs', None)
    opt = _merge(DEFAULTS, raw)
    overrides = overrides or {}
    if overrides.get('data_root'):
        opt['data']['dataroot'] = overrides['data_root']
    for key in ('total_iter', 'max_minutes', 'seeds'):
        if overrides.get(key) is not None:
            opt['train'][key] = overrides[key]
    if isinstance(opt['imports'], str):
        opt['imports'] = [opt['imports']]

    if not isinstance(archs, list) or not archs:
        raise BenchmarkError('archs: a non-empty list of {name, network_g: {type: ...}} entries is required')
    names = set()
    for i, entry in enumerate(archs):
        where = f'archs[{i}]'
        if not isinstance(entry, dict):
            raise BenchmarkError(f'{where}: expected a mapping with name and network_g')
        check_keys(entry, ARCH_KEYS, where, error=BenchmarkError)
        loss = entry.get('loss') or {}
        if not isinstance(loss, dict):
            raise BenchmarkError(f'{where}:loss: expected a mapping, got {type(loss).__name__}')
        check_keys(loss, DEFAULTS['loss'], f'{where}:loss', error=BenchmarkError)
        for key, value in loss.items():
            try:
                _check_value(f'loss:{key}', value)
            except BenchmarkError as err:
                raise BenchmarkError(f'{where}:{err}') from None
        name = entry.get('name')
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BenchmarkError(f'{where}:name: required, letters/digits/_.- only (got {name!r})')
        if name in names:
            raise BenchmarkError(f'{where}:name: {name!r} appears twice')
        names.add(name)
        net = entry.get('network_g')
        if not isinstance(net, dict) or not isinstance(net.get('type'), str):
            raise BenchmarkError(f'{where}:network_g: a mapping with a type: is required')
        ckpt = entry.get('checkpoint')
        if ckpt is not None and not os.path.isfile(ckpt):
            raise BenchmarkError(f'{where}:checkpoint: file not found: {ckpt}')
    reference = opt['reference']
    if reference is not None and reference not in names:
        hint = suggestion(str(reference), sorted(names)).replace('the keys are', 'the archs are')
        raise BenchmarkError(f'reference: no arch named {reference!r}{hint}')
    only = overrides.get('only')
    if only:
        missing = sorted(set(only) - names)
        if missing:
            raise BenchmarkError(f'--only: no arch named {missing[0]!r}; the archs are {", ".join(sorted(names))}')
        if reference is not None and reference not in only:
            raise BenchmarkError(f'--only: leaves out the reference arch {reference!r} (reference:); add it')
        archs = [a for a in archs if a['name'] in only]
    opt['archs'] = archs

    for path in OPTION_TYPES:
        section, key = path.split(':')
        _check_value(path, opt[section][key])
    train = opt['train']
    if train['total_iter'] is None and train['max_minutes'] is None:
        raise BenchmarkError('train:total_iter: set total_iter and/or max_minutes (the training budget)')
    for key in ('total_iter', 'max_minutes'):
        value = train[key]
        if value is not None and value <= 0:
            raise BenchmarkError(f'train:{key}: must be a positive number (got {value!r})')
    ev = opt['eval']
    from s2former_plugin.tiling import check_tiling

    try:
        check_tiling(ev['tile'], ev['tile_overlap'], names=('eval:tile', 'eval:tile_overlap', '', ''))
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    metrics = ev['metrics']
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise BenchmarkError(f'eval:metrics: a non-empty list of metric names is required (got {metrics!r})')
    if opt['device'] not in ('auto', 'cpu', 'cuda'):
        raise BenchmarkError(f'device: {opt["device"]!r} is not one of auto, cpu, cuda')
    if opt['eval']['protocol'] not in ('standard', 'official'):
        raise BenchmarkError(f'eval:protocol: {opt["eval"]["protocol"]!r} is not one of standard, official')
    if not 0 < opt['bootstrap']['confidence'] < 1:
        raise BenchmarkError(f'bootstrap:confidence: must be between 0 and 1 (got {opt["bootstrap"]["confidence"]!r})')
    sizes = opt['speed']['sizes']
    if not isinstance(sizes, list) or not sizes or not all(type(s) is int and s > 0 for s in sizes):
        raise BenchmarkError(f'speed:sizes: a list of positive image sizes is required (got {sizes!r})')
    return opt
