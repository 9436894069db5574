"""Benchmark S2Former against other BasicSR archs under one protocol: same data, batches, steps, loss and metrics.

``python -m s2former_plugin.benchmark -opt options/benchmark.yml [--out DIR] [--data-root DIR] [--total-iter N]
[--max-minutes M] [--seeds N] [--only NAME,...]``

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

Unknown keys at any level are refused with the closest known key (``train:crops: unknown option; did you mean
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

Resuming: a run with ``result.json`` is skipped; one with a trained ``net_g_latest.pth`` is only evaluated; an
interrupted training resumes from its last training state (``--auto_resume``) and continues with the batches it
would have had. Changing an arch's options, the step count, or the selected train/test files (names, sizes,
contents), with an existing run folder is refused (delete the folder or use another ``--out``); so are test pairs
that share images with training pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import yaml

from .data import data_fingerprint, materialise, select_pairs
from .nets import build_net, import_modules, is_s2former, pick_device_name
from .options import BenchmarkError, load_options
from .report import parse_training_log, results_markdown, write_reports
from .train_child import BATCH_RECORD, build_train_options

RESULT_FILE = 'result.json'
BUDGET_FILE = 'budget.json'
SPEED_FILE = 'speed.json'


# ----------------------------------------------------------------------------------------------------------------
# Subprocesses
# ----------------------------------------------------------------------------------------------------------------
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


def _read_json(path: str) -> Any:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _write_json(path: str, obj: Any) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# Budget: one step count for every arch
# ----------------------------------------------------------------------------------------------------------------
def _budget_key(opt: dict) -> dict:
    """What the step count depends on (a changed key makes ``OUT/budget.json`` stale)."""
    tr = opt['train']
    keys = ('total_iter', 'max_minutes', 'calibration_iters', 'batch_size', 'crop', 'threads')
    return {'train': {k: tr[k] for k in keys}, 'device': opt.get('pick_device_name')}


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
    key = _budget_key(opt)
    if os.path.isfile(path):
        budget = _read_json(path)
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
        _log(f'calibrating the budget: {tr["calibration_iters"]} steps of each of {len(trained)} archs, interleaved')
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
        _write_json(spec_path, spec)
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.train_child', '--calibrate', spec_path]
        _run_child(cmd, cdir, os.path.join(cdir, 'stdout.log'), tr['threads'], 'budget calibration')
        seconds = _read_json(spec['out'])
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
        _log(f'budget: {seconds[slowest]:.3f} s/step for the slowest arch ({slowest}) -> total_iter {iters}')
    budget['key'] = key
    _write_json(path, budget)
    return budget


# ----------------------------------------------------------------------------------------------------------------
# One run: an arch under one seed (or its checkpoint)
# ----------------------------------------------------------------------------------------------------------------
def _fingerprint(opt: dict, entry: dict, seed: int | None, total_iter: int) -> str:
    train = {k: v for k, v in opt['train'].items() if k not in ('seeds', 'total_iter', 'max_minutes')}
    keys = {k: opt[k] for k in ('imports', 'data', 'loss', 'eval', 'device')}
    return _digest({'entry': entry, 'seed': seed, 'steps': total_iter, 'train': train, **keys})


def _check_folder(rdir: str, fp: str, data_fp: dict | None, what: str) -> None:
    """Refuse a run folder made with other options or on other data."""
    fp_path = os.path.join(rdir, 'fingerprint.txt')
    if os.path.isfile(fp_path):
        with open(fp_path, encoding='utf-8') as f:
            if f.read().strip() != fp:
                raise BenchmarkError(
                    f'{what}: options changed since {rdir} was made; delete that folder or use another --out'
                )
    data_path = os.path.join(rdir, 'data_fingerprint.json')
    if data_fp is not None and os.path.isdir(rdir) and os.listdir(rdir):
        old = _read_json(data_path) if os.path.isfile(data_path) else None
        if old != data_fp:
            why = 'has no record of its data' if old is None else 'was made on other train/test images'
            changed = [k for k in ('train', 'test') if old and old.get(k) != data_fp[k]]
            raise BenchmarkError(
                f'{what}: {rdir} {why}{" (" + " and ".join(changed) + " set changed)" if changed else ""}; '
                'its results would mix test sets: delete that folder or use another --out'
            )
    os.makedirs(rdir, exist_ok=True)
    with open(fp_path, 'w', encoding='utf-8') as f:
        f.write(fp + '\n')
    if data_fp is not None:
        _write_json(data_path, data_fp)


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
    fp = _fingerprint(opt, entry, seed, total_iter if seed is not None else 0)
    _check_folder(rdir, fp, data_fp, f'archs:{name}:{run_name}')
    if os.path.isfile(result_path):
        _log(f'skip {name} {run_name}: done ({result_path})')
        return _read_json(result_path)
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
        _log(f'{name} {run_name}: trained already ({latest})')
    else:
        _log(f'{name} {run_name}: training {total_iter} steps ({opt_path})')
        start = time.time()
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.train_child', '-opt', opt_path, '--auto_resume']
        log = os.path.join(rdir, 'train_stdout.log')
        _run_child(cmd, rdir, log, opt['train']['threads'], f'{name} {run_name}: training')
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


def _speed_key(opt: dict, archs: list[dict], device: str) -> str:
    stamps = {a['name']: os.stat(a['weights']).st_mtime_ns if os.path.isfile(a['weights']) else None for a in archs}
    return _digest({'archs': archs, 'stamps': stamps, 'speed': opt['speed'], 'imports': opt['imports'], 'd': device})


def evaluate_all(opt: dict, runs: dict[str, list[dict]], out: str, test_dir: str, device: str) -> dict:
    """Measure all archs together (unless ``OUT/speed.json`` holds the same measurement) and score every run without
    a result, all in one fresh subprocess (:mod:`.eval_child`); writes each run's ``result.json``.

    Returns:
        The speed measurement ``{arch: {params, speed, macs@S, ...}}``; ``runs`` are updated in place.
    """
    archs = _speed_archs(opt, runs)
    key = _speed_key(opt, archs, device)
    speed_path = os.path.join(out, SPEED_FILE)
    cached = _read_json(speed_path) if os.path.isfile(speed_path) else {}
    need_speed = cached.get('key') != key
    pending = [r for rs in runs.values() for r in rs if 'per_image' not in r]
    if need_speed or pending:
        _log(
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
        _write_json(spec_path, spec)
        cmd = [sys.executable, '-m', 's2former_plugin.benchmark.eval_child', spec_path]
        _run_child(cmd, out, os.path.join(out, 'eval_stdout.log'), opt['speed']['threads'], 'evaluation')
        if need_speed:
            cached = {'key': key, 'archs': _read_json(spec['speed']['out'])}
            _write_json(speed_path, cached)
        for r, rs in zip(pending, spec['runs'], strict=True):
            r.update(_read_json(rs['out']))
            _write_json(os.path.join(r['dir'], RESULT_FILE), r)
    else:
        _log(f'skip speed: measured ({speed_path})')
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


def _scores(run: dict, metric: str) -> dict[str, float]:
    return {k: float(v) for k, v in run['per_image'][metric].items()}


def summarise(opt: dict, runs: dict[str, list[dict]], speed: dict, batches: dict, reference: str) -> list[dict]:
    """One summary per arch: speed, mean ± std over seeds, and the paired comparison with ``reference``."""
    from .statistics import StatisticsError, mean_std, paired_comparison

    bs = opt['bootstrap']
    summaries = []
    for entry in opt['archs']:
        name = entry['name']
        arch_runs = runs[name]
        metrics = {}
        for m in opt['eval']['metrics']:
            per_seed = [r['metrics'][m] for r in arch_runs]
            finite = [v for v in per_seed if isinstance(v, int | float)]
            if len(finite) != len(per_seed):
                raise BenchmarkError(f'archs:{name}: {m} is not finite for a run; one table cannot average it')
            mean, std = mean_std(finite)
            metrics[m] = {'mean': mean, 'std': std, 'per_seed': per_seed}
        comparisons = {}
        if name != reference:
            for m in opt['eval']['metrics']:
                try:
                    comparisons[m] = paired_comparison(
                        [_scores(r, m) for r in arch_runs],
                        [_scores(r, m) for r in runs[reference]],
                        bs['resamples'],
                        bs['confidence'],
                        bs['seed'],
                    )
                except StatisticsError as err:
                    raise BenchmarkError(f'archs:{name}: {err}') from None
        trained = not entry.get('checkpoint')
        same = all(c['same'] for c in batches.values()) if trained else None
        summaries.append({
            'name': name,
            'network_g': entry['network_g'],
            **{k: v for k, v in speed[name].items()},
            'seeds': [r['train'].get('seed') for r in arch_runs] if trained else [],
            'test_images': arch_runs[0]['test_images'],
            'metrics': metrics,
            'vs_reference': comparisons or None,
            'same_batches': same,
            'train': {
                'total_iter': arch_runs[0]['train'].get('total_iter'),
                'minutes': [r['train'].get('minutes') for r in arch_runs] if trained else [],
                'curves': arch_runs[0]['train'].get('curves') or {},
                'losses': arch_runs[0]['train'].get('losses'),
                'model_type': arch_runs[0]['train'].get('model_type'),
            },
            'data': arch_runs[0].get('data'),
        })  # fmt: skip
    return summaries


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
            _log(f'WARNING: seed {seed}: the archs did not train on the same batches ({check}); the table says so')
    speed = evaluate_all(opt, runs, out, test_dir, device)
    summaries = summarise(opt, runs, speed, batches, reference)
    opt['_meta'] = {'reference': reference, 'budget': budget, 'batches': batches}
    write_reports(summaries, opt, out, opt['_meta'])
    return summaries


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog='python -m s2former_plugin.benchmark', description=__doc__.split('\n')[0])
    p.add_argument('-opt', required=True, help='benchmark YAML (see options/benchmark.yml)')
    p.add_argument('--out', help='output folder (default: benchmark_results/<name> in the working directory)')
    p.add_argument('--data-root', help='overrides data:dataroot')
    p.add_argument('--total-iter', type=int, help='overrides train:total_iter')
    p.add_argument('--max-minutes', type=float, help='overrides train:max_minutes (one run of the slowest arch)')
    p.add_argument('--seeds', type=int, help='overrides train:seeds (runs per arch)')
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
            'seeds': args.seeds,
            'only': [s for s in (args.only or '').split(',') if s],
        }
        opt = load_options(args.opt, overrides)
        out = args.out or os.path.join('benchmark_results', opt['name'])
        summaries = run_benchmark(opt, out)
    except BenchmarkError as err:
        print(f'benchmark: error: {err}', file=sys.stderr)
        return 2
    _log(f'{len(summaries)} archs; results in {os.path.join(out, "results.md")}')
    print(results_markdown(summaries, opt, opt['_meta']))
    return 0
