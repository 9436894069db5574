"""The report's ``report.html``: summary, per-image plot, crops of the best and worst image, and a gallery."""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
from urllib.parse import quote

import cv2
import numpy as np

from .. import imageio
from ..data.layouts import safe_key
from ..metrics import protocols
from ..metrics.evaluation import Evaluation, metric_of
from ..metrics.pairing import ImagePair
from ..metrics.scoring import read_image
from .tables import fmt, mean_rows

__all__ = ['write_html']


CROP = 160


CROP_SHOWN = 240  # displayed crop width (pixelated zoom)


THUMB = 240  # gallery thumbnail width


# Formats browsers show: copied as they are into the gallery; others (TIFF, PPM...) are converted to PNG.
_BROWSER_EXTS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')


def _ranking_metric(ev: Evaluation) -> tuple[str, bool] | None:
    """Metric used to pick best/worst images and to plot: psnr if available, else the first column."""
    avail = [m for m in ev.columns if any(m in v for v in ev.per_image.values())]
    if not avail:
        return None
    m = 'psnr' if 'psnr' in avail else avail[0]
    return m, protocols.lower_is_better(metric_of(m))


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
    better = 'lower' if protocols.lower_is_better(metric_of(metric)) else 'higher'
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
    else:
        imageio.write(dst, img)
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
            scores = '<br>'.join(f'{esc(c)} {fmt(vals[c], c)}' for c in ev.columns if c in vals)
        else:
            scores = f'<span class="err">skipped: {esc(ev.errors.get(pair.name, "not scored"))}</span>'
        cells.append(f'<td class="scores">{scores}</td>')
        parts.append('<tr>' + ''.join(cells) + '</tr>')
    parts.append('</table>')
    return parts


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
        vals = ', '.join(f'{m} {fmt(v, m)}' for m, v in ev.per_image[name].items())
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
        *['<tr>' + ''.join(f'<td>{esc(c)}</td>' for c in r) + '</tr>' for r in mean_rows(ev, ev.mean)],
        '</table>',
    ]
    if notes:
        parts += ['<h2>Notes</h2><ul>', *[f'<li>{esc(n[2:])}</li>' for n in notes], '</ul>']
    parts += _best_and_worst_html(ev)
    parts += _gallery_html(ev, out_dir)
    parts.append('<h2>Per image</h2><table><tr><th>image</th>' + ''.join(f'<th>{esc(m)}</th>' for m in cols) + '</tr>')
    for name, vals in ev.per_image.items():
        parts.append(f'<tr><td>{esc(name)}</td>' + ''.join(f'<td>{fmt(vals.get(m), m)}</td>' for m in cols) + '</tr>')
    parts.append('</table></body></html>\n')
    with open(os.path.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(parts))
