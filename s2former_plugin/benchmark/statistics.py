"""The benchmark's statistics: spread over seeds and a paired, seeded bootstrap of per-image differences.

Two questions, two tools:

* *How much does one arch vary with the seed?* :func:`mean_std` of the per-seed test means (sample standard
  deviation, ``n - 1`` in the denominator).
* *Is arch A better than the reference on these test images?* :func:`paired_comparison`: per test image, the
  seeds' scores are averaged first (one number per arch and image), the difference ``A - reference`` is taken
  image by image, and the mean difference gets a percentile bootstrap interval over images (images resampled
  with replacement; seeds are not resampled). The interval answers for this test set and these seeds; it
  ``ties`` when it holds 0.

The bootstrap is deterministic: the resampling indices come from ``numpy.random.default_rng(seed)``.
:func:`summarise` asks both questions of every arch's runs: the per-arch summaries the report's table is made of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from s2former_plugin.errors import S2FormerError

from .options import BenchmarkError

#: Defaults of the ``bootstrap:`` options.
RESAMPLES = 10000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


class StatisticsError(S2FormerError, ValueError):
    """Scores that cannot be compared (missing images, too few values); ``str()`` is one line."""


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``; the deviation is ``None`` for one value.

    Raises:
        StatisticsError: No values, or a non-finite one.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise StatisticsError('mean_std: no values')
    if not all(math.isfinite(v) for v in vals):
        raise StatisticsError(f'mean_std: non-finite value in {vals}')
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` indices in ``[0, n)`` drawn with replacement from ``numpy.random.default_rng(seed)``."""
    if n < 1 or resamples < 1:
        raise StatisticsError(f'bootstrap: need at least one value and one resample (got n={n}, {resamples})')
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(stats: Sequence[float] | np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of ``stats``: its ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles.

    Quantiles by linear interpolation between order statistics (numpy's default, the ``R-7`` rule): the ``q``
    quantile of ``m`` sorted values is ``s[j] + f * (s[j + 1] - s[j])`` with ``j + f = q * (m - 1)``.
    """
    if not 0 < confidence < 1:
        raise StatisticsError(f'bootstrap:confidence: must be between 0 and 1 (got {confidence!r})')
    arr = np.asarray(stats, dtype=np.float64)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(arr, [tail, 1 - tail])
    return float(lo), float(hi)


def bootstrap_mean_interval(
    diffs: Sequence[float], resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``: the means of ``resamples`` resamples (indices from
    :func:`bootstrap_indices`), then :func:`percentile_interval`."""
    arr = np.asarray(diffs, dtype=np.float64)
    idx = bootstrap_indices(len(arr), resamples, seed)
    return percentile_interval(arr[idx].mean(axis=1), confidence)


def per_image_means(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per image key, the mean of its scores over the runs (seeds); every run must score the same images.

    Raises:
        StatisticsError: No runs, or runs that scored different image sets.
    """
    if not runs:
        raise StatisticsError('per-image scores: no runs')
    keys = set(runs[0])
    for run in runs[1:]:
        if set(run) != keys:
            odd = sorted(keys ^ set(run))
            raise StatisticsError(f'per-image scores: the seeds scored different images (first difference: {odd[0]})')
    return {k: sum(float(run[k]) for run in runs) / len(runs) for k in sorted(keys)}


def paired_comparison(
    runs: Sequence[Mapping[str, float]],
    reference_runs: Sequence[Mapping[str, float]],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Paired per-image comparison of an arch with the reference (seeds averaged per image, images resampled).

    Args:
        runs: Per seed of the arch, ``{image key: score}``.
        reference_runs: The same for the reference arch (the seed counts may differ).
        resamples, confidence, seed: The bootstrap's (:func:`bootstrap_mean_interval`).

    Returns:
        ``{'mean_diff', 'low', 'high', 'verdict', 'images', 'dropped', 'confidence', 'resamples'}``;
        ``verdict`` is ``'better'`` (interval above 0), ``'worse'`` (below 0) or ``'tie'`` (holds 0). Images where
        either arch's seed-mean is not finite (an exact reproduction scores infinite PSNR) are left out and counted
        in ``dropped``.

    Raises:
        StatisticsError: The two archs scored different images, or no image is left.
    """
    mine, ref = per_image_means(runs), per_image_means(reference_runs)
    if set(mine) != set(ref):
        odd = sorted(set(mine) ^ set(ref))
        raise StatisticsError(f'paired comparison: the archs scored different images (first difference: {odd[0]})')
    keys = [k for k in mine if math.isfinite(mine[k]) and math.isfinite(ref[k])]
    if not keys:
        raise StatisticsError('paired comparison: no image with finite scores for both archs')
    diffs = [mine[k] - ref[k] for k in keys]
    low, high = bootstrap_mean_interval(diffs, resamples, confidence, seed)
    verdict = 'better' if low > 0 else 'worse' if high < 0 else 'tie'
    return {
        'mean_diff': sum(diffs) / len(diffs),
        'low': low,
        'high': high,
        'verdict': verdict,
        'images': len(keys),
        'dropped': len(mine) - len(keys),
        'confidence': confidence,
        'resamples': resamples,
    }


def _scores(run: dict, metric: str) -> dict[str, float]:
    return {k: float(v) for k, v in run['per_image'][metric].items()}


def summarise(opt: dict, runs: dict[str, list[dict]], speed: dict, batches: dict, reference: str) -> list[dict]:
    """One summary per arch: speed, mean ± std over seeds, and the paired comparison with ``reference``.

    Args:
        opt: Benchmark options (``archs``, ``eval:metrics``, ``bootstrap``).
        runs: ``{arch: [run]}``, each run with its ``metrics`` (test means) and ``per_image`` scores.
        speed: ``{arch: {params, speed, macs@S, ...}}`` (:func:`.driver.evaluate_all`).
        batches: ``{seed: comparison}`` of the batch records (:func:`.driver.check_batches`).
        reference: The arch the others are compared with.

    Raises:
        BenchmarkError: a metric is not finite for a run, or the archs scored different images.
    """
    bs = opt['bootstrap']
    summaries = []
    for entry in opt['archs']:
        name = entry['name']
        arch_runs = runs[name]
        metrics = {}
        for m in opt['eval']['metrics']:
            per_seed = [r['metrics'][m] for r in arch_runs]
            finite = [v for v in per_seed if isinstance(v, int | float)]
            if len(finite) != len(per_seed):
                raise BenchmarkError(f'archs:{name}: {m} is not finite for a run; one table cannot average it')
            mean, std = mean_std(finite)
            metrics[m] = {'mean': mean, 'std': std, 'per_seed': per_seed}
        comparisons = {}
        if name != reference:
            for m in opt['eval']['metrics']:
                try:
                    comparisons[m] = paired_comparison(
                        [_scores(r, m) for r in arch_runs],
                        [_scores(r, m) for r in runs[reference]],
                        bs['resamples'],
                        bs['confidence'],
                        bs['seed'],
                    )
                except StatisticsError as err:
                    raise BenchmarkError(f'archs:{name}: {err}') from None
        trained = not entry.get('checkpoint')
        same = all(c['same'] for c in batches.values()) if trained else None
        summaries.append({
            'name': name,
            'network_g': entry['network_g'],
            **{k: v for k, v in speed[name].items()},
            'seeds': [r['train'].get('seed') for r in arch_runs] if trained else [],
            'test_images': arch_runs[0]['test_images'],
            'metrics': metrics,
            'vs_reference': comparisons or None,
            'same_batches': same,
            'train': {
                'total_iter': arch_runs[0]['train'].get('total_iter'),
                'minutes': [r['train'].get('minutes') for r in arch_runs] if trained else [],
                'curves': arch_runs[0]['train'].get('curves') or {},
                'losses': arch_runs[0]['train'].get('losses'),
                'model_type': arch_runs[0]['train'].get('model_type'),
            },
            'data': arch_runs[0].get('data'),
        })  # fmt: skip
    return summaries
