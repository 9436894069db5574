"""Scoring one image: reading it as the metrics expect, computing metrics, and averaging scores honestly.

The one scoring path of ``report`` and of the benchmark's evaluation: same reading, same metrics, same means.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .. import imageio
from . import protocols

__all__ = ['finite_mean', 'read_image', 'score_images']


def finite_mean(values: list[float]) -> tuple[float, int]:
    """Mean of the finite values and the number of ``+inf`` ones (an image identical to its ground truth).

    One identical image would make the plain mean ``inf``; it is left out and counted instead. When every value is
    ``+inf`` the mean is ``inf``. NaN and ``-inf`` are never dropped from a mean: they raise.

    Raises:
        ValueError: A value is NaN or ``-inf`` (a failed score; the caller must refuse or skip the image loudly).
    """
    bad = [v for v in values if math.isnan(v) or v == -math.inf]
    if bad:
        raise ValueError(f'{len(bad)} of {len(values)} scores are NaN or -inf; refusing to average around them')
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (math.inf if values else math.nan), len(values)
    return float(np.mean(finite)), len(values) - len(finite)


def read_image(path: str) -> np.ndarray:
    """``H x W x 3`` BGR image: ``uint8``, ``uint16`` or ``float32`` (0-1, e.g. the float TIFFs infer writes; float64
    is converted); grayscale is expanded, alpha dropped. Scores take each image's own scale (255, 65535 or 1).
    """
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


def score_images(
    pred: np.ndarray,
    gt: np.ndarray | None,
    metrics: list[str],
    protocol: str,
    weights_dir: str | None = None,
) -> dict[str, float]:
    """``{metric: value}`` of one prediction (against its ground truth), images as :func:`read_image` returns them.

    No-reference metrics score ``pred`` alone; ``gt`` may be ``None`` when every metric is one.

    Raises:
        ValueError: the sizes differ, or a full-reference metric has no ground truth.
        protocols.MetricUnavailable: a metric cannot be computed here.
    """
    full_ref = [m for m in metrics if not protocols.is_no_reference(m)]
    if full_ref and gt is None:
        raise ValueError(f'{", ".join(full_ref)} need(s) ground truth')
    if full_ref and pred.shape != gt.shape:
        raise ValueError(f'size {pred.shape[1]}x{pred.shape[0]} differs from ground truth {gt.shape[1]}x{gt.shape[0]}')
    luma = [m for m in full_ref if m in LUMA_METRICS]
    if luma and _colourless(pred) and not _colourless(gt, COLOUR_SPREAD):
        raise ValueError(
            f'the prediction has no colour (R = G = B) but its ground truth has: Y-channel {", ".join(luma)} '
            'cannot see the missing colour'
        )
    opts = {'weights_dir': weights_dir} if weights_dir and protocol == 'standard' else {}
    scores = {m: protocols.compute(m, pred, None if m not in full_ref else gt, protocol, **opts) for m in metrics}
    if 'psnr' in scores and np.array_equal(pred, gt):
        # pyiqa adds 1e-8 to the MSE: an identical image would enter the mean as 80 dB. It is inf, as the official
        # protocol says, counted apart by finite_mean.
        scores['psnr'] = math.inf
    return scores


#: Full-reference metrics the protocols compute on the Y (luma) channel: blind to colour.
LUMA_METRICS = ('psnr', 'ssim')
#: Mean per-pixel channel spread (max - min, as a fraction of white) below which an image counts as colourless, and
#: above which a ground truth counts as coloured.
GREY_SPREAD, COLOUR_SPREAD = 0.25 / 255, 2 / 255


def _colourless(img: np.ndarray, threshold: float = GREY_SPREAD) -> bool:
    """Whether ``img``'s channels are (nearly) equal: its mean max - min channel spread is below ``threshold``."""
    scale = 1.0 if img.dtype.kind == 'f' else float(np.iinfo(img.dtype).max)
    spread = img.max(axis=2).astype(np.float32) - img.min(axis=2).astype(np.float32)
    return float(spread.mean()) / scale < threshold
