"""The files of the uncertainty measures (:mod:`..metrics.uncertainty_eval`): the report's section (added to
``metrics.json``, ``uncertainty.csv`` and a sparsification plot shown in ``report.html``), and the CSV and plot
writers it uses.
"""

from __future__ import annotations

import json
import math
import os

from ..metrics.uncertainty_eval import UncertaintyEvaluation
from .tables import write_json

__all__ = ['PLOT', 'plot_curves', 'write_csv', 'write_uncertainty']

PLOT = 'uncertainty_sparsification.png'


def write_uncertainty(ev: UncertaintyEvaluation, out_dir: str) -> None:
    """Add ``ev`` to the report already in ``out_dir``: ``metrics.json['uncertainty']``, ``uncertainty.csv``, the plot
    (embedded in ``report.html`` before its gallery)."""
    path = os.path.join(out_dir, 'metrics.json')
    with open(path, encoding='utf-8') as f:
        doc = json.load(f)
    doc['uncertainty'] = ev.summary()
    write_json(doc, path)
    write_csv(ev, os.path.join(out_dir, 'uncertainty.csv'))
    if ev.per_image:
        plot_curves(ev, os.path.join(out_dir, PLOT))
        html = os.path.join(out_dir, 'report.html')
        with open(html, encoding='utf-8') as f:
            page = f.read()
        section = (
            f'<h2>Uncertainty</h2><p>{ev.line()}</p><img alt="sparsification curves" src="{PLOT}">\n<h2 id="gallery">'
        )
        with open(html, 'w', encoding='utf-8') as f:
            f.write(page.replace('<h2 id="gallery">', section, 1))


def write_csv(ev: UncertaintyEvaluation, path: str) -> None:
    """One row per scored image, then the mean row (``mean`` when complete, else ``mean of N scored of M``), then
    one ``refused`` row per error with its reason."""
    import csv

    cols = ev.columns
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['image', *cols, 'note'])
        for name, row in ev.per_image.items():
            w.writerow([name, *(_fmt(row.get(c)) for c in cols), ''])
        if ev.per_image:
            means = ev.mean()
            label = 'mean' if ev.complete else f'mean of {len(ev.per_image)} scored of {ev.n_images}'
            w.writerow([label, *(_fmt(means.get(c)) for c in cols), ''])
        for name, reason in ev.errors.items():
            w.writerow([name, *([''] * len(cols)), f'refused: {reason}'])


def _fmt(v: float | None) -> str:
    return '' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.6f}'


def plot_curves(evaluations: UncertaintyEvaluation | dict[str, UncertaintyEvaluation], path: str) -> None:
    """Draw the mean sparsification curves into a PNG: per evaluation its own curve (solid), its oracle (dashed)
    and the random order (dotted), mean error of the kept pixels against the fraction removed.

    Args:
        evaluations: One evaluation, or ``{label: evaluation}`` to compare (e.g. a net, an untrained net, a
            baseline map); a label gets ``(N of M scored)`` when its set is incomplete.
        path: The PNG to write.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if isinstance(evaluations, UncertaintyEvaluation):
        evaluations = {'uncertainty': evaluations}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for i, (label, ev) in enumerate(evaluations.items()):
        curves = ev.mean_curves()
        if not curves:
            continue
        colour = f'C{i}'
        if not ev.complete:
            label = f'{label} ({len(ev.per_image)} of {ev.n_images} scored)'
        means = ev.mean()
        ax.plot(curves['fractions'], curves['ours'], '-', color=colour, label=f'{label} (AUSE {means["ause"]:.4f})')
        ax.plot(curves['fractions'], curves['oracle'], '--', color=colour, alpha=0.7, label=f'{label}: oracle')
        ax.plot(curves['fractions'], curves['random'], ':', color=colour, alpha=0.7, label=f'{label}: random')
    ax.set_xlabel('fraction of pixels removed (most uncertain first)')
    ax.set_ylabel('mean |Y error| of the kept pixels (0-1)')
    ax.set_title('Sparsification')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
