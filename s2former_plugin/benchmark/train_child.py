"""The per-run training subprocess: ``python -m s2former_plugin.benchmark.train_child -opt FILE``, and the
budget's calibration (``--calibrate SPEC``).

Builds BasicSR training options from the benchmark's (one arch, one seed), then runs BasicSR's own training loop on
the benchmark's seeded crops, recording a digest of every batch.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

import yaml

from .nets import import_modules, is_s2former, register_plugin


def build_train_options(opt: dict, entry: dict, train_dir: str, device: str, seed: int, total_iter: int) -> dict:
    """BasicSR training options for one arch and seed: same batches, budget, optimiser, schedule and loss for all.

    Args:
        opt: Benchmark options (:func:`load_options`).
        entry: One ``archs:`` entry.
        train_dir: The materialised ``paired`` training folder.
        device: ``cpu`` or ``cuda``.
        seed: The run's seed: basicsr's ``manual_seed`` (the network's initial weights) and the seed of the
            training crops (:class:`~s2former_plugin.benchmark.batches.BenchmarkCrops`).
        total_iter: The optimisation steps, the same for every arch (:func:`budget_iterations`).

    Returns:
        Options for ``basicsr.train``.
    """
    tr = opt['train']
    s2f = is_s2former(entry['network_g'])
    model_type = entry.get('model_type') or ('S2FormerModel' if s2f else 'SRModel')
    train: dict[str, Any] = {
        'ema_decay': tr['ema_decay'],
        'optim_g': copy.deepcopy(tr['optim_g']),
        'scheduler': copy.deepcopy(tr['scheduler']),
        'total_iter': int(total_iter),
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
    _finalise_schedule(train)
    return {
        'name': entry['name'],
        'model_type': model_type,
        'scale': 1,
        'num_gpu': 1 if device == 'cuda' else 0,
        'manual_seed': int(seed),
        'imports': list(opt['imports']),
        'datasets': {
            'train': {
                'name': 'benchmark_train',
                'type': 'BenchmarkCrops',
                'dataroot': os.path.abspath(train_dir),
                'seed': int(seed),
                # one epoch is the whole training: item i is a function of (seed, i) alone (benchmark.batches)
                'num_samples': int(total_iter) * int(tr['batch_size']),
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
#: The file of one run's batch digests (``iteration digest`` per line), beside its ``options.yml``.
BATCH_RECORD = 'batches.txt'


def calibrate(topts: dict[str, dict], steps: int) -> dict[str, float]:
    """Median seconds of one optimisation step of each arch's real model, the archs taking turns step by step.

    Every model is built first (``basicsr.models.build_model``); then, after the untimed warm-up steps
    (:data:`CALIBRATION_WARMUP`), each round runs one step (``feed_data`` + ``optimize_parameters`` on one random
    batch of the configured crop size) of every arch in turn (:func:`~s2former_plugin.benchmark.measure.time_calls`),
    so a change of the machine's load during the calibration slows all archs alike. cuDNN's benchmark mode is on,
    as ``basicsr.train`` trains.

    Args:
        topts: ``{arch: basicsr training options}`` (:func:`build_train_options`).
        steps: Timed steps per arch (at least 2).

    Returns:
        ``{arch: seconds per step}``.
    """
    import torch
    from basicsr.models import build_model

    from .measure import time_calls

    torch.backends.cudnn.benchmark = True
    calls, device = {}, 'cpu'
    gen = torch.Generator().manual_seed(0)
    for name, topt in topts.items():
        model_opt = copy.deepcopy(topt)
        model_opt['train']['total_iter'] = 10**6
        model_opt['train']['scheduler'].pop('periods', None)
        model_opt['train']['scheduler'].pop('restart_weights', None)
        _finalise_schedule(model_opt['train'])
        model_opt.update(is_train=True, dist=False, rank=0, world_size=1)
        model = build_model(model_opt)
        device = model.device.type
        ds = topt['datasets']['train']
        shape = (ds['batch_size_per_gpu'], 3, ds['gt_size'], ds['gt_size'])
        gt = torch.rand(shape, generator=gen)
        batch = {'lq': (gt + 0.1 * torch.rand(shape, generator=gen)).clamp(0, 1), 'gt': gt}
        counter = [0]

        def step(model=model, batch=batch, counter=counter) -> None:
            counter[0] += 1
            model.feed_data(batch)
            model.optimize_parameters(counter[0])

        calls[name] = step
    times = time_calls(calls, runs=max(2, steps), warmup=CALIBRATION_WARMUP.get(device, 1), device=device)
    return {name: t['latency_ms'] / 1000 for name, t in times.items()}


def _install_batch_hooks(record_path: str, batch_size: int) -> None:
    """Record every trained batch's digest, and on resuming skip the items the run has already trained on.

    Wraps ``basicsr.train``'s dataloader builder (to reach the sampler) and model builder (to see ``feed_data``,
    ``optimize_parameters`` and ``resume_training``): basicsr's loop starts a resumed training at the beginning of
    its epoch, and the benchmark's single epoch must continue where it stopped to give the same batches.
    """
    import itertools

    import basicsr.train

    from .batches import batch_digest

    build_loaders, build_model = basicsr.train.create_train_val_dataloader, basicsr.train.build_model
    state: dict[str, Any] = {}

    def loaders(opt, logger):
        result = build_loaders(opt, logger)
        sampler = result[1]
        base = type(sampler)

        class ResumedSampler(base):
            skip = 0

            def __iter__(self):
                return itertools.islice(super().__iter__(), self.skip if self.epoch == 0 else 0, None)

        sampler.__class__ = ResumedSampler
        state['sampler'] = sampler
        return result

    def model_builder(opt):
        model = build_model(opt)
        feed, optimize, resume = model.feed_data, model.optimize_parameters, model.resume_training
        record = open(record_path, 'a', encoding='ascii')  # noqa: SIM115 - written until the process ends

        def feed_data(data: dict) -> None:
            state['digest'] = batch_digest(data)
            feed(data)

        def optimize_parameters(current_iter: int) -> None:
            optimize(current_iter)
            record.write(f'{current_iter} {state.pop("digest", "-")}\n')
            record.flush()

        def resume_training(resume_state: dict) -> None:
            resume(resume_state)
            if resume_state.get('epoch', 0) == 0:
                state['sampler'].skip = int(resume_state['iter']) * batch_size

        model.feed_data, model.optimize_parameters, model.resume_training = (
            feed_data,
            optimize_parameters,
            resume_training,
        )
        return model

    basicsr.train.create_train_val_dataloader = loaders
    basicsr.train.build_model = model_builder


def train_child() -> None:
    """Entry of the training subprocess.

    ``-opt OUT/<arch>/seed<k>/options.yml --auto_resume`` (as ``python -m basicsr.train``, run in that folder):
    trains with :class:`~s2former_plugin.benchmark.batches.BenchmarkCrops`, recording the batches
    (:data:`BATCH_RECORD`). ``--calibrate SPEC.json``: times the archs of ``SPEC`` (``{'topts': {arch: options},
    'steps': n, 'out': path}``) with :func:`calibrate` and writes ``{arch: seconds per step}`` to ``out``.
    """
    args = sys.argv[1:]
    if args and args[0] == '--calibrate':
        with open(args[1], encoding='utf-8') as f:
            spec = json.load(f)
        import_modules(spec.get('imports') or [])
        register_plugin()
        seconds = calibrate(spec['topts'], int(spec['steps']))
        with open(spec['out'], 'w', encoding='utf-8') as f:
            json.dump(seconds, f, indent=2)
        return
    path = args[args.index('-opt') + 1]
    with open(path, encoding='utf-8') as f:
        topt = yaml.safe_load(f)
    import_modules(topt.get('imports') or [])
    register_plugin()
    from . import batches  # noqa: F401 - registers BenchmarkCrops

    _install_batch_hooks(
        os.path.join(os.path.dirname(os.path.abspath(path)), BATCH_RECORD),
        int(topt['datasets']['train']['batch_size_per_gpu']),
    )
    from s2former_plugin.compat import train_main

    train_main(os.getcwd())


if __name__ == '__main__':
    train_child()
