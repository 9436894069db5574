"""The report's tables: ``metrics.json``, ``metrics.csv`` and ``report.md``, and the notes they share."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from ..metrics import protocols
from ..metrics.evaluation import Evaluation
from ..metrics.pairing import MISSING_KINDS, shared_ground_truth

__all__ = ['fmt', 'notes', 'json_document', 'write_json', 'write_csv', 'write_markdown', 'mean_rows']


def _json_value(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # inf / nan are not JSON


def fmt(v: float | None, metric: str = '') -> str:
    if v is None:
        return '-'
    if not math.isfinite(v):
        return str(v)
    return f'{v:.2f}' if metric.startswith('psnr') or abs(v) >= 10 else f'{v:.4f}'


def _implementation(metric: str, protocol: str) -> str:
    if protocol == 'official':
        return 'UDR-S2Former test script (psnr_ssim.py)'
    if metric == protocols.BASICSR_NIQE:
        return protocols.BASICSR_NIQE_INFO
    return f'pyiqa {protocols.pyiqa_name(metric)}'


def mean_rows(ev: Evaluation, mean: dict[str, float]) -> list[tuple[str, str, str, str, str, str]]:
    """``(metric, better, output, input, change, implementation)`` per requested metric."""
    rows = []
    for m in ev.metrics:
        if m in ev.unavailable:
            rows.append((m, '', 'unavailable', '', '', ''))
            continue
        better = 'lower' if protocols.lower_is_better(m) else 'higher'
        inp, change = (
            (fmt(mean.get(f'{m}_input'), m), fmt(mean.get(f'{m}_change'), m))
            if f'{m}_input' in ev.columns
            else ('', '')
        )
        rows.append((m, better, fmt(mean.get(m), m), inp, change, _implementation(m, ev.protocol)))
    return rows


def _table_md(ev: Evaluation) -> list[str]:
    ms = ev.columns
    lines = ['| image | ' + ' | '.join(ms) + ' |', '|---|' + '---:|' * len(ms)]
    for name, vals in ev.per_image.items():
        lines.append(f'| {name} | ' + ' | '.join(fmt(vals.get(m), m) for m in ms) + ' |')
    return lines


def notes(ev: Evaluation, infinite: dict[str, int], allow_missing: bool) -> list[str]:
    notes = [f'- `{m}` unavailable: {r}' for m, r in ev.unavailable.items()]
    notes += [
        f'- `{m}`: {n} non-finite value(s) (inf: identical to the ground truth), left out of the mean'
        for m, n in infinite.items()
    ]
    notes += [f'- `{n}` skipped: {r}' for n, r in ev.errors.items()]
    notes += [
        f'- `{os.path.basename(gt)}` is the ground truth of {len(names)} predictions (--allow-shared-gt): '
        + ', '.join(f'`{n}`' for n in names)
        for gt, names in shared_ground_truth(ev.pairs).items()
    ]
    for kind, paths in ev.missing.items():
        if paths:
            what = MISSING_KINDS[kind]
            state = 'allowed by --allow-missing' if allow_missing else 'an error (--allow-missing accepts it)'
            notes.append(f'- {len(paths)} {what}, {state}: ' + ', '.join(f'`{os.path.basename(p)}`' for p in paths))
    return notes


def json_document(ev: Evaluation, reference: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        'protocol': ev.protocol,
        'reference': reference,
        'count': len(ev.per_image),
        'paired': len(ev.pairs),
        'mean': {m: _json_value(v) for m, v in ev.mean.items()},
        'infinite': ev.infinite,
        'per_image': {n: {m: _json_value(v) for m, v in vals.items()} for n, vals in ev.per_image.items()},
        'unavailable': dict(ev.unavailable),
        'lower_better': ev.lower_better,
        'implementation': {m: _implementation(m, ev.protocol) for m in ev.available},
        'missing': {k: list(v) for k, v in ev.missing.items()},
        'missing_count': {k: len(v) for k, v in ev.missing.items()},
    }
    shared = shared_ground_truth(ev.pairs)
    if shared:
        doc['shared_ground_truth'] = {os.path.basename(gt): names for gt, names in shared.items()}
    if ev.errors:
        doc['errors'] = dict(ev.errors)
    return doc


def write_json(doc: dict[str, Any], path: str) -> None:
    """``metrics.json``: strict JSON (non-finite values are written as strings)."""
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write('\n')


def write_csv(ev: Evaluation, path: str) -> None:
    """``metrics.csv``: one row per image and a ``mean`` row, values as Python writes them (``repr``)."""
    mean, cols = ev.mean, ev.columns
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image', *cols])
        for name, vals in ev.per_image.items():
            writer.writerow([name, *(repr(vals[m]) if m in vals else '' for m in cols)])
        writer.writerow(['mean', *(repr(mean[m]) if m in mean else '' for m in cols)])


def write_markdown(ev: Evaluation, path: str, reference: str, notes: list[str]) -> None:
    """``report.md``: the summary table, the notes (missing images, errors, non-finite values) and per-image rows."""
    protocol = ' (UDR-S2Former test script)' if ev.protocol == 'official' else ' (pyiqa; niqe: BasicSR)'
    md = [
        '# Evaluation report',
        '',
        f'Protocol: **{ev.protocol}**{protocol}; reference: {reference}',
        f'Images: {len(ev.per_image)}',
        '',
        '| metric | better | output | input | change | implementation |',
        '|---|---|---:|---:|---:|---|',
        *['| ' + ' | '.join(r) + ' |' for r in mean_rows(ev, ev.mean)],
        '',
    ]
    if notes:
        md += ['## Notes', '', *notes, '']
    md += ['## Per image', '', *_table_md(ev), '']
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(md))
