"""Benchmark S2Former against other BasicSR archs under one protocol: same data, budget, loss and metrics.

``python -m s2former_plugin.benchmark -opt options/benchmark.yml [--out DIR] [--data-root DIR] [--total-iter N]
[--max-minutes M] [--only NAME,...]``

Every arch of the YAML ``archs:`` list is trained through the real BasicSR pipeline (``python -m basicsr.train``
semantics via :func:`s2former_plugin.compat.train_main`, one subprocess per arch, ``--auto_resume``), unless it
gives ``checkpoint:``; then it is evaluated on whole test images (tiled with :mod:`s2former_plugin.tiling`; read,
converted and scored as ``infer`` + ``report`` would: :func:`s2former_plugin.metrics.scoring.read_image`,
:func:`s2former_plugin.inference.derain_array`, :func:`s2former_plugin.metrics.scoring.score_images`, means of the
finite values)
and measured (parameters, multiply-adds, latency, peak memory) in a fresh subprocess. Outputs, under ``--out``
(default ``benchmark_results/<name>`` in the working directory)::

    OUT/results.json  OUT/results.md  OUT/psnr_vs_latency.png  OUT/training_curves.png
    OUT/_data/{train,test}/{lq,gt}/     symlinks to the selected pairs (``paired`` layout)
    OUT/<arch>/options.yml              the BasicSR training options written for the arch
    OUT/<arch>/experiments/<arch>/      BasicSR's training outputs (logs, models, training states)
    OUT/<arch>/result.json              the arch's result: also the "done" marker
    OUT/<arch>/data_fingerprint.json    names, sizes and content hashes of the selected train/test files

YAML schema (see ``options/benchmark.yml``)::

    name: my_benchmark
    imports: [my_package.archs]          # optional: imported before any arch is built (also in subprocesses)
    device: auto                         # auto | cpu | cuda
    data:                                # keys here are defaults for train: and test:
      layout: rain200                    # rainds | rain200 | agan | paired (s2former_plugin.data.layouts)
      dataroot: /path/to/Rain100H
      train: {pairs: 1-60}               # split:, subset:, lq_dir: ... as find_pairs; pairs: 1-based positions in
      test: {pairs: 61-80}               # the naturally sorted pair list ('1-60', [1, 5, '10-12'], or all)
    train:
      seed: 0
      batch_size: 4
      crop: 64
      total_iter: 300                    # and/or max_minutes (wall-clock per arch, see "Budget" below)
      max_minutes: ~
      optim_g: {type: Adam, lr: 2.0e-4, betas: [0.9, 0.999]}
      scheduler: {type: CosineAnnealingRestartLR, eta_min: 1.0e-6}   # periods default to [total_iter]
      ema_decay: 0
    loss:
      s2former_multiscale: false         # S2Former only: + 0.5 x PSNR loss of its four side outputs
      s2former_udl: false                # S2Former only: + the uncertainty-driven loss
    eval: {tile: 256, tile_overlap: 32, protocol: standard, metrics: [psnr, ssim]}
    speed: {sizes: [256, 512], macs_size: 256, runs: 5, threads: ~}
    archs:
      - name: s2former_small
        network_g: {type: S2Former, preset: small}
      - name: restormer                  # the rival derainers (pip install "s2former_plugin[rivals]"): Restormer,
        network_g: {type: Restormer}     # MPRNet, NAFNet with their authors' kwargs (options/benchmark_derainers.yml)
      - name: ridnet
        network_g: {type: RIDNet, in_channels: 3, mid_channels: 64, out_channels: 3}
        checkpoint: ~                    # weights to evaluate instead of training (BasicSR or plain state dict)
      - name: s2former_paper_losses      # per-arch loss: overrides loss: (S2Former's auxiliary terms only)
        network_g: {type: S2Former, preset: small}
        loss: {s2former_multiscale: true, s2former_udl: true}

Loss: every arch is trained on the same objective, the PSNR loss (``-PSNR`` in dB of the RGB crop) of its final
output: :class:`MultiScalePSNRLoss` as ``pixel_opt`` for basicsr's ``SRModel``, and as ``psnr_opt`` with
``side_weight: 0`` for S2Former's ``S2FormerModel``. A benchmark of architectures should not also compare losses;
S2Former's auxiliary terms (multi-scale side outputs, UDL) are switches (``loss:``, or per arch) so that the
paper's recipe (without the perceptual term, which needs VGG19 weights) can be measured as a separate entry.

Budget: ``total_iter`` fixes the iterations. ``max_minutes`` is converted into iterations before training: the
training subprocess first times ``calibration_iters`` optimisation steps of the real model (``feed_data`` +
``optimize_parameters`` on random crops of the configured size, after untimed warm-up steps, 3 on CUDA, with cuDNN's
benchmark mode on as ``basicsr.train`` trains) and sets ``total_iter = minutes * 60 / median step
time`` (the smaller of the two when both are given). The count is written into ``OUT/<arch>/options.yml`` once,
so an interrupted run resumes towards the same target, and the training is reproducible. Data loading and
checkpointing are not in the step time, so the wall time slightly exceeds the budget.

Measurements (one fresh process per arch): parameters; multiply-adds of one ``macs_size`` x ``macs_size`` image via
``mmengine.analysis.FlopAnalyzer`` (fvcore convention: one fused multiply-add counts once; ops it cannot count,
listed in ``results.json``, are left out, except ``scaled_dot_product_attention`` for which a handler is added);
latency: median of ``runs`` whole-image forwards after one warm-up; peak memory: on CUDA
``max_memory_allocated`` minus the memory held before the forwards, on the CPU the peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident size before the forwards (warm-up
included), with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident
set and sizes measured earlier do not hide the later ones' peaks.

Resuming: an arch with ``OUT/<arch>/result.json`` is skipped; one with a trained ``net_g_latest.pth`` is only
evaluated; an interrupted training resumes from its last training state (``--auto_resume``). Changing an arch's
options, or the selected train/test files (names, sizes, contents), with an existing ``OUT/<arch>/`` is refused
(delete that folder or use another ``--out``); so are test pairs that share images with training pairs.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import importlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from typing import Any

import yaml

__all__ = [
    'BenchmarkError',
    'load_options',
    'select_pairs',
    'build_train_options',
    'count_macs',
    'measure_speed',
    'time_calls',
    'parse_training_log',
    'run_benchmark',
    'main',
]

DEFAULTS: dict[str, Any] = {
    'name': 'benchmark',
    'imports': [],
    'device': 'auto',
    'data': {'layout': 'paired'},
    'train': {
        'seed': 0,
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
}
DATA_KEYS = ('layout', 'dataroot', 'split', 'subset', 'lq_dir', 'gt_dir', 'template', 'pairs')
# Blocks whose keys are not checked against DEFAULTS (passed to basicsr as they are).
FREE_FORM = ('train:optim_g', 'train:scheduler')
# Typed options: (kind, smallest value, None allowed). 'int': an integer; 'number': int or float; 'bool': a boolean.
# YAML's true/false are Python bools, and bool is a subclass of int: they are refused where a number is expected.
OPTION_TYPES: dict[str, tuple[str, float | None, bool]] = {
    'train:seed': ('int', None, False),
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
}
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
RESULT_FILE = 'result.json'


class BenchmarkError(Exception):
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
    allowed = (*DATA_KEYS, 'train', 'test') if where == 'data' else tuple(base)
    for k, v in over.items():
        path = f'{where}:{k}' if where else str(k)
        if where not in FREE_FORM and k not in allowed:
            raise BenchmarkError(f'{path}: unknown option; the keys of {where} are {", ".join(map(str, allowed))}')
        out[k] = _merge(out[k], v, path) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _check_value(path: str, value: Any) -> None:
    """Check one :data:`OPTION_TYPES` option; raises a :class:`BenchmarkError` naming ``path``."""
    kind, lowest, nullable = OPTION_TYPES[path]
    if value is None and nullable:
        return
    if kind == 'bool':
        ok, what = isinstance(value, bool), 'true or false'
    else:
        types = int if kind == 'int' else int | float
        ok = isinstance(value, types) and not isinstance(value, bool)
        what = 'an integer' if kind == 'int' else 'a number'
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok, what = False, 'a finite number'
        if ok and lowest is not None and value < lowest:
            ok, what = False, f'{what} >= {lowest}'
    if not ok:
        raise BenchmarkError(f'{path}: must be {what}{" or null" if nullable else ""} (got {value!r})')


def load_options(path: str, overrides: dict | None = None) -> dict:
    """Read a benchmark YAML, fill in the defaults, apply CLI ``overrides`` and check it.

    Args:
        path: The YAML file.
        overrides: ``data_root``, ``total_iter``, ``max_minutes``, ``only`` (list of arch names), when given.

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
    known = set(DEFAULTS) | {'archs'}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BenchmarkError(f'{unknown[0]}: unknown option; the options are {", ".join(sorted(known))}')
    archs = raw.pop('archs', None)
    opt = _merge(DEFAULTS, raw)
    overrides = overrides or {}
    if overrides.get('data_root'):
        opt['data']['dataroot'] = overrides['data_root']
    for key in ('total_iter', 'max_minutes'):
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
        allowed = ('name', 'network_g', 'checkpoint', 'param_key', 'model_type', 'loss')
        bad = sorted(set(entry) - set(allowed))
        if bad:
            raise BenchmarkError(f'{where}:{bad[0]}: unknown key ({", ".join(allowed)})')
        loss = entry.get('loss') or {}
        if not isinstance(loss, dict):
            raise BenchmarkError(f'{where}:loss: expected a mapping, got {type(loss).__name__}')
        bad = sorted(set(loss) - set(DEFAULTS['loss']))
        if bad:
            raise BenchmarkError(f'{where}:loss:{bad[0]}: unknown key ({", ".join(DEFAULTS["loss"])})')
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
    only = overrides.get('only')
    if only:
        missing = sorted(set(only) - names)
        if missing:
            raise BenchmarkError(f'--only: no arch named {missing[0]!r}; the archs are {", ".join(sorted(names))}')
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
    sizes = opt['speed']['sizes']
    if not isinstance(sizes, list) or not sizes or not all(type(s) is int and s > 0 for s in sizes):
        raise BenchmarkError(f'speed:sizes: a list of positive image sizes is required (got {sizes!r})')
    return opt


def import_modules(modules: list[str]) -> None:
    """Import the ``imports:`` modules (which register user archs); a failure names the option."""
    for i, mod in enumerate(modules):
        try:
            importlib.import_module(mod)
        except Exception as err:  # noqa: BLE001 - any import failure is reported the same way
            raise BenchmarkError(f'imports[{i}]: cannot import {mod!r}: {type(err).__name__}: {err}') from None


def _basicsr():
    import basicsr  # noqa: F401 - registers the plugin through the startup hook

    from s2former_plugin import register

    register()


def build_net(network_g: dict, where: str = 'network_g'):
    """``basicsr.archs.build_network`` with the failure as a one-line :class:`BenchmarkError`."""
    _basicsr()
    from basicsr.archs import build_network

    try:
        return build_network(copy.deepcopy(network_g))
    except KeyError as err:  # the registry's message (names the plugin's and basicsr's archs)
        raise BenchmarkError(f'{where}:type: {err.args[0] if err.args else err}') from None
    except Exception as err:  # noqa: BLE001 - bad constructor arguments of any arch
        raise BenchmarkError(f'{where}: cannot build {network_g.get("type")}: {type(err).__name__}: {err}') from None


def is_s2former(network_g: dict) -> bool:
    """Whether the arch is (a subclass of) :class:`S2Former`, i.e. is trained by ``S2FormerModel``."""
    _basicsr()
    from basicsr.utils.registry import ARCH_REGISTRY

    from s2former_plugin.archs.s2former_arch import S2Former

    cls = ARCH_REGISTRY._obj_map.get(network_g['type'])
    return isinstance(cls, type) and issubclass(cls, S2Former)


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def parse_pairs(spec: Any, count: int, where: str) -> list[int]:
    """0-based indices from a 1-based ``pairs:`` spec (``'1-60'``, ``7``, a list of those, or ``None``: all)."""
    if spec is None or spec == 'all':
        return list(range(count))
    items = spec if isinstance(spec, list) else [spec]
    out: list[int] = []
    for item in items:
        m = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', str(item))
        if not m:
            raise BenchmarkError(f'{where}: {item!r} is not N or N-M (1-based positions)')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= count:
            raise BenchmarkError(f'{where}: {item!r} is outside 1-{count} (the folder has {count} pairs)')
        out.extend(range(lo - 1, hi))
    return list(dict.fromkeys(out))


def select_pairs(data_opt: dict, side: str) -> list:
    """The pairs of ``data:<side>`` (``train`` or ``test``): ``find_pairs`` on the merged keys, then ``pairs:``."""
    from s2former_plugin.data.layouts import LayoutError, find_pairs

    spec = {k: v for k, v in data_opt.items() if k in DATA_KEYS}
    side_opt = data_opt.get(side)
    if not isinstance(side_opt, dict):
        raise BenchmarkError(f'data:{side}: a mapping is required (e.g. {{pairs: 1-60}} or {{split: {side}}})')
    bad = sorted(set(side_opt) - set(DATA_KEYS))
    if bad:
        raise BenchmarkError(f'data:{side}:{bad[0]}: unknown key; the keys are {", ".join(DATA_KEYS)}')
    spec.update(side_opt)
    root = spec.get('dataroot')
    if not root:
        raise BenchmarkError(f'data:dataroot: required (or data:{side}:dataroot; --data-root on the CLI)')
    if not os.path.isdir(root):
        raise BenchmarkError(f'data:dataroot: folder not found: {root}')
    try:
        scan = find_pairs(
            spec.get('layout', 'paired'),
            root,
            split=spec.get('split'),
            subset=spec.get('subset'),
            lq_dir=spec.get('lq_dir'),
            gt_dir=spec.get('gt_dir'),
            template=spec.get('template'),
        )
    except LayoutError as err:
        raise BenchmarkError(f'data:{side}:{err}') from None
    if not scan.pairs:
        raise BenchmarkError(f'data:{side}: no image pairs in {scan.root} (layout {spec.get("layout", "paired")})')
    return [scan.pairs[i] for i in parse_pairs(spec.get('pairs'), len(scan.pairs), f'data:{side}:pairs')]


def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(train: list, test: list) -> dict:
    """Fingerprints of the selected train and test files (names, sizes, contents); refuses overlapping splits.

    Stored with every result, so a table never mixes results on different test sets and an arch finished on other
    data is not reused.

    Raises:
        BenchmarkError: A test pair shares a file, or a file's content, with a training pair.
    """
    digests: dict[str, str] = {}

    def side(pairs: list) -> tuple[str, list[tuple[str, str]]]:
        h, files = hashlib.sha1(), []
        for p in pairs:
            for path in (p.lq_path, p.gt_path):
                real = os.path.realpath(path)
                if real not in digests:
                    digests[real] = _file_digest(real)
                h.update(f'{p.key}\0{os.path.basename(path)}\0{os.path.getsize(real)}\0{digests[real]}\n'.encode())
                files.append((p.key, digests[real]))
        return h.hexdigest()[:16], files

    train_fp, train_files = side(train)
    test_fp, test_files = side(test)
    seen = {digest: key for key, digest in train_files}
    shared = [(key, seen[d]) for key, d in test_files if d in seen]
    if shared:
        keys = sorted({k for k, _ in shared})
        raise BenchmarkError(
            f'data: {len(keys)} test pair(s) share images with training pairs (first: test {shared[0][0]} = train '
            f'{shared[0][1]}); make data:train and data:test disjoint'
        )
    return {'train': train_fp, 'test': test_fp, 'train_pairs': len(train), 'test_pairs': len(test)}


def materialise(pairs: list, folder: str) -> str:
    """``folder/{lq,gt}/<key><ext>`` symlinks to the pairs (a ``paired`` layout); replaces what was there."""
    for sub in ('lq', 'gt'):
        path = os.path.join(folder, sub)
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            os.remove(os.path.join(path, name))
    for p in pairs:
        for sub, src in (('lq', p.lq_path), ('gt', p.gt_path)):
            dst = os.path.join(folder, sub, p.key + os.path.splitext(src)[1].lower())
            os.symlink(os.path.abspath(src), dst)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Training options
# ----------------------------------------------------------------------------------------------------------------
def _device(opt: dict) -> str:
    from s2former_plugin.inference import pick_device

    try:
        return pick_device(opt['device'], 'device').type
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None


def build_train_options(opt: dict, entry: dict, train_dir: str, device: str) -> dict:
    """BasicSR training options for one arch: same data, budget, optimiser, schedule and loss for every arch.

    Args:
        opt: Benchmark options (:func:`load_options`).
        entry: One ``archs:`` entry.
        train_dir: The materialised ``paired`` training folder.
        device: ``cpu`` or ``cuda``.

    Returns:
        Options for ``basicsr.train``. ``total_iter`` is ``None`` when it is to be calibrated from ``max_minutes``
        (key ``benchmark``).
    """
    tr = opt['train']
    s2f = is_s2former(entry['network_g'])
    model_type = entry.get('model_type') or ('S2FormerModel' if s2f else 'SRModel')
    train: dict[str, Any] = {
        'ema_decay': tr['ema_decay'],
        'optim_g': copy.deepcopy(tr['optim_g']),
        'scheduler': copy.deepcopy(tr['scheduler']),
        # With max_minutes the count is calibrated in the training process (total_iter, if given, caps it).
        'total_iter': int(tr['total_iter']) if tr['total_iter'] and tr['max_minutes'] is None else None,
        'warmup_iter': -1,
    }
    if model_type == 'S2FormerModel':
        loss = {**opt['loss'], **(entry.get('loss') or {})}
        side = 0.5 if loss['s2former_multiscale'] else 0.0
        train['psnr_opt'] = {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0, 'side_weight': side}
        if loss['s2former_udl']:
            train['udl_opt'] = {'type': 'UncertaintyDrivenLoss', 'loss_weight': 1.0}
    else:
        train['pixel_opt'] = {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0}
    return {
        'name': entry['name'],
        'model_type': model_type,
        'scale': 1,
        'num_gpu': 1 if device == 'cuda' else 0,
        'manual_seed': int(tr['seed']),
        'imports': list(opt['imports']),
        'benchmark': {
            'max_minutes': tr['max_minutes'],
            'total_iter_cap': tr['total_iter'],
            'calibration_iters': int(tr['calibration_iters']),
        },
        'datasets': {
            'train': {
                'name': 'benchmark_train',
                'type': 'DerainFolderDataset',
                'layout': 'paired',
                'dataroot': os.path.abspath(train_dir),
                'gt_size': int(tr['crop']),
                'use_hflip': bool(tr['use_hflip']),
                'use_rot': bool(tr['use_rot']),
                'io_backend': {'type': 'disk'},
                'num_worker_per_gpu': int(tr['num_workers']),
                'batch_size_per_gpu': int(tr['batch_size']),
                'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
            }
        },
        'network_g': copy.deepcopy(entry['network_g']),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': train,
        'logger': {
            'print_freq': int(tr['print_freq']),
            'save_checkpoint_freq': int(tr['save_checkpoint_freq']),
            'use_tb_logger': False,
        },
    }


def _finalise_schedule(train: dict) -> None:
    sched = train.get('scheduler') or {}
    if sched.get('type') in ('CosineAnnealingRestartLR', 'CosineAnnealingRestartCyclicLR') and 'periods' not in sched:
        sched['periods'] = [train['total_iter']]
        sched.setdefault('restart_weights', [1])


#: Untimed calibration steps: cuDNN's benchmark mode tunes its algorithms over the first few steps of each shape.
CALIBRATION_WARMUP = {'cpu': 1, 'cuda': 3}


def _calibrate(topt: dict) -> float:
    """Median seconds of one optimisation step of the real model on random crops, after the warm-up steps
    (:data:`CALIBRATION_WARMUP`), with cuDNN in benchmark mode as ``basicsr.train`` sets it for the training."""
    import torch
    from basicsr.models import build_model

    torch.backends.cudnn.benchmark = True

    model_opt = copy.deepcopy(topt)
    model_opt['train']['total_iter'] = 10**6
    _finalise_schedule(model_opt['train'])
    model_opt.update(is_train=True, dist=False, rank=0, world_size=1)
    model = build_model(model_opt)
    ds = topt['datasets']['train']
    shape = (ds['batch_size_per_gpu'], 3, ds['gt_size'], ds['gt_size'])
    times = []
    warmup = CALIBRATION_WARMUP.get(model.device.type, 1)
    for i in range(max(2, topt['benchmark']['calibration_iters']) + warmup):
        gt = torch.rand(shape)
        start = time.perf_counter()
        model.feed_data({'lq': (gt + 0.1 * torch.rand(shape)).clamp(0, 1), 'gt': gt})
        model.optimize_parameters(i + 1)
        if model.device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    del model
    gc.collect()
    return sorted(times)[len(times) // 2]


def train_child() -> None:
    """Entry of the training subprocess: imports, budget calibration (once), then ``compat.train_main``.

    Command line as ``python -m basicsr.train`` (``-opt OUT/<arch>/options.yml --auto_resume``); runs in
    ``OUT/<arch>``.
    """
    args = sys.argv[1:]
    path = args[args.index('-opt') + 1]
    with open(path, encoding='utf-8') as f:
        topt = yaml.safe_load(f)
    import_modules(topt.get('imports') or [])
    _basicsr()
    bench = topt.get('benchmark') or {}
    if topt['train'].get('total_iter') is None:
        step = _calibrate(topt)
        iters = max(1, int(bench['max_minutes'] * 60 / step))
        if bench.get('total_iter_cap'):
            iters = min(iters, int(bench['total_iter_cap']))
        topt['train']['total_iter'] = iters
        bench['seconds_per_iter'] = round(step, 4)
        print(f'benchmark: {step:.3f} s/iter -> total_iter {iters} for {bench["max_minutes"]} min', flush=True)
        # Building the calibration's model set basicsr's root logger up without a log file, and basicsr sets it up
        # only once: forget it, so that train_main adds the training log (the loss curves are read from it).
        from basicsr.utils import logger as basicsr_logger

        basicsr_logger.initialized_logger.pop('basicsr', None)
        for handler in list(logging.getLogger('basicsr').handlers):
            logging.getLogger('basicsr').removeHandler(handler)
    _finalise_schedule(topt['train'])
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(topt, f, sort_keys=False)
    from s2former_plugin.compat import train_main

    train_main(os.getcwd())


# ----------------------------------------------------------------------------------------------------------------
# Measurements (generic: any nn.Module mapping B x 3 x H x W to an image)
# ----------------------------------------------------------------------------------------------------------------
def _sdpa_macs(inputs: list, outputs: list) -> int:
    from mmengine.analysis.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    v = get_shape(inputs[2])
    batch = math.prod(q[:-2])
    return int(batch * q[-2] * k[-2] * (q[-1] + v[-1]))  # Q K^T and attention x V


def count_macs(net, size: int, device: str = 'cpu') -> dict:
    """Multiply-adds of one ``size`` x ``size`` RGB image through ``net`` (``mmengine.analysis.FlopAnalyzer``).

    Returns:
        ``{'macs': int, 'uncounted_ops': {op: occurrences}}``.
    """
    import torch
    from mmengine.analysis import FlopAnalyzer

    x = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad():
        analyzer = FlopAnalyzer(net.eval(), (x,))
        analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
        macs = int(analyzer.total())
        uncounted = dict(analyzer.unsupported_ops())
    return {'macs': macs, 'uncounted_ops': uncounted}


def _status_kb(key: str) -> int:
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise OSError(f'{key} not in /proc/self/status')


def time_calls(calls: dict, runs: int = 5, warmup: int = 1, device: str = 'cpu') -> dict:
    """Median wall-clock and process CPU time of each zero-argument callable in ``calls``.

    The callables take turns run by run (after ``warmup`` calls each), so a busy machine slows all of them alike;
    the process CPU time (all threads) is, with one thread, the compute time alone, robust to other processes.
    On CUDA the CPU time is the host's launching and waiting, not the work: ``cpu_ms`` is then ``None``.

    Returns:
        ``{name: {'latency_ms': float, 'cpu_ms': float | None}}``.
    """
    import torch

    def sync() -> None:
        if torch.device(device).type == 'cuda':
            torch.cuda.synchronize()

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, runs)):
        for name, fn in calls.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    def median_ms(ts: list[float]) -> float:
        return 1000 * sorted(ts)[len(ts) // 2]

    on_cpu = torch.device(device).type == 'cpu'
    return {
        name: {'latency_ms': median_ms(wall[name]), 'cpu_ms': median_ms(cpu[name]) if on_cpu else None}
        for name in calls
    }


def _sum_of_means(out: Any) -> Any:
    """A scalar loss touching every output: the sum of the means of all tensors in (nested) lists/tuples."""
    if isinstance(out, list | tuple):
        return sum(_sum_of_means(o) for o in out)
    return out.mean()


def measure_speed(
    net, size: int, runs: int = 5, device: str = 'cpu', *, batch: int = 1, warmup: int = 1, grad: bool = False
) -> dict:
    """Latency and peak memory of whole-image inference of ``batch`` ``size`` x ``size`` RGB images.

    Latency: median of ``runs`` calls after ``warmup`` (at least one) warm-up calls, wall-clock (``latency_ms``)
    and process CPU time (``cpu_ms``). Peak memory: CUDA ``max_memory_allocated`` minus the memory allocated
    before; CPU: peak resident set (``VmHWM``, reset via ``/proc/self/clear_refs``) minus the resident set before
    the calls (``None`` where the kernel does not allow the reset). The warm-up is inside the memory window:
    one-time buffers are part of what a call needs.

    ``net`` may also be a dict ``{name: module}``: the modules then run on the same input, taking turns run by
    run (see :func:`time_calls`), the memory of each is measured over its own warm-up, and the result is
    ``{name: result}``. ``grad=True`` times a training step instead (modules in train mode, ``zero_grad``,
    forward, backward of the sum of the means of all outputs).

    Returns:
        ``{'latency_ms': float, 'cpu_ms': float, 'peak_mem_mb': float | None}`` (per name for a dict).
    """
    import torch

    nets = net if isinstance(net, dict) else {'net': net}
    x = torch.rand(batch, 3, size, size, device=device)
    cuda = torch.device(device).type == 'cuda'

    def call(module) -> Any:
        def run() -> None:
            if grad:
                module.zero_grad(set_to_none=True)
                _sum_of_means(module(x)).backward()
            else:
                module(x)

        return run

    calls = {name: call(module.train(grad)) for name, module in nets.items()}
    peaks: dict[str, float | None] = {}
    with torch.set_grad_enabled(grad):
        for name, fn in calls.items():  # one memory window per module, around its warm-up
            peaks[name] = None
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                gc.collect()
                try:
                    with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
                        f.write('5')
                    base = _status_kb('VmRSS')
                except OSError:
                    base = None
            for _ in range(max(1, warmup)):
                fn()
            if cuda:
                torch.cuda.synchronize()
                peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
            elif base is not None:
                peaks[name] = max(0, _status_kb('VmHWM') - base) / 1024
        times = time_calls(calls, runs, warmup=0, device=device)
    results = {name: {**times[name], 'peak_mem_mb': peaks[name]} for name in nets}
    return results if isinstance(net, dict) else results['net']


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def evaluate_child() -> None:
    """Entry of the per-arch measurement subprocess: ``argv[1]`` is ``OUT/<arch>/eval_spec.json``.

    Measures speed first (a fresh process), then multiply-adds, then scores the test images; writes the result.
    """
    with open(sys.argv[1], encoding='utf-8') as f:
        spec = json.load(f)
    import torch

    if spec['threads']:
        torch.set_num_threads(int(spec['threads']))
    import_modules(spec['imports'])
    from s2former_plugin.checkpoint import load_state_dict_any
    from s2former_plugin.data.layouts import find_pairs
    from s2former_plugin.inference import derain_array
    from s2former_plugin.metrics.scoring import finite_mean, read_image, score_images
    from s2former_plugin.tiling import tiled_forward

    device = spec['device']
    net = build_net(spec['network_g'])
    used = None
    if spec['weights']:
        state, used = load_state_dict_any(spec['weights'], spec['param_key'])
        net.load_state_dict(state, strict=True)
    net = net.to(device).eval()
    result: dict[str, Any] = {'params': sum(p.numel() for p in net.parameters()), 'weights_used': used}
    with torch.no_grad():  # lazy one-time initialisation (thread pools, kernels) is not any size's cost
        net(torch.rand(1, 3, min(spec['sizes']), min(spec['sizes']), device=device))
    result['speed'] = {str(s): measure_speed(net, s, spec['runs'], device) for s in sorted(spec['sizes'])}
    result.update({f'{k}@{spec["macs_size"]}': v for k, v in count_macs(net, spec['macs_size'], device).items()})

    def run(x: torch.Tensor):
        with torch.no_grad():
            return tiled_forward(net, x, spec['tile'], spec['tile_overlap'], device=device, out_device='cpu'), None

    # The report's path (metrics.scoring: read_image, score_images, finite_mean), with images converted to and from
    # the network as python -m s2former_plugin.infer does (inference.derain_array: the prediction in the input's
    # bit depth, as infer would save it; the deraining papers score saved PNGs).
    scores: dict[str, list[float]] = {m: [] for m in spec['metrics']}
    start = time.perf_counter()
    pairs = find_pairs('paired', spec['test_dir']).pairs
    for pair in pairs:
        pred, _ = derain_array(read_image(pair.lq_path), run)
        for m, v in score_images(pred, read_image(pair.gt_path), spec['metrics'], spec['protocol']).items():
            scores[m].append(v)
    result['eval_seconds'] = round(time.perf_counter() - start, 2)
    result['test_images'] = len(pairs)
    means = {m: finite_mean(v) for m, v in scores.items()}
    result['metrics'] = {m: _finite(mean) for m, (mean, _) in means.items()}
    result['metrics_infinite'] = {m: n for m, (_, n) in means.items() if n}
    with open(spec['out'], 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)


# ----------------------------------------------------------------------------------------------------------------
# Logs and reports
# ----------------------------------------------------------------------------------------------------------------
_ITER_RE = re.compile(r'iter:\s*([\d,]+)')
_LOSS_RE = re.compile(r'\b(l_\w+): ([-+0-9.eE]+|nan|inf)')


def parse_training_log(exp_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{loss_name: [(iter, value), ...]}`` from BasicSR's ``train_*.log`` files in ``exp_dir`` (resumes merged)."""
    curves: dict[str, dict[int, float]] = {}
    if not os.path.isdir(exp_dir):
        return {}
    for name in sorted(n for n in os.listdir(exp_dir) if n.startswith('train_') and n.endswith('.log')):
        with open(os.path.join(exp_dir, name), encoding='utf-8', errors='replace') as f:
            for line in f:
                m = _ITER_RE.search(line)
                if not m or '[eta:' not in line:
                    continue
                it = int(m.group(1).replace(',', ''))
                for key, value in _LOSS_RE.findall(line):
                    curves.setdefault(key, {})[it] = float(value)
    return {k: sorted(v.items()) for k, v in curves.items()}


def _fmt(v: Any, digits: int = 2) -> str:
    return '-' if v is None or isinstance(v, str) else f'{v:.{digits}f}'


def results_markdown(results: list[dict], opt: dict) -> str:
    """The results table (one row per arch)."""
    sizes = sorted(opt['speed']['sizes'])
    ms, metrics = opt['speed']['macs_size'], opt['eval']['metrics']
    head = ['arch', 'params (M)', f'MACs@{ms} (G)']
    head += [f'latency@{s} (ms)' for s in sizes] + [f'peak mem@{s} (MB)' for s in sizes]
    head += [m.upper() for m in metrics] + ['iters', 'train (min)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in results:
        row = [r['name'], f'{r["params"] / 1e6:.3g}', f'{r[f"macs@{ms}"] / 1e9:.3g}']
        row += [_fmt(r['speed'].get(str(s), {}).get('latency_ms'), 1) for s in sizes]
        row += [_fmt(r['speed'].get(str(s), {}).get('peak_mem_mb'), 0) for s in sizes]
        row += [_fmt(r['metrics'].get(m), 2 if m == 'psnr' else 4) for m in metrics]
        row += [str(r['train'].get('total_iter') or 'checkpoint'), _fmt(r['train'].get('minutes'), 1)]
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines) + '\n'


def write_plots(results: list[dict], opt: dict, out: str) -> None:
    """``psnr_vs_latency.png`` (PSNR against latency at the first speed size) and ``training_curves.png``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    size = str(sorted(opt['speed']['sizes'])[0])
    metric = opt['eval']['metrics'][0] if opt['eval']['metrics'] else None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in results:
        lat, val = r['speed'].get(size, {}).get('latency_ms'), r['metrics'].get(metric)
        if lat is None or not isinstance(val, float):
            continue
        ax.scatter([lat], [val], s=30 + 300 * math.sqrt(r['params'] / 1e7))
        ax.annotate(r['name'], (lat, val), textcoords='offset points', xytext=(6, 4), fontsize=8)
    ax.set_xscale('log')
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f'latency @ {size}x{size} (ms, {opt.get("_device", "cpu")}, log scale)')
    ax.set_ylabel(f'{(metric or "").upper()} (dB, Y)' if metric == 'psnr' else (metric or ''))
    ax.set_title(f'{opt["name"]}: quality vs latency (marker area ~ params)', fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'psnr_vs_latency.png'), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in results:
        curves = r['train'].get('curves') or {}
        key = next((k for k in ('l_pix', 'l_psnr', 'l_total') if k in curves), None)
        if key:
            its, vals = zip(*curves[key])
            ax.plot(its, vals, label=f'{r["name"]} ({key})')
    ax.set_xlabel('iteration')
    ax.set_ylabel('training PSNR loss (= -PSNR dB of RGB crops)')
    ax.set_title(f'{opt["name"]}: training loss', fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'training_curves.png'), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------
def _fingerprint(opt: dict, entry: dict) -> str:
    keys = {k: opt[k] for k in ('imports', 'data', 'train', 'loss', 'eval', 'speed', 'device')}
    blob = json.dumps({'entry': entry, **keys}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _child_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    # A fixed mmap threshold (glibc) returns every large freed block to the system at once, so the resident set
    # follows the live tensors and the CPU peak-memory figure does not depend on what ran before.
    env.setdefault('MALLOC_MMAP_THRESHOLD_', str(128 * 1024))
    return env


def _run_child(cmd: list[str], cwd: str, log_path: str, threads: int | None, what: str) -> None:
    with open(log_path, 'a', encoding='utf-8') as log:
        proc = subprocess.run(cmd, cwd=cwd, env=_child_env(threads), stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, encoding='utf-8', errors='replace') as f:
            tail = [ln.strip() for ln in f if ln.strip()]
        last = tail[-1] if tail else 'no output'
        raise BenchmarkError(f'{what} failed (exit {proc.returncode}): {last} [log: {log_path}]')


def _log(msg: str) -> None:
    print(f'[benchmark] {msg}', flush=True)


def run_arch(opt: dict, entry: dict, out: str, train_dir: str, test_dir: str, device: str) -> dict:
    """Train (unless finished or given a checkpoint), then measure one arch; returns and stores its result."""
    name = entry['name']
    adir = os.path.abspath(os.path.join(out, name))
    result_path = os.path.join(adir, RESULT_FILE)
    fp = _fingerprint(opt, entry)
    fp_path = os.path.join(adir, 'fingerprint.txt')
    if os.path.isfile(fp_path):
        with open(fp_path, encoding='utf-8') as f:
            old = f.read().strip()
        if old != fp:
            raise BenchmarkError(
                f'archs:{name}: options changed since {adir} was made; delete that folder or use another --out'
            )
    data_fp = opt.get('_data_fingerprint')
    data_path = os.path.join(adir, 'data_fingerprint.json')
    if data_fp is not None and os.path.isdir(adir) and os.listdir(adir):
        old_data = None
        if os.path.isfile(data_path):
            with open(data_path, encoding='utf-8') as f:
                old_data = json.load(f)
        if old_data != data_fp:
            what = 'has no record of its data' if old_data is None else 'was made on other train/test images'
            changed = [k for k in ('train', 'test') if old_data and old_data.get(k) != data_fp[k]]
            raise BenchmarkError(
                f'archs:{name}: {adir} {what}{" (" + " and ".join(changed) + " set changed)" if changed else ""}; '
                'its results would mix test sets: delete that folder or use another --out'
            )
    if os.path.isfile(result_path):
        _log(f'skip {name}: done ({result_path})')
        with open(result_path, encoding='utf-8') as f:
            return json.load(f)
    os.makedirs(adir, exist_ok=True)
    with open(fp_path, 'w', encoding='utf-8') as f:
        f.write(fp + '\n')
    if data_fp is not None:
        with open(data_path, 'w', encoding='utf-8') as f:
            json.dump(data_fp, f)

    exp_dir = os.path.join(adir, 'experiments', name)
    latest = os.path.join(exp_dir, 'models', 'net_g_latest.pth')
    train_info: dict[str, Any] = {}
    opt_path = os.path.join(adir, 'options.yml')
    if entry.get('checkpoint'):
        weights, param_key = os.path.abspath(entry['checkpoint']), entry.get('param_key', 'params')
    else:
        if not os.path.isfile(opt_path):
            topt = build_train_options(opt, entry, train_dir, device)
            with open(opt_path, 'w', encoding='utf-8') as f:
                yaml.safe_dump(topt, f, sort_keys=False)
        if os.path.isfile(latest):
            _log(f'{name}: trained already ({latest}); evaluating')
        else:
            _log(f'{name}: training ({opt_path})')
            start = time.time()
            cmd = [sys.executable, '-c', 'from s2former_plugin.benchmark import train_child; train_child()']
            cmd += ['-opt', opt_path, '--auto_resume']
            _run_child(cmd, adir, os.path.join(adir, 'train_stdout.log'), opt['train']['threads'], f'{name}: training')
            with open(os.path.join(adir, 'train_seconds.txt'), 'a', encoding='utf-8') as f:
                f.write(f'{time.time() - start:.1f}\n')
        with open(opt_path, encoding='utf-8') as f:
            topt = yaml.safe_load(f)
        seconds_path = os.path.join(adir, 'train_seconds.txt')
        seconds = 0.0
        if os.path.isfile(seconds_path):
            with open(seconds_path, encoding='utf-8') as f:
                seconds = sum(float(x) for x in f.read().split())
        train_info = {
            'model_type': topt['model_type'],
            'total_iter': topt['train']['total_iter'],
            'seconds_per_iter_calibrated': topt['benchmark'].get('seconds_per_iter'),
            'minutes': round(seconds / 60, 2),
            'losses': {k: v for k, v in topt['train'].items() if k.endswith('_opt')},
            'curves': parse_training_log(exp_dir),
        }
        weights, param_key = latest, 'params_ema' if opt['train']['ema_decay'] else 'params'

    _log(f'{name}: measuring and evaluating')
    spec = {
        'network_g': entry['network_g'],
        'imports': opt['imports'],
        'weights': weights,
        'param_key': param_key,
        'device': device,
        'threads': opt['speed']['threads'],
        'sizes': opt['speed']['sizes'],
        'macs_size': opt['speed']['macs_size'],
        'runs': opt['speed']['runs'],
        'tile': opt['eval']['tile'],
        'tile_overlap': opt['eval']['tile_overlap'],
        'protocol': opt['eval']['protocol'],
        'metrics': opt['eval']['metrics'],
        'test_dir': os.path.abspath(test_dir),
        'out': os.path.abspath(os.path.join(adir, 'eval.json')),
    }
    spec_path = os.path.join(adir, 'eval_spec.json')
    with open(spec_path, 'w', encoding='utf-8') as f:
        json.dump(spec, f, indent=2)
    cmd = [sys.executable, '-c', 'from s2former_plugin.benchmark import evaluate_child; evaluate_child()', spec_path]
    _run_child(cmd, adir, os.path.join(adir, 'eval_stdout.log'), opt['speed']['threads'], f'{name}: evaluation')
    with open(spec['out'], encoding='utf-8') as f:
        result = {'name': name, 'network_g': entry['network_g'], **json.load(f), 'train': train_info}
    result['data'] = data_fp
    tmp = result_path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, result_path)
    return result


def run_benchmark(opt: dict, out: str) -> list[dict]:
    """Run the whole benchmark (see module docstring) and write the reports into ``out``.

    Returns:
        One result dict per arch, in YAML order.
    """
    import_modules(opt['imports'])
    for i, entry in enumerate(opt['archs']):
        build_net(entry['network_g'], f'archs[{i}]:network_g')  # fail on a bad arch before any training
    device = _device(opt)
    opt['_device'] = device
    for side in ('train', 'test'):  # the benchmark writes symlinks, options and results: never into its data
        root = (opt['data'].get(side) or {}).get('dataroot') or opt['data'].get('dataroot')
        real_out, real_root = os.path.realpath(out), os.path.realpath(root) if root else None
        if real_root and (real_out == real_root or real_out.startswith(real_root + os.sep)):
            raise BenchmarkError(f'--out: {out} is inside the data folder {root}; choose another output folder')
    os.makedirs(out, exist_ok=True)
    train_pairs, test_pairs = select_pairs(opt['data'], 'train'), select_pairs(opt['data'], 'test')
    opt['_data_fingerprint'] = data_fingerprint(train_pairs, test_pairs)
    train_dir = materialise(train_pairs, os.path.join(out, '_data', 'train'))
    test_dir = materialise(test_pairs, os.path.join(out, '_data', 'test'))
    results = [run_arch(opt, entry, out, train_dir, test_dir, device) for entry in opt['archs']]
    write_reports(results, opt, out)
    return results


def write_reports(results: list[dict], opt: dict, out: str) -> None:
    """``results.json``, ``results.md`` and the two plots; refuses results measured on different test images."""
    tests = {json.dumps((r.get('data') or {}).get('test')) for r in results}
    if len(tests) > 1:
        raise BenchmarkError(
            f'results: the archs were evaluated on {len(tests)} different test sets; one table cannot mix them'
        )
    summary = {
        'name': opt['name'],
        'device': opt.get('_device'),
        'protocol': {k: opt[k] for k in ('data', 'train', 'loss', 'eval', 'speed')},
        'results': results,
    }
    with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, default=str)
    with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(f'# {opt["name"]}\n\n' + results_markdown(results, opt))
    write_plots(results, opt, out)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog='python -m s2former_plugin.benchmark', description=__doc__.split('\n')[0])
    p.add_argument('-opt', required=True, help='benchmark YAML (see options/benchmark.yml)')
    p.add_argument('--out', help='output folder (default: benchmark_results/<name> in the working directory)')
    p.add_argument('--data-root', help='overrides data:dataroot')
    p.add_argument('--total-iter', type=int, help='overrides train:total_iter')
    p.add_argument('--max-minutes', type=float, help='overrides train:max_minutes (per arch)')
    p.add_argument('--only', help='comma-separated arch names to run (the report covers these only)')
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry; bad options and failed steps end with one ``error:`` line and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        overrides = {
            'data_root': args.data_root,
            'total_iter': args.total_iter,
            'max_minutes': args.max_minutes,
            'only': [s for s in (args.only or '').split(',') if s],
        }
        opt = load_options(args.opt, overrides)
        out = args.out or os.path.join('benchmark_results', opt['name'])
        results = run_benchmark(opt, out)
    except BenchmarkError as err:
        print(f'benchmark: error: {err}', file=sys.stderr)
        return 2
    _log(f'{len(results)} archs; results in {os.path.join(out, "results.md")}')
    print(results_markdown(results, opt))
    return 0


if __name__ == '__main__':
    sys.exit(main())
