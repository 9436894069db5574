"""basicsr metric types backed by :mod:`s2former_plugin.metrics.protocols` (pyiqa and the official protocol).

Validation YAML (basicsr calls ``METRIC_REGISTRY.get(type)(img=..., img2=..., **options)`` with ``uint8`` BGR
``H x W x C`` arrays)::

    val:
      metrics:
        psnr: {type: pyiqa, metric: psnr}                 # Y-channel (BT.601 YCbCr) PSNR, pyiqa
        ssim: {type: pyiqa, metric: ssim}                 # Y-channel SSIM, pyiqa (MATLAB-style)
        lpips: {type: pyiqa, metric: lpips, better: lower}  # needs the LPIPS/AlexNet weights locally
        psnr_official: {type: pyiqa, metric: psnr, protocol: official}
        ssim_official: {type: official_ssim}              # same as {type: pyiqa, metric: ssim, protocol: official}
        niqe: {type: pyiqa, metric: niqe}                 # no-reference: BasicSR's NIQE, offline
        piqe: {type: pyiqa, metric: piqe}                 # no-reference: pyiqa's PIQE, offline

Registered names: ``pyiqa``, ``official_psnr``, ``official_ssim`` (basicsr's own are ``calculate_*``).
No-reference metrics also run on validation sets without ground truth (a folder of rainy photos);
:func:`check_val_metrics` fills in ``better: lower`` where lower is better (basicsr assumes higher).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

from . import protocols

__all__ = ['pyiqa', 'official_psnr', 'official_ssim', 'check_val_metrics', 'needs_reference']

logger = logging.getLogger('basicsr')
_warned: set[str] = set()


def _hwc(img: Any, input_order: str) -> Any:
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order: {input_order!r} is not 'HWC' or 'CHW'")
    if input_order == 'CHW' and isinstance(img, np.ndarray) and img.ndim == 3:
        return img.transpose(1, 2, 0)
    return img


def _compute(
    metric: str,
    img: Any,
    img2: Any,
    protocol: str,
    input_order: str,
    on_unavailable: str,
    opts: dict,
) -> float:
    if on_unavailable not in ('raise', 'nan'):
        raise ValueError(f"on_unavailable: {on_unavailable!r} is not 'raise' or 'nan'")
    try:
        return protocols.compute(metric, _hwc(img, input_order), _hwc(img2, input_order), protocol, **opts)
    except protocols.MetricUnavailable as exc:
        if on_unavailable == 'raise':
            raise protocols.MetricUnavailable(f'metric {metric!r} unavailable: {exc}') from None
        if metric not in _warned:
            _warned.add(metric)
            logger.warning(f'metric {metric!r} unavailable, reported as nan: {exc}')
        return math.nan


@METRIC_REGISTRY.register()
def pyiqa(
    img: Any,
    img2: Any = None,
    metric: str = 'psnr',
    protocol: str = 'standard',
    input_order: str = 'HWC',
    on_unavailable: str = 'raise',
    better: str | None = None,
    **opts: Any,
) -> float:
    """Any pyiqa metric (``protocol: standard``) or the official PSNR/SSIM (``protocol: official``).

    Args:
        img: Restored image (basicsr: ``uint8`` BGR ``H x W x C``; tensors: RGB ``[1 x] C x H x W`` in [0, 1]).
        img2: Reference image (``None`` for no-reference metrics).
        metric: pyiqa metric name; ``psnr``/``ssim`` default to the Y channel of BT.601 YCbCr.
        protocol: ``standard`` or ``official`` (the UDR-S2Former test script; psnr/ssim only).
        input_order: ``HWC`` or ``CHW`` for numpy inputs.
        on_unavailable: ``raise`` (default) or ``nan`` (log one warning and return nan) when the metric cannot be
            computed here, e.g. LPIPS without its weight files.
        better: basicsr's ``higher``/``lower`` flag for best-metric tracking; ignored here.
        **opts: pyiqa options (``test_y_channel``, ``color_space``, ``crop_border``, ``device``,
            ``pretrained_model_path``, ...), ``channel_order`` (``bgr``/``rgb``) for numpy inputs.

    Returns:
        The score.
    """
    return _compute(metric, img, img2, protocol, input_order, on_unavailable, opts)


@METRIC_REGISTRY.register()
def official_psnr(img: Any, img2: Any, input_order: str = 'HWC', better: str | None = None, **opts: Any) -> float:
    """PSNR exactly as the official UDR-S2Former ``test.py`` (Y with R/B-swapped weights, no crop)."""
    return _compute('psnr', img, img2, 'official', input_order, 'raise', opts)


@METRIC_REGISTRY.register()
def official_ssim(img: Any, img2: Any, input_order: str = 'HWC', better: str | None = None, **opts: Any) -> float:
    """SSIM exactly as the official UDR-S2Former ``test.py`` (Y, replicate borders, whole map, no crop)."""
    return _compute('ssim', img, img2, 'official', input_order, 'raise', opts)


def _lower_better(metric_opt: dict) -> bool | None:
    """Whether lower values of a ``val:metrics`` entry are better (``None``: not a type known here)."""
    kind = metric_opt.get('type')
    if kind == 'pyiqa':
        return protocols.lower_is_better(metric_opt.get('metric', 'psnr'))
    if kind == 'calculate_niqe':
        return True
    return None


def needs_reference(metric_opt: dict) -> bool:
    """Whether a ``val:metrics`` entry compares with ground truth (``niqe``, ``piqe``, ``calculate_niqe``: no)."""
    kind = metric_opt.get('type')
    if kind == 'pyiqa':
        return not protocols.is_no_reference(metric_opt.get('metric', 'psnr'))  # official: psnr/ssim only (checked)
    return kind != 'calculate_niqe'


def check_val_metrics(metrics_opt: dict) -> None:
    """Check the metric names of ``val:metrics`` and give each entry basicsr's ``better`` flag, in place.

    basicsr tracks the best validation value as the highest unless ``better: lower``; for NIQE, PIQE or LPIPS
    that would record the worst iteration as the best. An explicit flag that contradicts the metric is refused.

    Raises:
        ValueError: an unknown pyiqa metric name or protocol, a metric the official protocol does not define;
            ``better`` is not ``higher``/``lower``, or says higher for a lower-is-better metric.
    """
    for name, metric_opt in (metrics_opt or {}).items():
        if not isinstance(metric_opt, dict):
            continue
        if metric_opt.get('type') == 'pyiqa':
            metric, protocol = metric_opt.get('metric', 'psnr'), metric_opt.get('protocol', 'standard')
            try:
                protocols.check_metric_name(metric)
            except protocols.UnknownMetric as exc:
                raise ValueError(f'val:metrics:{name}:metric: {exc}') from None
            protocols.check_protocol(metric, protocol, where=f'val:metrics:{name}:')
        better, lower = metric_opt.get('better'), _lower_better(metric_opt)
        if better not in (None, 'higher', 'lower'):
            raise ValueError(f"val:metrics:{name}:better: expected 'higher' or 'lower', got {better!r}")
        if lower is None:
            continue
        expected = 'lower' if lower else 'higher'
        if better is None:
            metric_opt['better'] = expected
        elif better != expected:
            raise ValueError(f'val:metrics:{name}:better: {better!r}, but {expected} values are better for it')
