"""How well an uncertainty map points at the errors and at the rain: per-image measures on plain arrays.

The network's uncertainty heads (``archs/s2former_blocks.UncertaintyHead``, ``elu(conv(elu(conv(x))))``, one per
scale) are trained only through the uncertainty-driven loss, ``mean(|y - gt| * exp(-u)) + 2 * mean(u)``: a pixel
whose error the net expects to be large can buy a smaller weight ``exp(-u)`` at the price ``2u``. The loss is
smallest at ``u = log(|y - gt| / 2)``, so a well-trained map is a monotone function of the expected error (held at
``-1`` from below by the ELU). The measures below test exactly that ordering, and how well the map finds rain:

* :func:`spearman`: Spearman rank correlation between uncertainty and per-pixel error (average ranks for ties);
* :func:`sparsification_curve`, :func:`oracle_curve`, :func:`random_curve`: mean error of the pixels kept when the
  most uncertain (or the truly worst, or random) pixels are removed fraction by fraction; :func:`ause` (area
  between ours and the oracle: 0 is perfect) and :func:`aurg` (area between random and ours: > 0 beats chance);
* :func:`auroc`, :func:`average_precision`: the map as a per-pixel rain detector, where a rain mask is known.
* :func:`spread`: how far apart the map's values are (a flat map's rankings rest on tiny differences).

Errors are ``|Y(output) - Y(gt)|`` on the 0-1 scale, with the Y channel of :mod:`.protocols` (``standard``: the
BT.601 Y of pyiqa's ``psnr``/``ssim``; ``official``: the official script's R/B-swapped Y), after the same border
crop. A 3-channel map is averaged over its channels (the per-colour maps the heads give).

Bad input (another size, NaN/inf, a constant map or error, a mask of one class) raises :class:`UncertaintyError`
with one line naming the image; nothing is quietly dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import S2FormerError

__all__ = [
    'DEFAULT_SCALE',
    'DEFAULT_STEPS',
    'SCALES',
    'UncertaintyError',
    'UncertaintyScores',
    'auroc',
    'aurg',
    'ause',
    'average_precision',
    'average_ranks',
    'blur_residual_map',
    'error_map',
    'fractions',
    'oracle_curve',
    'pixel_map',
    'random_curve',
    'score_uncertainty',
    'sparsification_curve',
    'spearman',
    'spread',
]

#: The five maps of ``S2Former(x, return_all=True)``, in the network's (official) order: ``final`` (after the
#: refinement), ``full`` (the last decoder stage, full size), then the decoder's 1/2, 1/4 and 1/8 scales.
SCALES = ('final', 'full', 'half', 'quarter', 'eighth')
#: The scale scored by default: the final map, at the output's size (the one ``infer`` colour-maps).
DEFAULT_SCALE = 'final'
#: Sparsification steps: removed fractions 0, 1/20, ..., 19/20.
DEFAULT_STEPS = 20


class UncertaintyError(S2FormerError, ValueError):
    """An uncertainty map, image or mask that cannot be scored; the one-line message names the file."""


def _where(name: str) -> str:
    return f'{name}: ' if name else ''


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------
def pixel_map(uncertainty: Any, name: str = '') -> np.ndarray:
    """One value per pixel: ``H x W`` float64 from an ``H x W`` map or a ``C x H x W`` one (channel mean).

    Args:
        uncertainty: ``H x W`` or ``C x H x W`` (the network's layout, as the raw ``.npz`` files store it) array
            or tensor.
        name: What to call the map in messages.

    Raises:
        UncertaintyError: another number of dimensions, or NaN/inf values.
    """
    if hasattr(uncertainty, 'detach'):
        uncertainty = uncertainty.detach().cpu().double().numpy()
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim == 3:
        u = u.mean(axis=0)
    if u.ndim != 2:
        raise UncertaintyError(f'{_where(name)}uncertainty map must be H x W or C x H x W, got shape {u.shape}')
    bad = int(u.size - np.count_nonzero(np.isfinite(u)))
    if bad:
        raise UncertaintyError(f'{_where(name)}uncertainty map holds {bad} NaN/inf values')
    return u


def _crop(a: np.ndarray, crop_border: int) -> np.ndarray:
    return a[crop_border:-crop_border, crop_border:-crop_border] if crop_border else a


def error_map(
    pred: Any, gt: Any, protocol: str = 'standard', crop_border: int = 0, channel_order: str = 'bgr', name: str = ''
) -> np.ndarray:
    """Per-pixel ``|Y(pred) - Y(gt)|`` (``H x W`` float64, 0-1 scale) with the Y channel of :mod:`.protocols`.

    Args:
        pred: The restored image (numpy ``H x W x C`` in ``channel_order``, uint8/uint16/float, or an RGB tensor).
        gt: Its ground truth, same size.
        protocol: ``standard`` (BT.601 Y as pyiqa's ``psnr``/``ssim`` compute it, images clamped to [0, 1]) or
            ``official`` (the official test script's Y, R/B-swapped weights, no clamp).
        crop_border: Pixels cut from each side (as pyiqa's ``crop_border``; the official protocol has none).
        channel_order: Channel order of numpy inputs.
        name: What to call the image in messages.

    Raises:
        UncertaintyError: sizes differ, an image holds NaN/inf, or the protocol is unknown.
    """
    from . import protocols

    if protocol not in protocols.PROTOCOLS:
        raise UncertaintyError(f'protocol: {protocol!r} is not one of {", ".join(protocols.PROTOCOLS)}')
    if protocol == 'official' and crop_border:
        raise UncertaintyError('crop_border: the official protocol crops nothing')
    try:
        x = protocols.to_rgb_tensor(pred, channel_order, clamp=protocol == 'standard')
        y = protocols.to_rgb_tensor(gt, channel_order, clamp=protocol == 'standard')
    except (ValueError, TypeError) as exc:  # NonFiniteImage is a ValueError
        raise UncertaintyError(f'{_where(name)}{exc}') from None
    if x.shape != y.shape:
        raise UncertaintyError(
            f'{_where(name)}size {x.shape[-1]}x{x.shape[-2]} differs from ground truth {y.shape[-1]}x{y.shape[-2]}'
        )
    if x.shape[1] == 1:
        ya, yb = x[0, 0].numpy(), y[0, 0].numpy()
    elif protocol == 'standard':
        from pyiqa.utils.color_util import to_y_channel  # what pyiqa's psnr/ssim call with test_y_channel

        ya, yb = (to_y_channel(t, 1.0, 'ycbcr')[0, 0].numpy() for t in (x, y))
    else:
        ya, yb = (protocols.official_y(t[0].permute(1, 2, 0).numpy() * 255.0)[..., 0] / 255.0 for t in (x, y))
    return _crop(np.abs(ya.astype(np.float64) - yb.astype(np.float64)), crop_border)


def _check_pair(u: np.ndarray, e: np.ndarray, name: str, what: str = 'error map') -> None:
    if u.shape != e.shape:
        raise UncertaintyError(
            f'{_where(name)}uncertainty map is {u.shape[1]}x{u.shape[0]}, the {what} {e.shape[1]}x{e.shape[0]}'
        )
    if u.size == 0:
        raise UncertaintyError(f'{_where(name)}no pixels to score')


def blur_residual_map(rainy: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """A trivial uncertainty baseline: ``|rainy - GaussianBlur(rainy, sigma)|``, channel mean, ``H x W`` float64.

    Thin bright streaks and drop rims stand out of their blurred copy, so this finds rain (and edges) without any
    learning; a learned map should beat it.

    Args:
        rainy: The rainy input, ``H x W x C`` or ``H x W``, uint8/uint16/float.
        sigma: Gaussian standard deviation in pixels.
    """
    import cv2

    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(rainy.dtype, 1.0)
    x = np.asarray(rainy, dtype=np.float64) / scale
    r = np.abs(x - cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT101))
    return r.mean(axis=2) if r.ndim == 3 else r


# ----------------------------------------------------------------------------------------------------------------
# Rank correlation
# ----------------------------------------------------------------------------------------------------------------
def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of the flattened ``values``; tied values share the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based position of each distinct value's first copy
    return (first + (counts + 1) / 2.0)[inverse.ravel()]


def spearman(uncertainty: np.ndarray, error: np.ndarray, name: str = '') -> float:
    """Spearman's rho: the Pearson correlation of the average ranks of ``uncertainty`` and ``error``.

    Raises:
        UncertaintyError: sizes differ, or either is constant (the correlation is undefined).
    """
    u, e = np.asarray(uncertainty, np.float64), np.asarray(error, np.float64)
    _check_pair(u, e, name)
    for what, a in (('uncertainty map', u), ('error map', e)):
        if np.all(a == a.flat[0]):
            raise UncertaintyError(f'{_where(name)}the {what} is constant: rank correlation is undefined')
    ru, re = average_ranks(u), average_ranks(e)
    ru -= ru.mean()
    re -= re.mean()
    return float(np.dot(ru, re) / np.sqrt(np.dot(ru, ru) * np.dot(re, re)))


def spread(uncertainty: np.ndarray) -> float:
    """The 99th minus the 1st percentile of the map's values (in the map's own units).

    Not a quality measure: it says how far apart the map's values are. Near 0 the map is almost flat (e.g. held
    on the ELU's floor of -1) and every ranking measure rests on differences that small.
    """
    lo, hi = np.percentile(np.asarray(uncertainty, np.float64), [1, 99])
    return float(hi - lo)


# ----------------------------------------------------------------------------------------------------------------
# Sparsification
# ----------------------------------------------------------------------------------------------------------------
def fractions(steps: int = DEFAULT_STEPS) -> np.ndarray:
    """Removed fractions ``0, 1/steps, ..., (steps - 1)/steps`` (the last point keeps ``1/steps`` of the pixels)."""
    if steps < 1:
        raise UncertaintyError(f'steps: must be >= 1, got {steps}')
    return np.arange(steps, dtype=np.float64) / steps


def _kept_means(sorted_errors: np.ndarray, fracs: np.ndarray) -> np.ndarray:
    """Mean of ``sorted_errors[r:]`` with ``r = round(f * n)`` removed, for each fraction ``f``."""
    n = sorted_errors.size
    tail = np.concatenate([np.cumsum(sorted_errors[::-1])[::-1], [0.0]])  # tail[r] = sum(sorted_errors[r:])
    removed = np.minimum(np.rint(fracs * n).astype(np.int64), n - 1)  # always keep one pixel
    return tail[removed] / (n - removed)


def sparsification_curve(
    uncertainty: np.ndarray, error: np.ndarray, fracs: np.ndarray | None = None, name: str = ''
) -> np.ndarray:
    """Mean error of the pixels kept after removing the most uncertain fraction ``f``, for each ``f`` in ``fracs``.

    Pixels of equal uncertainty leave together in expectation: within a tie, each removed pixel takes the tie's
    mean error (the average over every order of the tie), so the curve does not depend on how a sort breaks ties
    and a constant map gives exactly :func:`random_curve`.
    """
    u, e = np.asarray(uncertainty, np.float64).ravel(), np.asarray(error, np.float64).ravel()
    _check_pair(np.asarray(uncertainty), np.asarray(error), name)
    order = np.lexsort((np.arange(u.size), -u))  # most uncertain first
    us, es = u[order], e[order]
    _, start, counts = np.unique(-us, return_index=True, return_counts=True)
    group_mean = np.add.reduceat(es, start) / counts
    return _kept_means(np.repeat(group_mean, counts), fractions() if fracs is None else np.asarray(fracs))


def oracle_curve(error: np.ndarray, fracs: np.ndarray | None = None) -> np.ndarray:
    """The best possible sparsification: the truly worst pixels removed first (uncertainty = the error itself)."""
    e = np.sort(np.asarray(error, np.float64).ravel())[::-1]
    return _kept_means(e, fractions() if fracs is None else np.asarray(fracs))


def random_curve(
    error: np.ndarray, fracs: np.ndarray | None = None, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Sparsification by a random order: its expectation (``rng=None``: the mean error at every fraction, what an
    uninformative map gives), or one seeded random permutation."""
    e = np.asarray(error, np.float64).ravel()
    fracs = fractions() if fracs is None else np.asarray(fracs)
    if rng is None:
        return np.full(fracs.shape, e.mean())
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return _kept_means(e[rng.permutation(e.size)], fracs)


def _area(curve: np.ndarray, fracs: np.ndarray) -> float:
    return float(np.trapezoid(curve, fracs)) if len(fracs) > 1 else 0.0


def ause(ours: np.ndarray, oracle: np.ndarray, fracs: np.ndarray) -> float:
    """Area under the sparsification error: ``integral(ours - oracle)`` over the removed fraction (0: perfect)."""
    return _area(np.asarray(ours) - np.asarray(oracle), fracs)


def aurg(ours: np.ndarray, random: np.ndarray, fracs: np.ndarray) -> float:
    """Area under the random gain: ``integral(random - ours)`` (> 0: better than chance, < 0: worse)."""
    return _area(np.asarray(random) - np.asarray(ours), fracs)


# ----------------------------------------------------------------------------------------------------------------
# Rain detection
# ----------------------------------------------------------------------------------------------------------------
def _mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.shape != shape:
        size = f'{m.shape[1]}x{m.shape[0]}' if m.ndim == 2 else f'of shape {m.shape}'
        raise UncertaintyError(f'{_where(name)}rain mask is {size}, the map {shape[1]}x{shape[0]}')
    if m.dtype.kind == 'f' and not np.isfinite(m).all():
        raise UncertaintyError(f'{_where(name)}rain mask holds NaN/inf values')
    m = m > 0
    positives = int(m.sum())
    if positives in (0, m.size):
        which = 'no rain pixel' if positives == 0 else 'only rain pixels'
        raise UncertaintyError(f'{_where(name)}rain mask has {which}: detection scores are undefined')
    return m.ravel()


def auroc(uncertainty: np.ndarray, mask: np.ndarray, name: str = '') -> float:
    """Area under the ROC curve of the map as a rain detector: the chance that a random rain pixel is more
    uncertain than a random clear one (ties count half; Mann-Whitney U from average ranks).

    Raises:
        UncertaintyError: sizes differ, or the mask has one class only.
    """
    u = np.asarray(uncertainty, np.float64)
    m = _mask(mask, u.shape, name)
    ranks = average_ranks(u)
    pos = int(m.sum())
    neg = m.size - pos
    return float((ranks[m].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(uncertainty: np.ndarray, mask: np.ndarray, name: str = '') -> float:
    """Average precision of the map as a rain detector: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct uncertainty
    values taken as thresholds, highest first (tied pixels enter together).

    Raises:
        UncertaintyError: sizes differ, or the mask has one class only.
    """
    u = np.asarray(uncertainty, np.float64)
    m = _mask(mask, u.shape, name)
    order = np.lexsort((np.arange(u.size), -u.ravel()))
    us, ms = u.ravel()[order], m[order]
    _, start = np.unique(-us, return_index=True)
    ends = np.append(start[1:], us.size) - 1  # last index of each group of equal values
    tp = np.cumsum(ms)[ends].astype(np.float64)
    precision = tp / (ends + 1)
    recall = tp / ms.sum()
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


# ----------------------------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class UncertaintyScores:
    """The measures of one map (``auroc``/``average_precision`` are ``None`` without a rain mask).

    ``curves`` holds ``fractions``, ``ours``, ``oracle`` and ``random`` (the expected random curve), each a list of
    floats; errors are on the 0-1 scale of the Y channel.
    """

    spearman: float
    ause: float
    aurg: float
    mean_error: float
    spread: float
    auroc: float | None = None
    average_precision: float | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        """The scalar measures as a flat ``{name: value}`` (detection measures only when a mask was given)."""
        out = {
            'spearman': self.spearman,
            'ause': self.ause,
            'aurg': self.aurg,
            'mean_error': self.mean_error,
            'spread': self.spread,
        }
        if self.auroc is not None:
            out['auroc'] = self.auroc
            out['average_precision'] = self.average_precision
        return out


def score_uncertainty(
    uncertainty: Any,
    error: np.ndarray,
    mask: np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
    crop_border: int = 0,
    name: str = '',
    mask_name: str | None = None,
) -> UncertaintyScores:
    """Every measure of one uncertainty map against its error map (and rain mask).

    Args:
        uncertainty: ``H x W`` or ``C x H x W`` map at the image's size (before any crop).
        error: The :func:`error_map` of the image (already cropped by ``crop_border``).
        mask: Rain mask at the image's size (non-zero: rain), or ``None``.
        steps: Sparsification steps (:func:`fractions`).
        crop_border: The border :func:`error_map` cut; the map and the mask are cut the same way.
        name: What to call the map in messages.
        mask_name: What to call the mask in messages (default: ``name``).

    Raises:
        UncertaintyError: see the functions it calls.
    """
    u = _crop(pixel_map(uncertainty, name), crop_border)
    e = np.asarray(error, np.float64)
    _check_pair(u, e, name)
    fr = fractions(steps)
    ours, oracle, rand = sparsification_curve(u, e, fr, name), oracle_curve(e, fr), random_curve(e, fr)
    scores = UncertaintyScores(
        spearman=spearman(u, e, name),
        ause=ause(ours, oracle, fr),
        aurg=aurg(ours, rand, fr),
        mean_error=float(e.mean()),
        spread=spread(u),
        curves={'fractions': fr.tolist(), 'ours': ours.tolist(), 'oracle': oracle.tolist(), 'random': rand.tolist()},
    )
    if mask is not None:
        m = np.asarray(mask)
        m = _crop(m[0] if m.ndim == 3 and m.shape[0] == 1 else m, crop_border)
        scores.auroc = auroc(u, m, name if mask_name is None else mask_name)
        scores.average_precision = average_precision(u, m, name if mask_name is None else mask_name)
    return scores
