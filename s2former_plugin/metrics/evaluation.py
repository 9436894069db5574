"""Scoring paired images with the metrics of :mod:`.protocols`: one :class:`Evaluation` per run.

A thread pool scores the pairs (cv2, numpy and torch release the GIL); an image that cannot be scored is named with
its reason in ``Evaluation.errors``, never silently left out of a mean.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from . import protocols
from .pairing import ImagePair
from .scoring import finite_mean, read_image, score_images

__all__ = ['Evaluation', 'evaluate', 'metric_of']


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
        return {c: protocols.lower_is_better(metric_of(c)) for c in self.columns}

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


def metric_of(column: str) -> str:
    for suffix in ('_input', '_change'):
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


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
