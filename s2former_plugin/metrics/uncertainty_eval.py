"""Scoring a folder of raw uncertainty maps: pairing them with predictions, ground truth and rain masks, per-image
rows, set means and mean sparsification curves.

The files read are those of :mod:`.uncertainty_maps` (raw ``.npz``/``.npy`` maps, rain masks). Pairing is
:mod:`.pairing`'s: predictions with ground truth by :func:`.pairing.collect_pairs` (the dataset naming rules), then
maps and masks by the prediction's own stem (:func:`.pairing.own_file`: ``<stem>``, ``<stem>_uncertainty``,
``<stem>_unc``; masks ``<stem>`` or ``<stem>_mask``). An image whose map or mask is missing, of another size,
non-finite or constant is an error named in :attr:`UncertaintyEvaluation.errors`; the set's means are then labelled
as the means of the scored images only (``mean_of_scored``), never as the set's.

Integration: ``report`` and validation call :func:`evaluate_uncertainty` (folders) or feed
:class:`UncertaintyAccumulator` (arrays in memory), then write :meth:`UncertaintyEvaluation.summary` into
metrics.json; :mod:`s2former_plugin.reporting.uncertainty` writes the CSV and the curves' plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .pairing import MASK_SUFFIXES, UNCERTAINTY_SUFFIXES, ImagePair, collect_pairs, files_by_stem, own_file
from .uncertainty import (
    DEFAULT_SCALE,
    DEFAULT_STEPS,
    SCALES,
    UncertaintyError,
    error_map,
    fractions,
    score_uncertainty,
)
from .uncertainty_maps import MAP_EXTENSIONS, map_at_image_size, read_map, read_mask

__all__ = [
    'MEASURES',
    'UncertaintyAccumulator',
    'UncertaintyEvaluation',
    'evaluate_uncertainty',
    'pair_maps',
]

#: The per-image measures, in column order (detection measures only where masks are given).
MEASURES = ('spearman', 'ause', 'aurg', 'mean_error', 'spread', 'auroc', 'average_precision')


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------
def pair_maps(
    unc_dir: str,
    pred_dir: str,
    gt_dir: str,
    mask_dir: str | None = None,
    pred_suffix: str | None = None,
    allow_shared_gt: bool = False,
) -> tuple[list[ImagePair], dict[str, list[str]]]:
    """Pair every prediction with ground truth, a raw map and (with ``mask_dir``) a rain mask.

    Returns:
        The pairs (``uncertainty``/``mask`` ``None`` where none was found) and ``{kind: paths}``:
        ``no_ground_truth`` (predictions left out: nothing to measure errors against) and ``unused_maps`` (maps
        no prediction claimed).

    Raises:
        PairingError: a folder is missing, two files differ only by extension, or from
            :func:`.pairing.collect_pairs`.
    """
    maps = files_by_stem(unc_dir, '--uncertainty', MAP_EXTENSIONS)
    masks = files_by_stem(mask_dir, '--masks') if mask_dir else {}
    pairs, missing = collect_pairs(pred_dir, gt_dir, pred_suffix=pred_suffix, allow_shared_gt=allow_shared_gt)
    out = [
        replace(
            p,
            uncertainty=own_file(maps, p.name, pred_suffix, UNCERTAINTY_SUFFIXES),
            mask=own_file(masks, p.name, pred_suffix, MASK_SUFFIXES),
        )
        for p in pairs
    ]
    used = {p.uncertainty for p in out}
    return out, {
        'no_ground_truth': missing.get('no_ground_truth', []),
        'unused_maps': [m for m in maps.values() if m not in used],
    }


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class UncertaintyEvaluation:
    """Uncertainty measures of one set: per-image rows and curves, errors, and honest set means.

    ``per_image``: ``{name: {measure: value}}`` of the scored images; ``curves``: ``{name: {ours, oracle,
    random}}`` on :attr:`fractions`; ``errors``: ``{name: reason}`` of the images that could not be scored.
    """

    scale: str = DEFAULT_SCALE
    protocol: str = 'standard'
    crop_border: int = 0
    steps: int = DEFAULT_STEPS
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fractions(self) -> list[float]:
        return fractions(self.steps).tolist()

    @property
    def n_images(self) -> int:
        """Images of the set: scored plus refused."""
        return len(self.per_image) + len(self.errors)

    @property
    def complete(self) -> bool:
        """Every image of the set was scored (so the means are the set's)."""
        return bool(self.per_image) and not self.errors

    @property
    def columns(self) -> list[str]:
        return [m for m in MEASURES if any(m in row for row in self.per_image.values())]

    def mean(self) -> dict[str, float]:
        """Mean of each measure over the scored images (a measure only where every scored image has it).

        Raises:
            UncertaintyError: some scored images have detection scores and others not (masks for part of the set).
        """
        out = {}
        for m in self.columns:
            vals = [row[m] for row in self.per_image.values() if m in row]
            if len(vals) != len(self.per_image):
                raise UncertaintyError(
                    f'{m}: {len(vals)} of {len(self.per_image)} scored images have it; give every image a rain mask'
                )
            out[m] = float(np.mean(vals))
        return out

    def mean_curves(self) -> dict[str, list[float]]:
        """The scored images' curves averaged point by point (the mean AUSE is the area of these, the area being
        linear)."""
        if not self.curves:
            return {}
        keys = ('ours', 'oracle', 'random')
        return {
            'fractions': self.fractions,
            **{k: np.mean([c[k] for c in self.curves.values()], 0).tolist() for k in keys},
        }

    def summary(self) -> dict[str, Any]:
        """The ``uncertainty`` entry of metrics.json.

        ``mean`` and ``curves`` when every image was scored; otherwise ``mean_of_scored`` and
        ``curves_of_scored`` with ``scored`` < ``images`` and the ``errors`` (a subset's mean is never the set's).
        """
        tag = '' if self.complete else '_of_scored'
        out: dict[str, Any] = {
            'scale': self.scale,
            'protocol': self.protocol,
            'crop_border': self.crop_border,
            'error': 'abs(Y(output) - Y(gt)), 0-1 scale',
            'images': self.n_images,
            'scored': len(self.per_image),
            'complete': self.complete,
        }
        if self.per_image:
            out[f'mean{tag}'] = self.mean()
            out[f'curves{tag}'] = self.mean_curves()
        out['per_image'] = self.per_image
        if self.errors:
            out['errors'] = self.errors
        if any(self.missing.values()):
            out['missing'] = {k: v for k, v in self.missing.items() if v}
        return out

    def line(self) -> str:
        """One printable line: the means (labelled as the scored images' when some were refused)."""
        if not self.per_image:
            return f'uncertainty ({self.scale}): no image scored ({len(self.errors)} refused)'
        means = ', '.join(f'{k} {v:.4f}' for k, v in self.mean().items())
        who = (
            f'mean of {len(self.per_image)} images'
            if self.complete
            else f'mean of the {len(self.per_image)} scored of {self.n_images} images ({len(self.errors)} refused)'
        )
        return f'uncertainty ({self.scale}, {who}): {means}'


class UncertaintyAccumulator:
    """Collects images one by one (validation, or anything holding arrays) into an :class:`UncertaintyEvaluation`.

    Args:
        scale: Which scale the maps given to :meth:`add` are (recorded; see :func:`map_at_image_size`).
        protocol: Y channel of ``standard`` or ``official`` (:func:`.uncertainty.error_map`).
        crop_border: Border cut before measuring.
        steps: Sparsification steps.
        strict: Raise on the first bad image instead of recording it in ``errors``.
    """

    def __init__(
        self,
        scale: str = DEFAULT_SCALE,
        protocol: str = 'standard',
        crop_border: int = 0,
        steps: int = DEFAULT_STEPS,
        strict: bool = False,
    ) -> None:
        if scale not in SCALES:
            raise UncertaintyError(f'scale: {scale!r} is not one of {", ".join(SCALES)}')
        self.strict = strict
        self.result = UncertaintyEvaluation(scale, protocol, crop_border, steps)

    def refuse(self, name: str, reason: str) -> None:
        """Record an image that cannot be scored (raises instead when ``strict``)."""
        if self.strict:
            raise UncertaintyError(reason)
        self.result.errors[name] = reason

    def add(
        self,
        name: str,
        uncertainty: Any,
        pred: Any,
        gt: Any,
        mask: Any = None,
        channel_order: str = 'bgr',
        files: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        """Score one image; a bad one is recorded in ``errors`` (or raises when ``strict``).

        Args:
            name: The image's name (unique in the set).
            uncertainty: Its map at the image's size, ``H x W`` or ``C x H x W`` (tensor or array).
            pred: The restored image (numpy ``H x W x C`` in ``channel_order``, or an RGB tensor ``[1 x] C x H x W``).
            gt: Its ground truth.
            mask: Rain mask at the image's size (non-zero: rain), or ``None``.
            channel_order: Channel order of numpy images.
            files: ``(prediction, map, mask)`` file names for the messages (default: ``name`` for each).
        """
        r = self.result
        if name in r.per_image or name in r.errors:
            raise UncertaintyError(f'{name}: given twice')
        pred_file, map_file, mask_file = (f or name for f in (files or (None, None, None)))
        try:
            err = error_map(pred, gt, r.protocol, r.crop_border, channel_order, pred_file)
            scores = score_uncertainty(uncertainty, err, mask, r.steps, r.crop_border, map_file, mask_file)
        except UncertaintyError as exc:
            self.refuse(name, str(exc))
            return
        r.per_image[name] = scores.row()
        r.curves[name] = {k: scores.curves[k] for k in ('ours', 'oracle', 'random')}


def evaluate_uncertainty(
    unc_dir: str,
    pred_dir: str,
    gt_dir: str,
    mask_dir: str | None = None,
    scale: str = DEFAULT_SCALE,
    protocol: str = 'standard',
    crop_border: int = 0,
    steps: int = DEFAULT_STEPS,
    pred_suffix: str | None = None,
    strict: bool = False,
    allow_shared_gt: bool = False,
) -> UncertaintyEvaluation:
    """Score the raw maps of a folder against the errors of the predictions (and against rain masks).

    Args:
        unc_dir: Folder of raw maps (``infer --save-uncertainty``'s ``OUTPUT/uncertainty``).
        pred_dir: Folder of predictions (``infer``'s ``OUTPUT``).
        gt_dir: Folder of ground truth.
        mask_dir: Folder of rain masks (``synthetic_rain --masks``'s ``OUT/mask``), or ``None``: no detection scores.
        scale: The scale scored (default ``final``, the map at the output's size).
        protocol: Y channel of the ``standard`` or ``official`` protocol.
        crop_border: Border cut before measuring.
        steps: Sparsification steps.
        pred_suffix: Suffix stripped from prediction stems (basicsr's ``<name>_<suffix>.png``).
        strict: Raise :class:`UncertaintyError` on the first bad image instead of recording it.
        allow_shared_gt: Score predictions that share one ground-truth image (as ``report --allow-shared-gt``).

    Returns:
        The evaluation; a prediction without a map (or, with ``mask_dir``, without a mask) is an error.
    """
    from .scoring import read_image

    acc = UncertaintyAccumulator(scale, protocol, crop_border, steps, strict)
    pairs, missing = pair_maps(unc_dir, pred_dir, gt_dir, mask_dir, pred_suffix, allow_shared_gt)
    acc.result.missing = missing
    for p in pairs:
        if p.uncertainty is None:
            acc.refuse(p.name, f'{p.pred}: no uncertainty map ({p.name}.npz) in {unc_dir}')
            continue
        if mask_dir and p.mask is None:
            acc.refuse(p.name, f'{p.pred}: no rain mask ({p.name}.png) in {mask_dir}')
            continue
        try:
            pred, gt = read_image(p.pred), read_image(p.gt)
            u = map_at_image_size(read_map(p.uncertainty, scale), scale, pred.shape[:2], p.uncertainty)
            mask = read_mask(p.mask) if p.mask else None
        except ValueError as exc:  # UncertaintyError, imageio.ImageError
            acc.refuse(p.name, str(exc))
            continue
        acc.add(p.name, u, pred, gt, mask, files=(p.pred, p.uncertainty, p.mask))
    return acc.result
