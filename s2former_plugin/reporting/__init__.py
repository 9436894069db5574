"""Writers of the evaluation report (``python -m s2former_plugin.report``): JSON, CSV, Markdown and HTML."""

from __future__ import annotations

import os

from ..metrics.evaluation import Evaluation
from .html import write_html
from .tables import json_document, notes, write_csv, write_json, write_markdown

#: The files and folders a report writes into its ``--out`` folder.
REPORT_FILES = ['metrics.json', 'metrics.csv', 'report.md', 'report.html', 'images']

__all__ = ['REPORT_FILES', 'write_reports', 'write_json', 'write_csv', 'write_markdown', 'write_html']


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
    notes_ = notes(ev, ev.infinite, allow_missing)
    doc = json_document(ev, reference)
    write_json(doc, os.path.join(out_dir, 'metrics.json'))
    write_csv(ev, os.path.join(out_dir, 'metrics.csv'))
    write_markdown(ev, os.path.join(out_dir, 'report.md'), reference, notes_)
    write_html(ev, out_dir, reference, notes_)
    return doc
