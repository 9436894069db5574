"""Benchmark S2Former against other BasicSR archs under one protocol: same data, batches, steps, loss and metrics.

``python -m s2former_plugin.benchmark -opt options/benchmark.yml [--out DIR] [--data-root DIR] [--total-iter N]
[--max-minutes M] [--seeds N] [--only NAME,...]`` (the command line: :mod:`.cli`)

Every arch of the YAML ``archs:`` list is trained ``train:seeds`` times (seeds ``seed``, ``seed + 1``, ...) through
the real BasicSR pipeline (``python -m basicsr.train`` semantics via :func:`s2former_plugin.compat.train_main`, one
subprocess per run, ``--auto_resume``), unless it gives ``checkpoint:`` (then it is evaluated once). All archs train
for the same number of optimisation steps on the same batches: under one seed, batch ``t`` is the same crops of the
same pairs for every arch (:mod:`.batches`; each run records its batches' digests and the driver compares them).
Every run is evaluated on whole test images (tiled with :mod:`s2former_plugin.tiling`; read, converted and scored
as ``infer`` + ``report`` would: :func:`s2former_plugin.metrics.scoring.read_image`,
:func:`s2former_plugin.inference.derain_array`, :func:`s2former_plugin.metrics.scoring.score_images`), image by
image. Then all archs are measured together in one fresh process (parameters, multiply-adds, and latency and peak
memory interleaved: :func:`~s2former_plugin.benchmark.measure.measure_interleaved`). The table gives, per arch, the
mean ± standard deviation over seeds of the test means, and against the reference arch (``reference:``, default
the first S2Former entry, else the first entry) a paired per-image comparison: per image the seeds are averaged,
the difference to the reference taken, and the mean difference gets a seeded bootstrap 95 % interval over images
(:mod:`.statistics`); ``tie`` where the interval holds 0. Outputs, under ``--out`` (default
``benchmark_results/<name>`` in the working directory)::

    OUT/results.json  OUT/results.md  OUT/psnr_vs_latency.png  OUT/training_curves.png
    OUT/budget.json                     the steps every arch trains for (and the calibration, with max_minutes)
    OUT/speed.json                      parameters, MACs, latency and memory of all archs (measured together)
    OUT/eval_stdout.log                 the log of the measurement and evaluation process
    OUT/_data/{train,test}/{lq,gt}/     symlinks to the selected pairs (``paired`` layout)
    OUT/<arch>/seed<k>/options.yml      the BasicSR training options of the arch under seed k
    OUT/<arch>/seed<k>/batches.txt      ``iteration digest`` of every batch the run trained on
    OUT/<arch>/seed<k>/experiments/<arch>/   BasicSR's training outputs (logs, models, training states)
    OUT/<arch>/seed<k>/result.json      the run's result (means and per-image scores): also its "done" marker
    OUT/<arch>/checkpoint/...           the same for an entry with checkpoint: (evaluated once, not trained)

YAML schema (see ``options/benchmark.yml``)::

    name: my_benchmark
    imports: [my_package.archs]          # optional: imported before any arch is built (also in subprocesses)
    device: auto                         # auto | cpu | cuda
    reference: ~                         # the arch the others are compared with (default: first S2Former entry)
    data:                                # keys here are defaults for train: and test:
      layout: rain200                    # rainds | rain200 | agan | paired (s2former_plugin.data.layouts)
      dataroot: /path/to/Rain100H
      train: {pairs: 1-60}               # split:, subset:, lq_dir: ... as find_pairs; pairs: 1-based positions in
      test: {pairs: 61-80}               # the naturally sorted pair list ('1-60', [1, 5, '10-12'], or all)
    train:
      seed: 0                            # the first seed
      seeds: 3                           # runs per arch (seeds seed .. seed + seeds - 1)
      batch_size: 4
      crop: 64
      total_iter: 300                    # and/or max_minutes (see "Budget" below)
      max_minutes: ~
      optim_g: {type: Adam, lr: 2.0e-4, betas: [0.9, 0.999]}
      scheduler: {type: CosineAnnealingRestartLR, eta_min: 1.0e-6}   # periods default to [total_iter]
      ema_decay: 0
    loss:
      s2former_multiscale: false         # S2Former only: + 0.5 x PSNR loss of its four side outputs
      s2former_udl: false                # S2Former only: + the uncertainty-driven loss
    eval: {tile: 256, tile_overlap: 32, protocol: standard, metrics: [psnr, ssim]}
    speed: {sizes: [256, 512], macs_size: 256, runs: 5, threads: ~}
    bootstrap: {resamples: 10000, confidence: 0.95, seed: 0}
    archs:
      - name: s2former_small
        network_g: {type: S2Former, preset: small}
      - name: restormer                  # the rival derainers (pip install "s2former_plugin[rivals]")
        network_g: {type: Restormer}
      - name: ridnet
        network_g: {type: RIDNet, in_channels: 3, mid_channels: 64, out_channels: 3}
        checkpoint: ~                    # weights to evaluate instead of training (BasicSR or plain state dict)
      - name: s2former_paper_losses      # per-arch loss: overrides loss: (S2Former's auxiliary terms only)
        network_g: {type: S2Former, preset: small}
        loss: {s2former_multiscale: true, s2former_udl: true}

Unknown keys at any level are refused with the closest known key (``train:crops: unknown key; did you mean
'crop'?``).

Loss: every arch is trained on the same objective, the PSNR loss (``-PSNR`` in dB of the RGB crop) of its final
output: :class:`MultiScalePSNRLoss` as ``pixel_opt`` for basicsr's ``SRModel``, and as ``psnr_opt`` with
``side_weight: 0`` for S2Former's ``S2FormerModel``. S2Former's auxiliary terms (multi-scale side outputs, UDL) are
switches (``loss:``, or per arch) so that the paper's recipe can be measured as a separate entry.

Budget: one step count for all archs and seeds. ``total_iter`` fixes it. ``max_minutes`` is the training time of
one run of the *slowest* arch: before any training, one subprocess builds every trained arch's real model and times
``calibration_iters`` optimisation steps of each, the archs taking turns step by step (after untimed warm-up steps,
3 on CUDA, with cuDNN's benchmark mode on as ``basicsr.train`` trains); then ``total_iter = max_minutes * 60 /
slowest median step`` (the smaller of the two when both are given). The count is written once into
``OUT/budget.json``; later runs in the same ``--out`` reuse it, so interrupted runs resume towards the same target.

Resuming (the stored pieces and their fingerprints: :mod:`.resume`): a run with ``result.json`` is skipped; one
with a trained ``net_g_latest.pth`` is only evaluated; an interrupted training resumes from its last training state
(``--auto_resume``) and continues with the batches it would have had. Changing an arch's options, the step count, or
the selected train/test files (names, sizes, contents), with an existing run folder is refused (delete the folder or
use another ``--out``); so are test pairs that share images with training pairs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import yaml

from .children import log, run_child
from .data import data_fingerprint, materialise, select_pairs
from .nets import build_net, import_modules, is_s2former, pick_device_name
from .options import BenchmarkError
from .report import parse_training_log, write_results
from .resume import (
    BUDGET_FILE,
    RESULT_FILE,
    SPEED_FILE,
    budget_key,
    check_run_folder,
    read_json,
    run_fingerprint,
    speed_key,
    write_json,
)
from .statistics import summarise
from .train_child import BATCH_RECORD, build_train_options

__all__ = ['budget_iterations', 'check_batches', 'evaluate_all', 'pick_reference', 'run_benchmark', 'train_run']


# ----------------------------------------------------------------------------------------------------------------
# Budget: one step count for every arch
# ----------------------------------------------------------------------------------------------------------------
def budget_iterations(opt: dict, out: str, train_dir: str, device: str) -> dict:
    """The optimisation steps every arch and seed trains for (see "Budget" in the module docstring).

    Returns:
        The contents of ``OUT/budget.json``: ``total_iter``, ``how`` (``total_iter``; ``calibrated``; ``capped`` when
        ``total_iter`` is below the calibrated count), and with a calibration ``seconds_per_iter`` (per arch),
        ``calibrated_on`` (the slowest arch), ``max_minutes`` and ``steps_from_minutes``.

    Raises:
        BenchmarkError: ``OUT/budget.json`` was made with other budget options.
    """
    path = os.path.join(out, BUDGET_FILE)
    key = budget_key(opt)
    if os.path.isfile(path):
        budget = read_json(path)
        if budget.get('key') != key:
            raise BenchmarkError(
                f'train: the budget options changed since {path} was made (it fixed total_iter '
                f'{budget.get("total_iter")}); delete the output folder or use another --out'
            )
        return budget
    tr = opt['train']
    trained = [e for e in opt['archs'] if not e.get('checkpoint')]
    if tr['max_minutes'] is None or not trained:
        budget = {'total_iter': int(tr['total_iter'] or 0), 'how': 'total_iter'}
    else:
        log(f'calibrating the budget: {tr["calibration_iters"]} steps of each of {len(trained)} archs, interleaved')
        topts = {e['name']: build_train_options(opt, e, train_dir, device, tr['seed'], 1) for e in trained}
        cdir = os.path.join(out, '_calibration')
        os.makedirs(cdir, exist_ok=True)
        spec = {
            'topts': topts,
            'steps': tr['calibration_iters'],
            'imports': opt['imports'],
            'out': os.path.join(cdir, 'seconds.json'),
        }
        spec_path = os.path.join(cdir, 'spec.json')
        write_json(spec_path, spec)
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.train_child', '--calibrate', spec_path]
        run_child(cmd, cdir, os.path.join(cdir, 'stdout.log'), tr['threads'], 'budget calibration')
        seconds = read_json(spec['out'])
        slowest = max(seconds, key=seconds.get)
        from_minutes = max(1, int(tr['max_minutes'] * 60 / seconds[slowest]))
        iters = min(from_minutes, int(tr['total_iter'])) if tr['total_iter'] else from_minutes
        budget = {
            'total_iter': iters,
            'how': 'calibrated' if iters == from_minutes else 'capped',
            'steps_from_minutes': from_minutes,
            'max_minutes': tr['max_minutes'],
            'calibrated_on': slowest,
            'seconds_per_iter': {k: round(v, 4) for k, v in seconds.items()},
        }
        log(f'budget: {seconds[slowest]:.3f} s/step for the slowest arch ({slowest}) -> total_iter {iters}')
    budget['key'] = key
    write_json(path, budget)
    return budget


# ----------------------------------------------------------------------------------------------------------------
# One run: an arch under one seed (or its checkpoint)
# ----------------------------------------------------------------------------------------------------------------
def train_run(opt: dict, entry: dict, out: str, train_dir: str, device: str, seed: int | None, total_iter: int) -> dict:
    """Train one arch under ``seed`` unless finished (``seed`` ``None``: a checkpoint entry, not trained).

    Returns:
        The run: ``name``, ``run`` (``seed<k>`` or ``checkpoint``), ``dir``, ``weights``, ``param_key``, ``train``
        (steps, minutes, losses, curves), ``data`` (the data fingerprint); with the stored evaluation when the run
        is done (``OUT/<arch>/<run>/result.json``).
    """
    name = entry['name']
    run_name = 'checkpoint' if seed is None else f'seed{seed}'
    rdir = os.path.abspath(os.path.join(out, name, run_name))
    result_path = os.path.join(rdir, RESULT_FILE)
    data_fp = opt.get('_data_fingerprint')
    fp = run_fingerprint(opt, entry, seed, total_iter if seed is not None else 0)
    check_run_folder(rdir, fp, data_fp, f'archs:{name}:{run_name}')
    if os.path.isfile(result_path):
        log(f'skip {name} {run_name}: done ({result_path})')
        return read_json(result_path)
    run: dict[str, Any] = {'name': name, 'run': run_name, 'dir': rdir, 'network_g': entry['network_g'], 'train': {}}
    if seed is None:
        run.update(weights=os.path.abspath(entry['checkpoint']), param_key=entry.get('param_key', 'params'))
        run['data'] = data_fp
        return run
    exp_dir = os.path.join(rdir, 'experiments', name)
    latest = os.path.join(exp_dir, 'models', 'net_g_latest.pth')
    opt_path = os.path.join(rdir, 'options.yml')
    if not os.path.isfile(opt_path):
        topt = build_train_options(opt, entry, train_dir, device, seed, total_iter)
        with open(opt_path, 'w', encoding='utf-8') as f:
            yaml.safe_dump(topt, f, sort_keys=False)
    if os.path.isfile(latest):
        log(f'{name} {run_name}: trained already ({latest})')
    else:
        log(f'{name} {run_name}: training {total_iter} steps ({opt_path})')
        start = time.time()
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.train_child', '-opt', opt_path, '--auto_resume']
        log_path = os.path.join(rdir, 'train_stdout.log')
        run_child(cmd, rdir, log_path, opt['train']['threads'], f'{name} {run_name}: training')
        with open(os.path.join(rdir, 'train_seconds.txt'), 'a', encoding='utf-8') as f:
            f.write(f'{time.time() - start:.1f}\n')
    with open(opt_path, encoding='utf-8') as f:
        topt = yaml.safe_load(f)
    seconds_path = os.path.join(rdir, 'train_seconds.txt')
    seconds = 0.0
    if os.path.isfile(seconds_path):
        with open(seconds_path, encoding='utf-8') as f:
            seconds = sum(float(x) for x in f.read().split())
    run['train'] = {
        'model_type': topt['model_type'],
        'seed': seed,
        'total_iter': topt['train']['total_iter'],
        'minutes': round(seconds / 60, 2),
        'losses': {k: v for k, v in topt['train'].items() if k.endswith('_opt')},
        'curves': parse_training_log(exp_dir),
    }
    run.update(weights=latest, param_key='params_ema' if opt['train']['ema_decay'] else 'params', data=data_fp)
    return run


def _speed_archs(opt: dict, runs: dict[str, list[dict]]) -> list[dict]:
    """The nets to measure: every arch with its first run's weights."""
    return [
        {'name': e['name'], 'network_g': e['network_g'], 'weights': runs[e['name']][0]['weights'],
         'param_key': runs[e['name']][0]['param_key']}
        for e in opt['archs']
    ]  # fmt: skip


def evaluate_all(opt: dict, runs: dict[str, list[dict]], out: str, test_dir: str, device: str) -> dict:
    """Measure all archs together (unless ``OUT/speed.json`` holds the same measurement) and score every run without
    a result, all in one fresh subprocess (:mod:`.eval_child`); writes each run's ``result.json``.

    Returns:
        The speed measurement ``{arch: {params, speed, macs@S, ...}}``; ``runs`` are updated in place.
    """
    archs = _speed_archs(opt, runs)
    key = speed_key(opt, archs, device)
    speed_path = os.path.join(out, SPEED_FILE)
    cached = read_json(speed_path) if os.path.isfile(speed_path) else {}
    need_speed = cached.get('key') != key
    pending = [r for rs in runs.values() for r in rs if 'per_image' not in r]
    if need_speed or pending:
        log(
            f'one process: {"measuring " + str(len(archs)) + " archs together, " if need_speed else ""}'
            f'evaluating {len(pending)} run(s)'
        )
        spec = {
            'imports': opt['imports'],
            'device': device,
            'threads': opt['speed']['threads'],
            'tile': opt['eval']['tile'],
            'tile_overlap': opt['eval']['tile_overlap'],
            'protocol': opt['eval']['protocol'],
            'metrics': opt['eval']['metrics'],
            'test_dir': os.path.abspath(test_dir),
            'speed': None,
            'runs': [
                {
                    'network_g': r['network_g'],
                    'weights': r['weights'],
                    'param_key': r['param_key'],
                    'out': os.path.join(r['dir'], 'eval.json'),
                }
                for r in pending
            ],  # fmt: skip
        }
        if need_speed:
            spec['speed'] = {
                'archs': archs,
                'sizes': opt['speed']['sizes'],
                'runs': opt['speed']['runs'],
                'macs_size': opt['speed']['macs_size'],
                'out': os.path.join(out, '_speed.json'),
            }
        spec_path = os.path.join(out, 'eval_spec.json')
        write_json(spec_path, spec)
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.eval_child', spec_path]
        run_child(cmd, out, os.path.join(out, 'eval_stdout.log'), opt['speed']['threads'], 'evaluation')
        if need_speed:
            cached = {'key': key, 'archs': read_json(spec['speed']['out'])}
            write_json(speed_path, cached)
        for r, rs in zip(pending, spec['runs'], strict=True):
            r.update(read_json(rs['out']))
            write_json(os.path.join(r['dir'], RESULT_FILE), r)
    else:
        log(f'skip speed: measured ({speed_path})')
    return cached['archs']


def check_batches(opt: dict, out: str, seeds: list[int], total_iter: int) -> dict:
    """Compare the batch records of every trained arch, seed by seed (:func:`.batches.compare_records`).

    Returns:
        ``{seed: comparison}``; a comparison also fails when a record lacks some of the ``total_iter`` steps.
    """
    from .batches import compare_records, read_record

    out_checks = {}
    for seed in seeds:
        records = {}
        for entry in opt['archs']:
            if entry.get('checkpoint'):
                continue
            records[entry['name']] = read_record(os.path.join(out, entry['name'], f'seed{seed}', BATCH_RECORD))
        check = compare_records(records)
        incomplete = sorted(n for n, r in records.items() if set(r) != set(range(1, total_iter + 1)))
        if incomplete:
            check = {**check, 'same': False, 'incomplete': incomplete}
        out_checks[str(seed)] = check
    return out_checks


def pick_reference(opt: dict) -> str:
    """``reference:``, else the first S2Former entry, else the first entry."""
    if opt.get('reference'):
        return opt['reference']
    return next((e['name'] for e in opt['archs'] if is_s2former(e['network_g'])), opt['archs'][0]['name'])


def run_benchmark(opt: dict, out: str) -> list[dict]:
    """Run the whole benchmark (see module docstring) and write the reports into ``out``.

    Returns:
        One summary per arch, in YAML order (:func:`summarise`).
    """
    import_modules(opt['imports'])
    for i, entry in enumerate(opt['archs']):
        build_net(entry['network_g'], f'archs[{i}]:network_g')  # fail on a bad arch before any training
    device = pick_device_name(opt)
    opt['pick_device_name'] = device
    for side in ('train', 'test'):  # the benchmark writes symlinks, options and results: never into its data
        root = (opt['data'].get(side) or {}).get('dataroot') or opt['data'].get('dataroot')
        real_out, real_root = os.path.realpath(out), os.path.realpath(root) if root else None
        if real_root and (real_out == real_root or real_out.startswith(real_root + os.sep)):
            raise BenchmarkError(f'--out: {out} is inside the data folder {root}; choose another output folder')
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    reference = pick_reference(opt)
    train_pairs, test_pairs = select_pairs(opt['data'], 'train'), select_pairs(opt['data'], 'test')
    opt['_data_fingerprint'] = data_fingerprint(train_pairs, test_pairs)
    train_dir = materialise(train_pairs, os.path.join(out, '_data', 'train'))
    test_dir = materialise(test_pairs, os.path.join(out, '_data', 'test'))
    budget = budget_iterations(opt, out, train_dir, device)
    total_iter = budget['total_iter']
    seeds = [opt['train']['seed'] + k for k in range(opt['train']['seeds'])]
    runs: dict[str, list[dict]] = {e['name']: [] for e in opt['archs']}
    for entry in opt['archs']:  # checkpoints: evaluated once, seeds do not apply
        if entry.get('checkpoint'):
            runs[entry['name']].append(train_run(opt, entry, out, train_dir, device, None, 0))
    for seed in seeds:  # seed by seed: an interrupted benchmark leaves complete seeds behind
        for entry in opt['archs']:
            if not entry.get('checkpoint'):
                runs[entry['name']].append(train_run(opt, entry, out, train_dir, device, seed, total_iter))
    batches = check_batches(opt, out, seeds, total_iter)
    for seed, check in batches.items():
        if not check['same']:
            log(f'WARNING: seed {seed}: the archs did not train on the same batches ({check}); the table says so')
    speed = evaluate_all(opt, runs, out, test_dir, device)
    summaries = summarise(opt, runs, speed, batches, reference)
    opt['_meta'] = {'reference': reference, 'budget': budget, 'batches': batches}
    write_results(summaries, opt, out, opt['_meta'])
    return summaries
