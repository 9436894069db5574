"""The per-arch training subprocess: ``python -m s2former_plugin.benchmark.train_child -opt FILE``.

Builds BasicSR training options from the benchmark's, turns a wall-clock budget into iterations, then runs
BasicSR's own training loop.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import sys
import time
from typing import Any

import yaml

from .nets import import_modules, is_s2former, register_plugin


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
    register_plugin()
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


if __name__ == '__main__':
    train_child()
