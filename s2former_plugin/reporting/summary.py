"""The report command's console output: one line of means, then one line per note and per problem."""

from __future__ import annotations

import sys

from ..metrics.evaluation import Evaluation
from ..metrics.pairing import MISSING_KINDS, shared_ground_truth
from .tables import fmt

__all__ = ['print_summary']


def print_summary(
    ev: Evaluation, metrics: list[str], missing: dict[str, list[str]], protocol: str, out: str, allow_missing: bool
) -> int:
    """Print the means (stdout) and every problem (stderr), one line each.

    Args:
        ev: The folder's :class:`~s2former_plugin.metrics.evaluation.Evaluation`.
        metrics: The metrics asked for.
        missing: ``{kind: paths}`` of images without their counterpart (:data:`.pairing.MISSING_KINDS`).
        protocol: The metrics protocol, named in the line of means.
        out: The report folder, named in the line of means.
        allow_missing: Images without their counterpart are accepted (``--allow-missing``).

    Returns:
        The exit status: 1 if an image was skipped, a metric could not be computed, or images lack their
        counterpart without ``allow_missing``; else 0.
    """
    print(
        f'{len(ev.per_image)} images, {protocol} protocol: '
        + ', '.join(f'{m} {fmt(v, m)}' for m, v in ev.mean.items())
        + ''.join(f'; {m} unavailable' for m in ev.unavailable if m not in ev.bad_metrics)
        + f' -> {out}'
    )
    for m, n in ev.infinite.items():
        print(f'report: note: {m}: {n} image(s) identical to the ground truth (inf), left out of the mean')
    shared = shared_ground_truth(ev.pairs)
    if shared:
        n = sum(len(v) for v in shared.values())
        print(f'report: note: {n} predictions share {len(shared)} ground-truth image(s) (--allow-shared-gt)')
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
    if n_missing and not allow_missing:
        counts = ', '.join(f'{n} {MISSING_KINDS[k]}' for k, n in n_missing.items())
        print(f'report: error: {counts} (listed in metrics.json; --allow-missing accepts them)', file=sys.stderr)
        status = 1
    return status
