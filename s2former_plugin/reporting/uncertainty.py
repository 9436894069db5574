"""The report's uncertainty section: the measures of :mod:`..metrics.uncertainty_eval` added to ``metrics.json``,
``uncertainty.csv`` and a sparsification plot shown in ``report.html``."""

from __future__ import annotations

import json
import os

from ..metrics.uncertainty_eval import UncertaintyEvaluation, plot_curves, write_csv
from .tables import write_json

__all__ = ['PLOT', 'write_uncertainty']

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
