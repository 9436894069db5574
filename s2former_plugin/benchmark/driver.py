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
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import yaml

from .data import data_fingerprint, materialise, select_pairs
from .nets import build_net, import_modules, pick_device_name
from .options import BenchmarkError, load_options
from .report import parse_training_log, results_markdown, write_reports
from .train_child import build_train_options

RESULT_FILE = 'result.json'


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
            cmd = [sys.executable, '-m', 's2former_plugin.benchmark.train_child']
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
    cmd = [sys.executable, '-m', 's2former_plugin.benchmark.eval_child', spec_path]
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
    device = pick_device_name(opt)
    opt['pick_device_name'] = device
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
