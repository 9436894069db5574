"""The benchmark's outputs: results.md, the plots, and training curves parsed from BasicSR logs."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .options import BenchmarkError

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


def _metric_cell(m: dict, digits: int) -> str:
    return f'{m["mean"]:.{digits}f}' + ('' if m['std'] is None else f' ± {m["std"]:.{digits}f}')


def results_markdown(summaries: list[dict], opt: dict, meta: dict) -> str:
    """The results table (one row per arch: costs, mean ± std over seeds, the paired comparison) and its notes.

    Args:
        summaries: One per arch (:func:`.statistics.summarise`).
        opt: The benchmark options.
        meta: ``reference`` (arch name), ``budget`` (``OUT/budget.json``), ``batches`` (per-seed batch checks).
    """
    sizes = sorted(opt['speed']['sizes'])
    ms, metrics = opt['speed']['macs_size'], opt['eval']['metrics']
    ref = meta['reference']
    cmp_metric = 'psnr' if 'psnr' in metrics else metrics[0]
    level = round(100 * opt['bootstrap']['confidence'])
    on_cpu = opt.get('pick_device_name', 'cpu') == 'cpu'
    head = ['arch', 'params (M)', f'MACs@{ms} (G)']
    head += [f'latency@{s} (ms)' for s in sizes]
    head += [f'CPU time@{sizes[0]} (ms)'] if on_cpu else []
    head += [f'peak mem@{s} (MB)' for s in sizes]
    head += [f'{m.upper()} (mean ± std)' for m in metrics]
    head += [f'Δ{cmp_metric.upper()} vs {ref} [{level} % CI]', f'vs {ref}', 'seeds', 'steps']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in summaries:
        row = [r['name'], f'{r["params"] / 1e6:.3g}', f'{r[f"macs@{ms}"] / 1e9:.3g}']
        row += [_fmt(r['speed'].get(str(s), {}).get('latency_ms'), 1) for s in sizes]
        row += [_fmt(r['speed'].get(str(sizes[0]), {}).get('cpu_ms'), 1)] if on_cpu else []
        row += [_fmt(r['speed'].get(str(s), {}).get('peak_mem_mb'), 0) for s in sizes]
        row += [_metric_cell(r['metrics'][m], 2 if m == 'psnr' else 4) for m in metrics]
        c = (r.get('vs_reference') or {}).get(cmp_metric)
        if c is None:
            row += ['(reference)', '']
        else:
            digits = 2 if cmp_metric == 'psnr' else 4
            row += [f'{c["mean_diff"]:+.{digits}f} [{c["low"]:+.{digits}f}, {c["high"]:+.{digits}f}]', c['verdict']]
        row += [str(len(r['seeds'])) if r['seeds'] else 'checkpoint', str(r['train'].get('total_iter') or '-')]
        if r.get('same_batches') is False:
            row[0] += ' (batches differ!)'
        lines.append('| ' + ' | '.join(row) + ' |')
    budget = meta['budget']
    notes = []
    if budget.get('how') == 'capped':
        notes.append(
            f'Steps: {budget["total_iter"]} for every arch and seed (train:total_iter), fewer than the '
            f'{budget.get("steps_from_minutes", "?")} that max_minutes {budget["max_minutes"]} gives the slowest arch '
            f'({budget["calibrated_on"]}, {budget["seconds_per_iter"][budget["calibrated_on"]]} s/step; all archs '
            'timed interleaved in one process).'
        )
    elif budget.get('how') == 'calibrated':
        notes.append(
            f'Steps: {budget["total_iter"]} for every arch and seed, from max_minutes {budget["max_minutes"]} and '
            f'the slowest arch ({budget["calibrated_on"]}, {budget["seconds_per_iter"][budget["calibrated_on"]]} '
            's/step; all archs timed interleaved in one process).'
        )
    else:
        notes.append(f'Steps: {budget["total_iter"]} for every arch and seed (train:total_iter).')
    n_images = summaries[0]['test_images'] if summaries else 0
    notes.append(
        f'{cmp_metric.upper()} and the other metrics: mean over {n_images} test images ({opt["eval"]["protocol"]} '
        f"protocol), then mean ± sample std over seeds. Δ: per test image the seeds are averaged, the reference's "
        f'score subtracted, and the mean difference gets a {level} % percentile bootstrap interval over images '
        f'({opt["bootstrap"]["resamples"]} resamples, seed {opt["bootstrap"]["seed"]}; seeds not resampled); '
        '"tie" where the interval holds 0.'
    )
    bad = {s: c for s, c in meta['batches'].items() if not c['same']}
    if bad:
        notes.append(f'**WARNING: the archs did not train on the same batches for seed(s) {", ".join(bad)}**: {bad}')
    elif meta['batches']:
        notes.append(
            f'Batches: identical for every trained arch under each seed (digests of all {budget["total_iter"]} '
            'steps compared).'
        )
    notes.append(
        f'Latency/peak memory: one {"/".join(map(str, sizes))} px square image, whole, median of '
        f'{opt["speed"]["runs"]} forwards, all archs interleaved in one process.'
    )
    return '\n'.join(lines) + '\n\n' + '\n\n'.join(notes) + '\n'


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
        lat, val = r['speed'].get(size, {}).get('latency_ms'), (r['metrics'].get(metric) or {}).get('mean')
        if lat is None or not isinstance(val, float):
            continue
        std = r['metrics'][metric].get('std') or 0.0
        ax.errorbar([lat], [val], yerr=[std], fmt='none', ecolor='grey', capsize=3)
        ax.scatter([lat], [val], s=30 + 300 * math.sqrt(r['params'] / 1e7))
        ax.annotate(r['name'], (lat, val), textcoords='offset points', xytext=(6, 4), fontsize=8)
    ax.set_xscale('log')
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f'latency @ {size}x{size} (ms, {opt.get("pick_device_name", "cpu")}, log scale)')
    ax.set_ylabel(f'{(metric or "").upper()} (dB, Y)' if metric == 'psnr' else (metric or ''))
    ax.set_title(f'{opt["name"]}: quality (mean ± std over seeds) vs latency (marker area ~ params)', fontsize=9)
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
            ax.plot(its, vals, label=f'{r["name"]} ({key}, first seed)')
    ax.set_xlabel('iteration')
    ax.set_ylabel('training PSNR loss (= -PSNR dB of RGB crops)')
    ax.set_title(f'{opt["name"]}: training loss', fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'training_curves.png'), dpi=120)
    plt.close(fig)


def write_results(summaries: list[dict], opt: dict, out: str, meta: dict) -> None:
    """``results.json``, ``results.md`` and the two plots; refuses results measured on different test images."""
    tests = {json.dumps((r.get('data') or {}).get('test')) for r in summaries}
    if len(tests) > 1:
        raise BenchmarkError(
            f'results: the archs were evaluated on {len(tests)} different test sets; one table cannot mix them'
        )
    summary = {
        'name': opt['name'],
        'device': opt.get('pick_device_name'),
        'protocol': {k: opt[k] for k in ('data', 'train', 'loss', 'eval', 'speed', 'bootstrap')},
        **meta,
        'results': summaries,
    }
    with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, default=str)
    with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(f'# {opt["name"]}\n\n' + results_markdown(summaries, opt, meta))
    write_plots(summaries, opt, out)
