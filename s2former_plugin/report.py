"""Score a folder of restored images against ground truth and write JSON/CSV/Markdown/HTML reports.

Usage::

    python -m s2former_plugin.report --pred results/ --gt Rain100H/norain --out report/ \\
        [--metrics psnr,ssim,lpips] [--protocol standard|official] [--input Rain100H/rain/X2] \\
        [--uncertainty results/uncertainty] [--workers 2] [--pred-suffix _S2Former]

Predictions are paired with ground truth by file stem: the exact stem first, then the dataset naming rules of
:mod:`s2former_plugin.data.layouts` (``norain-1x2`` -> ``norain-1``, ``7_rain`` -> ``7_clean``, ``rd-rain-3`` ->
``norain-3``...). Writes ``metrics.json`` (``{"mean": {...}, "per_image": {...}, "unavailable": {...}, ...}``),
``metrics.csv``, ``report.md`` and ``report.html`` (one self-contained page with a per-image plot and crops of the
best and worst images). A metric that cannot be computed here (e.g. LPIPS without its weight files offline) is
listed under ``unavailable`` with the reason; the others are still written. Means are over the finite values: an
image identical to its ground truth (official PSNR ``inf``) is left out and counted under ``infinite``
(``{metric: n}``, also a note in ``report.md``); when no value is finite the mean is ``inf``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .data.layouts import IMAGE_EXTENSIONS, clean_stem_candidates, natural_key
from .metrics import protocols

__all__ = [
    'ImagePair',
    'finite_mean',
    'list_images',
    'gt_stem_candidates',
    'pair_images',
    'read_image',
    'score_images',
    'evaluate',
    'write_reports',
    'main',
]

CROP = 160


class ReportError(Exception):
    """A problem with the command's inputs; reported as one line."""


@dataclass(frozen=True)
class ImagePair:
    """A prediction and its ground truth; ``name`` is the prediction's stem."""

    name: str
    pred: str
    gt: str


@dataclass
class Evaluation:
    """Scores of one run."""

    protocol: str
    metrics: list[str]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    pairs: list[ImagePair] = field(default_factory=list)

    @property
    def available(self) -> list[str]:
        return [m for m in self.metrics if m not in self.unavailable]

    def _values(self, metric: str) -> list[float]:
        return [v[metric] for v in self.per_image.values() if metric in v]

    @property
    def mean(self) -> dict[str, float]:
        """Mean of the finite values per metric (see :func:`finite_mean`)."""
        out = {}
        for m in self.available:
            vals = self._values(m)
            if vals:
                out[m] = finite_mean(vals)[0]
        return out

    @property
    def infinite(self) -> dict[str, int]:
        """``{metric: number of non-finite values}`` (left out of :attr:`mean`), for metrics that have any."""
        counts = {m: finite_mean(self._values(m))[1] for m in self.available}
        return {m: n for m, n in counts.items() if n}


def finite_mean(values: list[float]) -> tuple[float, int]:
    """Mean of the finite values and the number of the others (``inf``: an image identical to its ground truth).

    One identical image would make the plain mean ``inf``; it is left out and counted instead. When no value is
    finite the plain mean is returned (``inf`` when every image is identical).
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (float(np.mean(values)) if values else math.nan), len(values)
    return float(np.mean(finite)), len(values) - len(finite)


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------
def list_images(folder: str) -> list[str]:
    """Paths of the image files directly in ``folder`` (``layouts.IMAGE_EXTENSIONS``, not hidden), natural order.

    The one folder scanner of the report and the inference command.
    """
    names = sorted((n for n in os.listdir(folder) if not n.startswith('.')), key=lambda n: (natural_key(n), n))
    paths = [os.path.join(folder, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return [p for p in paths if os.path.isfile(p)]


def _images(folder: str) -> dict[str, str]:
    """``{stem: path}`` of :func:`list_images` (the first extension wins for duplicated stems)."""
    out: dict[str, str] = {}
    for path in list_images(folder):
        out.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return out


def gt_stem_candidates(stem: str) -> list[str]:
    """Ground-truth stems a prediction named ``stem`` may correspond to, most specific first.

    The exact stem, then the dataset layouts' naming rules (``layouts.clean_stem_candidates``): Rain100/200
    (``norain-1x2`` -> ``norain-1``), Raindrop/AGAN (``7_rain`` -> ``7_clean``), RainDS (the last whole-word
    ``rd-rain``/``rd``/``rain`` -> ``norain``).
    """
    return clean_stem_candidates(stem)


def _candidates(stem: str) -> list[str]:
    """:func:`gt_stem_candidates` of ``stem``, then of ``stem`` without an image extension.

    ``python -m s2former_plugin.infer`` names its outputs ``<name>.png`` (``a.png.png``, ``a.jpg.png``; TIFF for
    float images) when two inputs share a stem: their stems are ``a.png``/``a.jpg``, the ground truth's ``a``.
    """
    out = gt_stem_candidates(stem)
    root, ext = os.path.splitext(stem)
    if root and ext.lower() in IMAGE_EXTENSIONS:
        out += [c for c in gt_stem_candidates(root) if c not in out]
    return out


def pair_images(pred_dir: str, gt_dir: str, pred_suffix: str | None = None) -> tuple[list[ImagePair], list[str]]:
    """Pair every prediction in ``pred_dir`` with a ground-truth image in ``gt_dir``.

    Args:
        pred_dir: Folder of restored images.
        gt_dir: Folder of ground-truth images.
        pred_suffix: Suffix to strip from prediction stems first (basicsr saves ``<name>_<suffix>.png``).
            A second image extension (``a.png.png``, as infer writes for inputs sharing a stem) is stripped too.

    Returns:
        The pairs (natural order of names) and the prediction paths without ground truth.
    """
    preds, gts = _images(pred_dir), _images(gt_dir)
    pairs, unmatched = [], []
    for stem, path in preds.items():
        base = stem[: -len(pred_suffix)] if pred_suffix and stem.endswith(pred_suffix) else stem
        gt_stem = next((c for c in _candidates(base) if c in gts), None)
        if gt_stem is None:
            unmatched.append(path)
        else:
            pairs.append(ImagePair(stem, path, gts[gt_stem]))
    return pairs, unmatched


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------
def read_image(path: str) -> np.ndarray:
    """``H x W x 3`` BGR image: ``uint8``, ``uint16`` or ``float32`` (0-1, e.g. the float TIFFs infer writes; float64
    is converted); grayscale is expanded, alpha dropped. Scores take each image's own scale (255, 65535 or 1).
    """
    from s2former_plugin import imageio

    img = imageio.read(path)  # ImageError (a ValueError) names the file: missing, empty, truncated or damaged
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f'unsupported image depth {img.dtype}: {path}')
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return img


def _check_metric(metric: str, protocol: str) -> str | None:
    """Reason why ``metric`` cannot be computed (``None`` if it can)."""
    if protocol == 'official':
        if metric not in protocols.OFFICIAL_METRICS:
            return f'the official protocol defines {", ".join(protocols.OFFICIAL_METRICS)} only'
        return None
    try:
        protocols.standard_metric(metric, np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))
    except protocols.MetricUnavailable as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a no-reference metric or a real problem: let the images tell
        return None
    return None


def score_images(pred: np.ndarray, gt: np.ndarray, metrics: list[str], protocol: str) -> dict[str, float]:
    """``{metric: value}`` of one prediction against its ground truth, both as :func:`read_image` returns them.

    The scoring path of this report and of :mod:`s2former_plugin.benchmark`: same reading, same metrics.

    Raises:
        ValueError: the sizes differ.
        protocols.MetricUnavailable: a metric cannot be computed here.
    """
    if pred.shape != gt.shape:
        raise ValueError(f'size {pred.shape[1]}x{pred.shape[0]} differs from ground truth {gt.shape[1]}x{gt.shape[0]}')
    return {m: protocols.compute(m, pred, gt, protocol) for m in metrics}


def _score(pair: ImagePair, metrics: list[str], protocol: str) -> dict[str, float]:
    return score_images(read_image(pair.pred), read_image(pair.gt), metrics, protocol)


def evaluate(
    pairs: list[ImagePair], metrics: list[str], protocol: str = 'standard', workers: int = 1, progress: bool = True
) -> Evaluation:
    """Score every pair with every metric (thread pool; cv2, numpy and torch release the GIL).

    Args:
        pairs: Pairs from :func:`pair_images`.
        metrics: Metric names (``psnr``, ``ssim``, any pyiqa name).
        protocol: ``standard`` or ``official``.
        workers: Threads.
        progress: Show a tqdm bar.

    Returns:
        The :class:`Evaluation`; per-image failures are in ``errors`` (name -> reason).
    """
    import torch
    from tqdm import tqdm

    ev = Evaluation(protocol, list(metrics), pairs=list(pairs))
    for m in metrics:
        reason = _check_metric(m, protocol)
        if reason is not None:
            ev.unavailable[m] = reason
    todo = ev.available
    results: dict[str, dict[str, float]] = {}
    workers = max(1, workers)
    threads = torch.get_num_threads()
    # One pool thread per core: torch's own intra-op threads on top would oversubscribe the CPU.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        _run(ev, pairs, todo, protocol, workers, progress, results, tqdm)
    finally:
        torch.set_num_threads(threads)
    for p in pairs:
        if p.name in results:
            ev.per_image[p.name] = results[p.name]
    return ev


def _run(ev, pairs, todo, protocol, workers, progress, results, tqdm) -> None:
    if todo:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_score, p, todo, protocol): p for p in pairs}
            bar = tqdm(total=len(futures), desc='scoring', unit='img', disable=not progress)
            for fut in as_completed(futures):
                pair = futures[fut]
                try:
                    results[pair.name] = fut.result()
                except protocols.MetricUnavailable as exc:
                    ev.errors[pair.name] = str(exc)
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the report
                    ev.errors[pair.name] = f'{type(exc).__name__}: {exc}'
                bar.update(1)
            bar.close()


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------
def _json_value(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # inf / nan are not JSON


def _fmt(v: float | None, metric: str = '') -> str:
    if v is None:
        return '-'
    if not math.isfinite(v):
        return str(v)
    return f'{v:.2f}' if metric.startswith('psnr') or abs(v) >= 10 else f'{v:.4f}'


def _ranking_metric(ev: Evaluation) -> tuple[str, bool] | None:
    """Metric used to pick best/worst images and to plot: psnr if available, else the first one."""
    avail = [m for m in ev.available if any(m in v for v in ev.per_image.values())]
    if not avail:
        return None
    m = 'psnr' if 'psnr' in avail else avail[0]
    return m, protocols.lower_is_better(m)


def _png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode('.png', img)
    if not ok:  # pragma: no cover
        raise ValueError('PNG encoding failed')
    return base64.b64encode(buf.tobytes()).decode('ascii')


def _plot_b64(ev: Evaluation, metric: str) -> str:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(ev.per_image)
    vals = [ev.per_image[n].get(metric, math.nan) for n in names]
    finite = [v for v in vals if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(min(16, 4 + 0.12 * len(names)), 3.2), dpi=100)
    ax.bar(range(len(names)), [v if math.isfinite(v) else 0 for v in vals], color='#4878a8')
    if finite:
        ax.axhline(float(np.mean(finite)), color='#c44e52', lw=1, label=f'mean {np.mean(finite):.3f}')
        ax.set_ylim(min(finite) - 0.05 * (max(finite) - min(finite) + 1e-9) - 0.5, max(finite) + 0.5)
        ax.legend(loc='lower right')
    ax.set_ylabel(f'{metric} ({ev.protocol})')
    ax.set_xlabel('image')
    step = max(1, len(names) // 20)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=60, ha='right', fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode('ascii')


def _to_u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        return (img / 257.0).round().astype(np.uint8)
    if img.dtype.kind == 'f':
        return (np.clip(np.nan_to_num(img), 0, 1) * 255).round().astype(np.uint8)
    return img


def _find(folder: str | None, stems: list[str]) -> str | None:
    if not folder:
        return None
    imgs = _images(folder)
    for s in stems:
        for cand in (s, f'{s}_uncertainty', f'{s}_unc'):
            if cand in imgs:
                return imgs[cand]
    return None


def _crops(pair: ImagePair, input_dir: str | None, unc_dir: str | None) -> list[tuple[str, str]]:
    """``[(label, base64 png)]``: input/output/GT/uncertainty crops at the window of largest error."""
    pred, gt = _to_u8(read_image(pair.pred)), _to_u8(read_image(pair.gt))
    h, w = gt.shape[:2]
    ch, cw = min(CROP, h), min(CROP, w)
    # Window with the largest mean error: with the anchor at (0, 0) the box filter's value at (y, x) is the mean
    # over [y, y + ch) x [x, x + cw).
    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(2)
    err = cv2.boxFilter(err, -1, (cw, ch), anchor=(0, 0))[: h - ch + 1, : w - cw + 1]
    cy, cx = np.unravel_index(int(np.argmax(err)), err.shape)
    window = (slice(cy, cy + ch), slice(cx, cx + cw))
    panels = []
    stems = [pair.name, *_candidates(pair.name)]
    for label, path in (
        ('input', _find(input_dir, stems)),
        ('output', pair.pred),
        ('ground truth', pair.gt),
        ('uncertainty', _find(unc_dir, stems)),
    ):
        if path is None:
            continue
        img = pred if label == 'output' else gt if label == 'ground truth' else None
        if img is None:
            try:
                img = _to_u8(read_image(path))
            except ValueError:
                continue
        if img.shape[:2] != (h, w):
            continue
        panels.append((label, _png_b64(img[window])))
    return panels


def _table_md(ev: Evaluation) -> list[str]:
    ms = ev.available
    lines = ['| image | ' + ' | '.join(ms) + ' |', '|---|' + '---:|' * len(ms)]
    for name, vals in ev.per_image.items():
        lines.append(f'| {name} | ' + ' | '.join(_fmt(vals.get(m), m) for m in ms) + ' |')
    return lines


def write_reports(ev: Evaluation, out_dir: str, input_dir: str | None = None, unc_dir: str | None = None) -> dict:
    """Write ``metrics.json``, ``metrics.csv``, ``report.md`` and ``report.html`` to ``out_dir``.

    Returns:
        The JSON document.
    """
    import html

    os.makedirs(out_dir, exist_ok=True)
    mean, infinite = ev.mean, ev.infinite
    doc: dict[str, Any] = {
        'protocol': ev.protocol,
        'count': len(ev.per_image),
        'mean': {m: _json_value(v) for m, v in mean.items()},
        'infinite': infinite,
        'per_image': {n: {m: _json_value(v) for m, v in vals.items()} for n, vals in ev.per_image.items()},
        'unavailable': dict(ev.unavailable),
    }
    if ev.errors:
        doc['errors'] = dict(ev.errors)
    if ev.unmatched:
        doc['unmatched'] = list(ev.unmatched)
    with open(os.path.join(out_dir, 'metrics.json'), 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write('\n')

    ms = ev.available
    with open(os.path.join(out_dir, 'metrics.csv'), 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image', *ms])
        for name, vals in ev.per_image.items():
            writer.writerow([name, *(repr(vals[m]) if m in vals else '' for m in ms)])
        writer.writerow(['mean', *(repr(mean[m]) if m in mean else '' for m in ms)])

    summary = [
        f'Protocol: **{ev.protocol}**' + (' (UDR-S2Former test script)' if ev.protocol == 'official' else ' (pyiqa)'),
        f'Images: {len(ev.per_image)}',
        '',
        '| metric | mean |',
        '|---|---:|',
        *[f'| {m} | {_fmt(mean.get(m), m)} |' for m in ms],
        *[f'| {m} | unavailable |' for m in ev.unavailable],
    ]
    notes = [f'- `{m}` unavailable: {r}' for m, r in ev.unavailable.items()]
    notes += [
        f'- `{m}`: {n} non-finite value(s) (inf: identical to the ground truth), left out of the mean'
        for m, n in infinite.items()
    ]
    notes += [f'- `{n}` skipped: {r}' for n, r in ev.errors.items()]
    notes += [f'- no ground truth for `{os.path.basename(p)}`' for p in ev.unmatched]
    md = ['# Evaluation report', '', *summary, '']
    if notes:
        md += ['## Notes', '', *notes, '']
    md += ['## Per image', '', *_table_md(ev), '']
    with open(os.path.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(md))

    # HTML
    esc = html.escape
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Evaluation report</title><style>',
        'body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}',
        'td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}',
        '.crops{display:flex;gap:8px;flex-wrap:wrap}.crops figure{margin:0}img.crop{image-rendering:pixelated;'
        'width:240px}figcaption{font-size:12px;text-align:center}</style></head><body>',
        '<h1>Evaluation report</h1>',
        f'<p>Protocol: <b>{esc(ev.protocol)}</b>; images: {len(ev.per_image)}</p>',
        '<table><tr><th>metric</th><th>mean</th></tr>',
        *[f'<tr><td>{esc(m)}</td><td>{_fmt(mean.get(m), m)}</td></tr>' for m in ms],
        *[f'<tr><td>{esc(m)}</td><td>unavailable</td></tr>' for m in ev.unavailable],
        '</table>',
    ]
    if notes:
        parts += ['<h2>Notes</h2><ul>', *[f'<li>{esc(n[2:])}</li>' for n in notes], '</ul>']
    ranking = _ranking_metric(ev)
    if ranking is not None:
        metric, lower = ranking
        parts.append(f'<h2>Per-image {esc(metric)}</h2>')
        parts.append(f'<img alt="per-image {esc(metric)}" src="data:image/png;base64,{_plot_b64(ev, metric)}">')
        scored = [(v[metric], n) for n, v in ev.per_image.items() if metric in v and not math.isnan(v[metric])]
        if scored:
            scored.sort(reverse=lower)
            worst, best = scored[0][1], scored[-1][1]
            by_name = {p.name: p for p in ev.pairs}
            for title, name in (('Best', best), ('Worst', worst)):
                pair = by_name.get(name)
                if pair is None:
                    continue
                vals = ', '.join(f'{m} {_fmt(v, m)}' for m, v in ev.per_image[name].items())
                parts.append(f'<h2>{title}: {esc(name)} <small>({esc(vals)})</small></h2><div class="crops">')
                for label, b64 in _crops(pair, input_dir, unc_dir):
                    parts.append(
                        f'<figure><img class="crop" alt="{esc(label)}" src="data:image/png;base64,{b64}">'
                        f'<figcaption>{esc(label)}</figcaption></figure>'
                    )
                parts.append('</div>')
    parts.append('<h2>Per image</h2><table><tr><th>image</th>' + ''.join(f'<th>{esc(m)}</th>' for m in ms) + '</tr>')
    for name, vals in ev.per_image.items():
        parts.append(f'<tr><td>{esc(name)}</td>' + ''.join(f'<td>{_fmt(vals.get(m), m)}</td>' for m in ms) + '</tr>')
    parts.append('</table></body></html>\n')
    with open(os.path.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(parts))
    return doc


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m s2former_plugin.report', description='Score restored images against ground truth.'
    )
    p.add_argument('--pred', required=True, help='folder of restored images')
    p.add_argument('--gt', required=True, help='folder of ground-truth images')
    p.add_argument('--out', required=True, help='output folder for metrics.json/csv, report.md/html')
    p.add_argument('--metrics', default='psnr,ssim', help='comma-separated metric names (default: psnr,ssim)')
    p.add_argument('--protocol', default='standard', choices=protocols.PROTOCOLS)
    p.add_argument('--input', help='folder of degraded inputs (crops in the HTML page)')
    p.add_argument('--uncertainty', help='folder of uncertainty maps (crops in the HTML page)')
    p.add_argument('--pred-suffix', help='suffix to strip from prediction names, e.g. _S2Former')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), help='scoring threads')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors are one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        dirs = {'--pred': args.pred, '--gt': args.gt, '--input': args.input, '--uncertainty': args.uncertainty}
        for opt, path in dirs.items():
            if path is not None and not os.path.isdir(path):
                raise ReportError(f'{opt}: folder not found: {path}')
        metrics = [m.strip() for m in args.metrics.split(',') if m.strip()]
        if not metrics:
            raise ReportError('--metrics: no metric given')
        pairs, unmatched = pair_images(args.pred, args.gt, args.pred_suffix)
        if not pairs:
            raise ReportError(f'no prediction in {args.pred} matches an image in {args.gt} (by name)')
        ev = evaluate(pairs, metrics, args.protocol, args.workers, progress=not args.no_progress)
        ev.unmatched = unmatched
        write_reports(ev, args.out, args.input, args.uncertainty)
    except ReportError as exc:
        print(f'report: error: {exc}', file=sys.stderr)
        return 2
    mean = ev.mean
    print(
        f'{len(ev.per_image)} images, {args.protocol} protocol: '
        + ', '.join(f'{m} {_fmt(v, m)}' for m, v in mean.items())
        + ''.join(f'; {m} unavailable' for m in ev.unavailable)
        + f' -> {args.out}'
    )
    for name, reason in ev.errors.items():
        print(f'report: skipped {name}: {reason}', file=sys.stderr)
    return 1 if ev.errors else 0


if __name__ == '__main__':
    raise SystemExit(main())
