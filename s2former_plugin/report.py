"""Score a folder of restored images, against ground truth or without it, and write JSON/CSV/Markdown/HTML reports.

Usage::

    python -m s2former_plugin.report --pred results/ --gt Rain100H/norain --out report/ \\
        [--metrics psnr,ssim,lpips] [--protocol standard|official] [--input Rain100H/rain/X2] \\
        [--uncertainty results/uncertainty] [--workers 2] [--pred-suffix _S2Former]
    python -m s2former_plugin.report --pred derained/ --input rainy/ --out report/ [--metrics niqe,piqe]

With ``--gt``, predictions are paired with ground truth by file stem: the exact stem first, then the dataset naming
rules of :mod:`s2former_plugin.data.layouts` (``norain-1x2`` -> ``norain-1``, ``7_rain`` -> ``7_clean``,
``rd-rain-3`` -> ``norain-3``...). Without it (real rain has no clean twin) only no-reference metrics are computed
(default ``niqe,piqe``: BasicSR's NIQE and pyiqa's PIQE, both offline). ``--input`` pairs the rainy originals by
name: each no-reference metric is then reported for the output (``niqe``), the input (``niqe_input``) and the
change (``niqe_change`` = output - input). Predictions without ground truth or input, and ground-truth or input
images without a prediction, are an error unless ``--allow-missing``; they are always listed (``missing``,
``missing_count``).

Writes ``metrics.json`` (``{"mean": {...}, "per_image": {...}, "unavailable": {...}, "lower_better": {...},
...}``), ``metrics.csv``, ``report.md`` and ``report.html`` (a per-image plot, crops of the best and worst images
when there is ground truth, and a gallery: one row of thumbnails per image, each linking to the full image copied
under ``images/``). A metric that cannot be computed here (e.g. LPIPS without its weight files offline) is listed
under ``unavailable`` with the reason; the others are still written. An unknown metric, or a full-reference metric
without ``--gt``, is listed there too and ends the command with status 1. Means are over the finite values: an
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
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from .data.layouts import clean_stem_candidates, safe_key
from .imageio import IMAGE_EXTENSIONS, list_images
from .metrics import protocols
from .metrics.scoring import finite_mean, read_image, score_images

__all__ = [
    'ImagePair',
    'gt_stem_candidates',
    'pair_images',
    'collect_pairs',
    'evaluate',
    'write_reports',
    'main',
]

CROP = 160
CROP_SHOWN = 240  # displayed crop width (pixelated zoom)
THUMB = 240  # gallery thumbnail width
# Formats browsers show: copied as they are into the gallery; others (TIFF, PPM...) are converted to PNG.
_BROWSER_EXTS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')
# missing kind -> (what is listed, meaning)
MISSING_KINDS = {
    'no_ground_truth': 'prediction(s) without ground truth',
    'no_prediction_for_ground_truth': 'ground-truth image(s) without a prediction',
    'no_input': 'prediction(s) without a rainy input',
    'no_prediction_for_input': 'input image(s) without a prediction',
}


class ReportError(Exception):
    """A problem with the command's inputs; reported as one line."""


@dataclass(frozen=True)
class ImagePair:
    """A prediction with its ground truth, rainy input and uncertainty map (each optional); ``name``: the
    prediction's stem."""

    name: str
    pred: str
    gt: str | None = None
    input: str | None = None
    uncertainty: str | None = None


@dataclass
class Evaluation:
    """Scores of one run.

    ``metrics`` are the requested names; ``columns`` the scored values: a full-reference metric, or a no-reference
    metric of the output, plus ``<metric>_input`` and ``<metric>_change`` when inputs are given.
    """

    protocol: str
    metrics: list[str]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bad_metrics: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    pairs: list[ImagePair] = field(default_factory=list)

    @property
    def available(self) -> list[str]:
        return [m for m in self.metrics if m not in self.unavailable]

    @property
    def with_input(self) -> bool:
        return any(p.input for p in self.pairs)

    @property
    def columns(self) -> list[str]:
        out = []
        for m in self.available:
            out.append(m)
            if self.with_input and protocols.is_no_reference(m):
                out += [f'{m}_input', f'{m}_change']
        return out

    @property
    def lower_better(self) -> dict[str, bool]:
        """``{column: lower is better}`` (a change column goes the way of its metric)."""
        return {c: protocols.lower_is_better(_metric_of(c)) for c in self.columns}

    def _values(self, metric: str) -> list[float]:
        return [v[metric] for v in self.per_image.values() if metric in v]

    @property
    def mean(self) -> dict[str, float]:
        """Mean of the finite values per column (see :func:`finite_mean`)."""
        out = {}
        for m in self.columns:
            vals = self._values(m)
            if vals:
                out[m] = finite_mean(vals)[0]
        return out

    @property
    def infinite(self) -> dict[str, int]:
        """``{column: number of non-finite values}`` (left out of :attr:`mean`), for columns that have any."""
        counts = {m: finite_mean(self._values(m))[1] for m in self.columns}
        return {m: n for m, n in counts.items() if n}


def _metric_of(column: str) -> str:
    for suffix in ('_input', '_change'):
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------
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


def _without_image_ext(stem: str) -> list[str]:
    """``[stem]``, then ``stem`` without an image extension (``a.png`` -> ``a``).

    ``python -m s2former_plugin.infer`` names its outputs ``<name>.png`` (``a.png.png``, ``a.jpg.png``; TIFF for
    float images) when two inputs share a stem: their stems are ``a.png``/``a.jpg``, the originals' ``a``.
    """
    root, ext = os.path.splitext(stem)
    return [stem, root] if root and ext.lower() in IMAGE_EXTENSIONS else [stem]


def _candidates(stem: str) -> list[str]:
    """:func:`gt_stem_candidates` of ``stem``, then of ``stem`` without an image extension."""
    out: list[str] = []
    for s in _without_image_ext(stem):
        out += [c for c in gt_stem_candidates(s) if c not in out]
    return out


def _base(stem: str, pred_suffix: str | None) -> str:
    return stem[: -len(pred_suffix)] if pred_suffix and stem.endswith(pred_suffix) else stem


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
    pairs, missing = collect_pairs(pred_dir, gt_dir, pred_suffix=pred_suffix)
    return pairs, missing.get('no_ground_truth', [])


def _find_uncertainty(unc: dict[str, str], stems: list[str]) -> str | None:
    for s in stems:
        for cand in (s, f'{s}_uncertainty', f'{s}_unc'):
            if cand in unc:
                return unc[cand]
    return None


def collect_pairs(
    pred_dir: str,
    gt_dir: str | None = None,
    input_dir: str | None = None,
    unc_dir: str | None = None,
    pred_suffix: str | None = None,
) -> tuple[list[ImagePair], dict[str, list[str]]]:
    """Pair every prediction with its ground truth, rainy input and uncertainty map, each folder optional.

    Ground truth is found by :func:`gt_stem_candidates`; inputs and uncertainty maps (``<name>``,
    ``<name>_uncertainty`` or ``<name>_unc``) by the prediction's own stem (after ``pred_suffix`` and a second
    image extension are stripped). Without ``gt_dir`` every prediction is kept.

    Returns:
        The pairs (natural order of names) and ``{kind: paths}`` of the images left alone, for the kinds of
        :data:`MISSING_KINDS` that apply (empty lists included): predictions without ground truth or input, and
        ground-truth or input images no prediction was paired with.
    """
    preds = _images(pred_dir)
    gts = _images(gt_dir) if gt_dir else {}
    inputs = _images(input_dir) if input_dir else {}
    uncs = _images(unc_dir) if unc_dir else {}
    missing: dict[str, list[str]] = {}
    if gt_dir:
        missing['no_ground_truth'], missing['no_prediction_for_ground_truth'] = [], []
    if input_dir:
        missing['no_input'], missing['no_prediction_for_input'] = [], []
    pairs, used_gt, used_input = [], set(), set()
    for stem, path in preds.items():
        base = _base(stem, pred_suffix)
        gt = inp = None
        if gt_dir:
            gt_stem = next((c for c in _candidates(base) if c in gts), None)
            if gt_stem is None:
                missing['no_ground_truth'].append(path)
                continue
            gt = gts[gt_stem]
            used_gt.add(gt_stem)
        own = _without_image_ext(base)
        if input_dir:
            in_stem = next((c for c in own if c in inputs), None)
            if in_stem is None:
                missing['no_input'].append(path)
            else:
                inp = inputs[in_stem]
                used_input.add(in_stem)
        pairs.append(ImagePair(stem, path, gt, inp, _find_uncertainty(uncs, [stem, *own])))
    if gt_dir:
        missing['no_prediction_for_ground_truth'] = [p for s, p in gts.items() if s not in used_gt]
    if input_dir:
        missing['no_prediction_for_input'] = [p for s, p in inputs.items() if s not in used_input]
    return pairs, missing


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------
def _metric_problem(metric: str, protocol: str, has_gt: bool, weights_dir: str | None) -> tuple[str, bool] | None:
    """``(reason, is an error)`` why ``metric`` cannot be computed (``None`` if it can).

    A metric that does not exist, or a full-reference metric without ground truth, is the user's error; a metric
    whose weight files are missing is merely unavailable.
    """
    try:
        protocols.check_metric(metric, protocol, weights_dir)
        reason = None
    except protocols.UnknownMetric as exc:
        return str(exc), True
    except protocols.MetricUnavailable as exc:
        reason = str(exc)
    if not has_gt and not protocols.is_no_reference(metric):  # a usage error, whether or not its weights are here
        return f'{metric} compares with ground truth: give --gt, or use a no-reference metric (niqe, piqe)', True
    return None if reason is None else (reason, False)


def _score(pair: ImagePair, metrics: list[str], protocol: str, weights_dir: str | None) -> dict[str, float]:
    pred = read_image(pair.pred)
    gt = read_image(pair.gt) if pair.gt else None
    scores = score_images(pred, gt, metrics, protocol, weights_dir)
    nr = [m for m in metrics if protocols.is_no_reference(m)]
    if pair.input and nr:
        before = score_images(read_image(pair.input), None, nr, protocol, weights_dir)
        for m in nr:
            scores[f'{m}_input'] = before[m]
            scores[f'{m}_change'] = scores[m] - before[m]
    nan = [c for c, v in scores.items() if math.isnan(v)]
    if nan:  # never a mean over a silently smaller set: the image is skipped, with the reason, and the run fails
        raise ValueError(f'{", ".join(nan)} is not a number (nan)')
    return scores


def evaluate(
    pairs: list[ImagePair],
    metrics: list[str],
    protocol: str = 'standard',
    workers: int = 1,
    progress: bool = True,
    weights_dir: str | None = None,
) -> Evaluation:
    """Score every pair with every metric (thread pool; cv2, numpy and torch release the GIL).

    Args:
        pairs: Pairs from :func:`collect_pairs` (or :func:`pair_images`).
        metrics: Metric names (``psnr``, ``ssim``, ``niqe``, any pyiqa name). Full-reference metrics need every
            pair to have ground truth; no-reference ones also score the pair's input when it has one.
        protocol: ``standard`` or ``official``.
        workers: Threads.
        progress: Show a tqdm bar.
        weights_dir: A folder of metric weight files, looked in before the torch hub cache.

    Returns:
        The :class:`Evaluation`; per-image failures are in ``errors`` (name -> reason), metrics that do not exist
        or lack ground truth in ``bad_metrics`` (and, with the reason, in ``unavailable``).
    """
    import torch
    from tqdm import tqdm

    ev = Evaluation(protocol, list(metrics), pairs=list(pairs))
    has_gt = bool(pairs) and all(p.gt for p in pairs)
    for m in metrics:
        problem = _metric_problem(m, protocol, has_gt, weights_dir)
        if problem is not None:
            ev.unavailable[m] = problem[0]
            if problem[1]:
                ev.bad_metrics.append(m)
    todo = ev.available
    results: dict[str, dict[str, float]] = {}
    workers = max(1, workers)
    threads = torch.get_num_threads()
    # One pool thread per core: torch's own intra-op threads on top would oversubscribe the CPU.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        _run(ev, pairs, todo, protocol, workers, progress, results, tqdm, weights_dir)
    finally:
        torch.set_num_threads(threads)
    for p in pairs:
        if p.name in results:
            ev.per_image[p.name] = results[p.name]
    return ev


def _run(ev, pairs, todo, protocol, workers, progress, results, tqdm, weights_dir) -> None:
    if todo:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_score, p, todo, protocol, weights_dir): p for p in pairs}
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


def _implementation(metric: str, protocol: str) -> str:
    if protocol == 'official':
        return 'UDR-S2Former test script (psnr_ssim.py)'
    if metric == protocols.BASICSR_NIQE:
        return protocols.BASICSR_NIQE_INFO
    return f'pyiqa {protocols._pyiqa_name(metric)}'


def _ranking_metric(ev: Evaluation) -> tuple[str, bool] | None:
    """Metric used to pick best/worst images and to plot: psnr if available, else the first column."""
    avail = [m for m in ev.columns if any(m in v for v in ev.per_image.values())]
    if not avail:
        return None
    m = 'psnr' if 'psnr' in avail else avail[0]
    return m, protocols.lower_is_better(_metric_of(m))


def _png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode('.png', img)
    if not ok:  # pragma: no cover
        raise ValueError('PNG encoding failed')
    return base64.b64encode(buf.tobytes()).decode('ascii')


def _plot_b64(ev: Evaluation, metric: str) -> tuple[str, int, int]:
    """The per-image bar plot as base64 PNG, with its width and height in pixels (fixed sizes keep the page's
    layout, and its #gallery anchor, steady while images load)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(ev.per_image)
    vals = [ev.per_image[n].get(metric, math.nan) for n in names]
    finite = [v for v in vals if math.isfinite(v)]
    size = (min(16, 4 + 0.12 * len(names)), 3.2)
    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.bar(range(len(names)), [v if math.isfinite(v) else 0 for v in vals], color='#4878a8')
    if finite:
        ax.axhline(float(np.mean(finite)), color='#c44e52', lw=1, label=f'mean {np.mean(finite):.3f}')
        ax.set_ylim(min(finite) - 0.05 * (max(finite) - min(finite) + 1e-9) - 0.5, max(finite) + 0.5)
        ax.legend(loc='lower right')
    better = 'lower' if protocols.lower_is_better(_metric_of(metric)) else 'higher'
    ax.set_ylabel(f'{metric} ({ev.protocol}, {better} is better)')
    ax.set_xlabel('image')
    step = max(1, len(names) // 20)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=60, ha='right', fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode('ascii'), round(size[0] * 100), round(size[1] * 100)


def _to_u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        return (img / 257.0).round().astype(np.uint8)
    if img.dtype.kind == 'f':
        return (np.clip(np.nan_to_num(img), 0, 1) * 255).round().astype(np.uint8)
    return img


def _crops(pair: ImagePair) -> list[tuple[str, str, int]]:
    """``[(label, base64 png, height shown)]``: input/output/GT/uncertainty crops at the window of largest error."""
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
    for label, path in (
        ('input', pair.input),
        ('output', pair.pred),
        ('ground truth', pair.gt),
        ('uncertainty', pair.uncertainty),
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
        panels.append((label, _png_b64(img[window]), round(ch * CROP_SHOWN / cw)))
    return panels


def _gallery_columns(ev: Evaluation) -> list[tuple[str, str]]:
    """``[(attribute of ImagePair, heading)]`` of the gallery, for the kinds of images the run has."""
    cols = [('input', 'rainy input')] if ev.with_input else []
    cols.append(('pred', 'derained'))
    if any(p.gt for p in ev.pairs):
        cols.append(('gt', 'ground truth'))
    if any(p.uncertainty for p in ev.pairs):
        cols.append(('uncertainty', 'uncertainty'))
    return cols


def _gallery_image(path: str, name: str, kind: str, out_dir: str) -> tuple[str, str, int]:
    """Copy (or convert to PNG) one image under ``out_dir/images``; return its relative link, a thumbnail
    (base64 JPEG) and the thumbnail's height."""
    ext = os.path.splitext(path)[1].lower()
    rel = f'images/{safe_key(name)}_{kind}{ext if ext in _BROWSER_EXTS else ".png"}'
    dst = os.path.join(out_dir, rel)
    img = _to_u8(read_image(path))
    if ext in _BROWSER_EXTS:
        shutil.copyfile(path, dst)
    elif not cv2.imwrite(dst, img):
        raise ValueError(f'cannot write {dst}')
    h, w = img.shape[:2]
    thumb = cv2.resize(img, (THUMB, max(1, round(h * THUMB / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode('.jpg', thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover
        raise ValueError('JPEG encoding failed')
    return rel, base64.b64encode(buf.tobytes()).decode('ascii'), thumb.shape[0]


def _gallery_html(ev: Evaluation, out_dir: str) -> list[str]:
    """One table row per image: a thumbnail per kind of image, each a link to the full image, and the scores."""
    import html

    esc = html.escape
    os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
    cols = _gallery_columns(ev)
    parts = [
        '<h2 id="gallery">Gallery</h2><p>Click a thumbnail for the full image.</p>'
        '<table class="gallery"><tr><th>image</th>'
        + ''.join(f'<th>{esc(h)}</th>' for _, h in cols)
        + '<th>scores</th></tr>'
    ]
    for pair in ev.pairs:
        cells = [f'<td>{esc(pair.name)}</td>']
        for kind, _ in cols:
            path = getattr(pair, kind)
            if path is None:
                cells.append('<td>-</td>')
                continue
            try:
                rel, b64, height = _gallery_image(path, pair.name, kind, out_dir)
            except Exception as exc:  # noqa: BLE001 - one unreadable image leaves one empty cell
                cells.append(f'<td class="err">{esc(f"{type(exc).__name__}: {exc}")}</td>')
                continue
            cells.append(
                f'<td><a href="{quote(rel)}"><img class="thumb" width="{THUMB}" height="{height}" '
                f'alt="{esc(kind)} {esc(pair.name)}" '
                f'src="data:image/jpeg;base64,{b64}"></a></td>'
            )
        if pair.name in ev.per_image:
            vals = ev.per_image[pair.name]
            scores = '<br>'.join(f'{esc(c)} {_fmt(vals[c], c)}' for c in ev.columns if c in vals)
        else:
            scores = f'<span class="err">skipped: {esc(ev.errors.get(pair.name, "not scored"))}</span>'
        cells.append(f'<td class="scores">{scores}</td>')
        parts.append('<tr>' + ''.join(cells) + '</tr>')
    parts.append('</table>')
    return parts


def _mean_rows(ev: Evaluation, mean: dict[str, float]) -> list[tuple[str, str, str, str, str, str]]:
    """``(metric, better, output, input, change, implementation)`` per requested metric."""
    rows = []
    for m in ev.metrics:
        if m in ev.unavailable:
            rows.append((m, '', 'unavailable', '', '', ''))
            continue
        better = 'lower' if protocols.lower_is_better(m) else 'higher'
        inp, change = (
            (_fmt(mean.get(f'{m}_input'), m), _fmt(mean.get(f'{m}_change'), m))
            if f'{m}_input' in ev.columns
            else ('', '')
        )
        rows.append((m, better, _fmt(mean.get(m), m), inp, change, _implementation(m, ev.protocol)))
    return rows


def _table_md(ev: Evaluation) -> list[str]:
    ms = ev.columns
    lines = ['| image | ' + ' | '.join(ms) + ' |', '|---|' + '---:|' * len(ms)]
    for name, vals in ev.per_image.items():
        lines.append(f'| {name} | ' + ' | '.join(_fmt(vals.get(m), m) for m in ms) + ' |')
    return lines


def _notes(ev: Evaluation, infinite: dict[str, int], allow_missing: bool) -> list[str]:
    notes = [f'- `{m}` unavailable: {r}' for m, r in ev.unavailable.items()]
    notes += [
        f'- `{m}`: {n} non-finite value(s) (inf: identical to the ground truth), left out of the mean'
        for m, n in infinite.items()
    ]
    notes += [f'- `{n}` skipped: {r}' for n, r in ev.errors.items()]
    for kind, paths in ev.missing.items():
        if paths:
            what = MISSING_KINDS[kind]
            state = 'allowed by --allow-missing' if allow_missing else 'an error (--allow-missing accepts it)'
            notes.append(f'- {len(paths)} {what}, {state}: ' + ', '.join(f'`{os.path.basename(p)}`' for p in paths))
    return notes


def _json_document(ev: Evaluation, reference: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        'protocol': ev.protocol,
        'reference': reference,
        'count': len(ev.per_image),
        'mean': {m: _json_value(v) for m, v in ev.mean.items()},
        'infinite': ev.infinite,
        'per_image': {n: {m: _json_value(v) for m, v in vals.items()} for n, vals in ev.per_image.items()},
        'unavailable': dict(ev.unavailable),
        'lower_better': ev.lower_better,
        'implementation': {m: _implementation(m, ev.protocol) for m in ev.available},
        'missing': {k: list(v) for k, v in ev.missing.items()},
        'missing_count': {k: len(v) for k, v in ev.missing.items()},
    }
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
        *['| ' + ' | '.join(r) + ' |' for r in _mean_rows(ev, ev.mean)],
        '',
    ]
    if notes:
        md += ['## Notes', '', *notes, '']
    md += ['## Per image', '', *_table_md(ev), '']
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(md))


def _best_and_worst_html(ev: Evaluation) -> list[str]:
    """The per-image plot of the ranking metric, then crops of the best and the worst image (full-reference)."""
    import html

    esc = html.escape
    ranking = _ranking_metric(ev)
    if ranking is None:
        return []
    metric, lower = ranking
    b64, width, height = _plot_b64(ev, metric)
    parts = [
        f'<h2>Per-image {esc(metric)}</h2>',
        f'<img alt="per-image {esc(metric)}" width="{width}" height="{height}" src="data:image/png;base64,{b64}">',
    ]
    scored = [(v[metric], n) for n, v in ev.per_image.items() if metric in v and not math.isnan(v[metric])]
    by_name = {p.name: p for p in ev.pairs}
    if not scored or protocols.is_no_reference(metric):
        return parts
    scored.sort(reverse=lower)
    worst, best = scored[0][1], scored[-1][1]
    for title, name in (('Best', best), ('Worst', worst)):
        pair = by_name.get(name)
        if pair is None or pair.gt is None:
            continue
        vals = ', '.join(f'{m} {_fmt(v, m)}' for m, v in ev.per_image[name].items())
        parts.append(f'<h2>{title}: {esc(name)} <small>({esc(vals)})</small></h2><div class="crops">')
        for label, b64, height in _crops(pair):
            parts.append(
                f'<figure><img class="crop" width="{CROP_SHOWN}" height="{height}" alt="{esc(label)}" '
                f'src="data:image/png;base64,{b64}">'
                f'<figcaption>{esc(label)}</figcaption></figure>'
            )
        parts.append('</div>')
    return parts


def write_html(ev: Evaluation, out_dir: str, reference: str, notes: list[str]) -> None:
    """``report.html`` (self-contained but for the gallery's full images, copied into ``out_dir/images/``)."""
    import html

    esc = html.escape
    cols = ev.columns
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Evaluation report</title><style>',
        'body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}',
        'td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}',
        '.crops{display:flex;gap:8px;flex-wrap:wrap}.crops figure{margin:0}img.crop{image-rendering:pixelated;'
        'width:240px;height:auto}figcaption{font-size:12px;text-align:center}img.thumb{width:240px;display:block}'
        '.gallery td{vertical-align:top;text-align:center}.gallery td.scores{text-align:left;font-size:13px}'
        '.err{color:#b00}</style></head><body>',
        '<h1>Evaluation report</h1>',
        f'<p>Protocol: <b>{esc(ev.protocol)}</b>; reference: {esc(reference)}; images: {len(ev.per_image)}</p>',
        '<table><tr><th>metric</th><th>better</th><th>output</th><th>input</th><th>change</th>'
        '<th>implementation</th></tr>',
        *['<tr>' + ''.join(f'<td>{esc(c)}</td>' for c in r) + '</tr>' for r in _mean_rows(ev, ev.mean)],
        '</table>',
    ]
    if notes:
        parts += ['<h2>Notes</h2><ul>', *[f'<li>{esc(n[2:])}</li>' for n in notes], '</ul>']
    parts += _best_and_worst_html(ev)
    parts += _gallery_html(ev, out_dir)
    parts.append('<h2>Per image</h2><table><tr><th>image</th>' + ''.join(f'<th>{esc(m)}</th>' for m in cols) + '</tr>')
    for name, vals in ev.per_image.items():
        parts.append(f'<tr><td>{esc(name)}</td>' + ''.join(f'<td>{_fmt(vals.get(m), m)}</td>' for m in cols) + '</tr>')
    parts.append('</table></body></html>\n')
    with open(os.path.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(parts))


def write_reports(ev: Evaluation, out_dir: str, allow_missing: bool = False) -> dict:
    """Write ``metrics.json``, ``metrics.csv``, ``report.md``, ``report.html`` and the gallery's ``images/``.

    Args:
        ev: The evaluation; its pairs give the input, ground-truth and uncertainty images shown.
        out_dir: Output folder (created).
        allow_missing: Whether missing images were accepted (said in the notes).

    Returns:
        The JSON document.
    """
    os.makedirs(out_dir, exist_ok=True)
    reference = 'ground truth' if any(p.gt for p in ev.pairs) else 'none (no-reference metrics)'
    notes = _notes(ev, ev.infinite, allow_missing)
    doc = _json_document(ev, reference)
    write_json(doc, os.path.join(out_dir, 'metrics.json'))
    write_csv(ev, os.path.join(out_dir, 'metrics.csv'))
    write_markdown(ev, os.path.join(out_dir, 'report.md'), reference, notes)
    write_html(ev, out_dir, reference, notes)
    return doc


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m s2former_plugin.report',
        description='Score restored images against ground truth, or with no-reference metrics when there is none.',
    )
    p.add_argument('--pred', required=True, help='folder of restored images')
    p.add_argument('--gt', help='folder of ground-truth images (without it: no-reference metrics only)')
    p.add_argument('--out', required=True, help='output folder for metrics.json/csv, report.md/html, images/')
    p.add_argument(
        '--metrics',
        help='comma-separated metric names (default: psnr,ssim with --gt, else the no-reference niqe,piqe)',
    )
    p.add_argument('--protocol', default='standard', choices=protocols.PROTOCOLS)
    p.add_argument('--input', help='folder of the degraded (rainy) inputs, paired by name: gallery and input scores')
    p.add_argument('--uncertainty', help='folder of uncertainty maps (default: PRED/uncertainty when it exists)')
    p.add_argument('--pred-suffix', help='suffix to strip from prediction names, e.g. _S2Former')
    p.add_argument('--weights-dir', help='folder of metric weight files (brisque, musiq, ...), before the torch cache')
    p.add_argument(
        '--allow-missing', action='store_true', help='accept images without their counterpart (still listed)'
    )
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), help='scoring threads')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def _check_folders(args: argparse.Namespace) -> None:
    dirs = {
        '--pred': args.pred,
        '--gt': args.gt,
        '--input': args.input,
        '--uncertainty': args.uncertainty,
        '--weights-dir': args.weights_dir,
    }
    for opt, path in dirs.items():
        if path is not None and not os.path.isdir(path):
            raise ReportError(f'{opt}: folder not found: {path}')
    outs = {os.path.realpath(args.out), os.path.realpath(os.path.join(args.out, 'images'))}
    for opt, path in dirs.items():
        if path is not None and os.path.realpath(path) in outs:
            raise ReportError(f'--out: {args.out} would write into the {opt} folder; choose another folder')


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors are one line on stderr).

    Status 2: nothing written (a folder is missing, nothing to score). Status 1: the report is written but something
    is wrong (an image skipped, an unknown metric, images without their counterpart and no ``--allow-missing``).
    """
    args = build_parser().parse_args(argv)
    try:
        _check_folders(args)
        default = 'psnr,ssim' if args.gt else ','.join(protocols.NR_DEFAULT_METRICS)
        metrics = [m.strip() for m in (args.metrics if args.metrics is not None else default).split(',') if m.strip()]
        if not metrics:
            raise ReportError('--metrics: no metric given')
        unc_dir = args.uncertainty
        if unc_dir is None and os.path.isdir(os.path.join(args.pred, 'uncertainty')):
            unc_dir = os.path.join(args.pred, 'uncertainty')  # where infer --save-uncertainty writes
        pairs, missing = collect_pairs(args.pred, args.gt, args.input, unc_dir, args.pred_suffix)
        if not pairs:
            where = f'matches an image in {args.gt} (by name)' if args.gt else 'is an image'
            raise ReportError(f'no prediction in {args.pred} {where}')
        ev = evaluate(pairs, metrics, args.protocol, args.workers, not args.no_progress, args.weights_dir)
        ev.missing = missing
        write_reports(ev, args.out, args.allow_missing)
    except ReportError as exc:
        print(f'report: error: {exc}', file=sys.stderr)
        return 2
    mean = ev.mean
    print(
        f'{len(ev.per_image)} images, {args.protocol} protocol: '
        + ', '.join(f'{m} {_fmt(v, m)}' for m, v in mean.items())
        + ''.join(f'; {m} unavailable' for m in ev.unavailable if m not in ev.bad_metrics)
        + f' -> {args.out}'
    )
    status = 0
    if not ev.available:
        print(f'report: error: --metrics: none of {", ".join(metrics)} can be computed here', file=sys.stderr)
        status = 1
    for m in ev.bad_metrics:
        print(f'report: error: --metrics: {ev.unavailable[m]}', file=sys.stderr)
        status = 1
    for name, reason in ev.errors.items():
        print(f'report: skipped {name}: {reason}', file=sys.stderr)
        status = 1
    n_missing = {k: len(v) for k, v in missing.items() if v}
    if n_missing and not args.allow_missing:
        counts = ', '.join(f'{n} {MISSING_KINDS[k]}' for k, n in n_missing.items())
        print(f'report: error: {counts} (listed in metrics.json; --allow-missing accepts them)', file=sys.stderr)
        status = 1
    return status


if __name__ == '__main__':
    raise SystemExit(main())
