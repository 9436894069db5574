"""Metric values for the two evaluation protocols, shared by the basicsr metric bridge and the report.

``standard``
    pyiqa's implementations. ``psnr`` and ``ssim`` default to the deraining papers' convention: the Y channel of
    ITU-R BT.601 YCbCr computed from RGB (``test_y_channel=True, color_space='ycbcr'``; pyiqa's own defaults are
    RGB PSNR and YIQ-luma SSIM). PSNR uses ``data_range=1`` on unrounded Y; SSIM rounds Y to integers on the 0-255
    scale (MATLAB ``ssim``) and averages the valid part of the SSIM map. Any other pyiqa metric (``lpips``,
    ``dists``, ...) is created by name; learned metrics need their weight files (see :class:`MetricUnavailable`).
``official``
    The UDR-S2Former test script (``test.py`` + ``psnr_ssim.py`` of Owen718/UDR-S2Former_deraining), which
    evaluates PSNR and SSIM on a Y channel only:

    * the Y weights of the *BGR* formula ``(24.966, 128.553, 65.481)`` are applied to *RGB* data, i.e. R and B
      swap weights (``Y = 16 + 24.966 R + 128.553 G + 65.481 B`` on the 0-1 scale);
    * the Y channel is float32 and is not rounded;
    * PSNR peak is 255 (1 if the prediction's Y never exceeds 1), ``inf`` for identical images;
    * SSIM filters with an 11x11 Gaussian (sigma 1.5) with *replicated* borders and averages the *whole* map;
    * no border crop; the prediction is neither clamped nor quantised when given as a float tensor (the script
      scores the network's float output; PNGs read back from disk give the quantised score).

No-reference metrics (standard protocol; a reference image, when given, is ignored)
    ``niqe`` is BasicSR's NIQE (``basicsr.metrics.calculate_niqe``: the port of the MATLAB ``niqe`` with the
    pristine-image model BasicSR ships, ``niqe_pris_params.npz``; Y channel of BT.601 YCbCr, no border crop,
    96x96 blocks, so images need at least two blocks, e.g. 192x96 pixels). It works offline. pyiqa's own NIQE
    is ``niqe_pyiqa`` (and ``niqe_matlab``); it and the other file-based or learned no-reference metrics
    (``brisque``, ``musiq``, ...) need their weight files. ``piqe`` (pyiqa) needs none.

Weight files: downloads are refused unless ``S2FORMER_ALLOW_DOWNLOAD=1``. A metric finds its files in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME/hub/pyiqa``) or in a folder given as ``weights_dir``; a
missing file makes it :class:`MetricUnavailable` ("needs FILE"), and nothing is created in the cache. The metric is
built by :mod:`.pyiqa_offline`, whose sandbox applies to the building thread only.

Inputs: a numpy array is ``H x W x C`` (or ``H x W``), BGR like basicsr's ``img``/``img2`` (``channel_order``
says otherwise), ``uint8`` (0-255), ``uint16`` (0-65535) or float in [0, 1]. A tensor is ``[1 x] C x H x W``, RGB,
float in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import S2FormerError
from .pyiqa_offline import ALLOW_DOWNLOAD_ENV, MetricUnavailable, UnknownMetric, get_pyiqa_metric
from .pyiqa_offline import pyiqa_configs as _pyiqa_configs

__all__ = [
    'ALLOW_DOWNLOAD_ENV',
    'PROTOCOLS',
    'OFFICIAL_METRICS',
    'NR_DEFAULT_METRICS',
    'MetricUnavailable',
    'NonFiniteImage',
    'UnknownMetric',
    'basicsr_niqe',
    'check_metric',
    'check_protocol',
    'check_metric_name',
    'compute',
    'get_pyiqa_metric',
    'is_no_reference',
    'official_psnr',
    'official_ssim',
    'official_y',
    'to_rgb_tensor',
    'standard_metric',
]

PROTOCOLS = ('standard', 'official')
OFFICIAL_METRICS = ('psnr', 'ssim')
# Y/luma defaults of the standard protocol for pyiqa's psnr/ssim.
_Y_DEFAULTS = {
    'psnr': {'test_y_channel': True, 'color_space': 'ycbcr'},
    'ssim': {'test_y_channel': True, 'color_space': 'ycbcr'},
}
# The default no-reference set: both work offline on a fresh install.
NR_DEFAULT_METRICS = ('niqe', 'piqe')
# Our name -> pyiqa's: ``niqe`` is BasicSR's NIQE here, pyiqa's is ``niqe_pyiqa``.
_PYIQA_NAMES = {'niqe_pyiqa': 'niqe'}
BASICSR_NIQE = 'niqe'
BASICSR_NIQE_INFO = 'basicsr.metrics.calculate_niqe (MATLAB niqe port, niqe_pris_params.npz, Y channel, crop 0)'


class NonFiniteImage(S2FormerError, ValueError):
    """An image (usually a prediction) holds NaN or inf: no score is computed for it."""


# ----------------------------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------------------------
def _scale_of(arr: np.ndarray) -> float:
    if arr.dtype == np.uint8:
        return 255.0
    if arr.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return 1.0
    raise TypeError(f'unsupported image dtype {arr.dtype}; expected uint8, uint16 or float')


def _check_finite(arr: np.ndarray) -> np.ndarray:
    """Refuse NaN/inf pixels: a NaN score would be left out of a mean (or pass as 'identical', like ``inf``)."""
    if arr.dtype.kind == 'f':
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise NonFiniteImage(f'image holds {bad} NaN/inf values; it cannot be scored')
    return arr


def _hwc(img: Any, channel_order: str) -> tuple[np.ndarray, float]:
    """``H x W x C`` RGB numpy array (original dtype) and the value of white for it.

    Raises:
        NonFiniteImage: The image holds NaN or inf.
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f'one image at a time, got a batch of {t.shape[0]}')
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        arr = _check_finite(t.permute(1, 2, 0).numpy())
        return arr, 1.0 if arr.dtype.kind == 'f' else _scale_of(arr)
    arr = _check_finite(np.asarray(img))
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f'expected an H x W x C image, got shape {arr.shape}')
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.shape[2] == 3 and channel_order.lower() == 'bgr':
        arr = arr[..., ::-1]
    return arr, _scale_of(arr)


def to_rgb_tensor(img: Any, channel_order: str = 'bgr', clamp: bool = True) -> torch.Tensor:
    """``1 x C x H x W`` float64 RGB tensor in [0, 1] from a numpy image or a tensor (see module docstring)."""
    arr, scale = _hwc(img, channel_order)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64).permute(2, 0, 1)[None] / scale
    return t.clamp(0, 1) if clamp else t


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f'image shapes differ: {a.shape} vs {b.shape}')


# ----------------------------------------------------------------------------------------------------------------
# Official protocol
# ----------------------------------------------------------------------------------------------------------------
def _official_255(img: Any, channel_order: str) -> np.ndarray:
    """The official script's ``tensor * 255`` as float64 ``H x W x C`` RGB, with its float32 arithmetic.

    The script reads images with ``ToTensor`` (float32 ``k / 255``), multiplies by 255 in float32 and converts to
    float64; float inputs are taken as they are (no clamp).
    """
    arr, scale = _hwc(img, channel_order)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.to(torch.float32) if arr.dtype.kind == 'f' else t.to(torch.float32).div(scale)
    return (t * 255).numpy().astype(np.float64)


def official_y(img255: np.ndarray) -> np.ndarray:
    """Y channel exactly as the official ``to_y_channel``: BGR weights applied to the given (RGB) channel order.

    Args:
        img255: ``H x W x C`` float array on the 0-255 scale, channels in the order the script had them (RGB).

    Returns:
        ``H x W x 1`` float32 on the 0-255 scale (unchanged, as float32, for one channel).
    """
    x = img255.astype(np.float32) / 255.0
    if x.ndim == 3 and x.shape[2] == 3:
        # matlab_function.bgr2ycbcr(y_only=True) on float32 input: float64 dot, +16, /255, back to float32.
        y = (np.dot(x, [24.966, 128.553, 65.481]) + 16.0) / 255.0
        x = y.astype(np.float32)[..., None]
    return x * 255.0


def official_psnr(pred: Any, gt: Any, channel_order: str = 'bgr') -> float:
    """PSNR of the official UDR-S2Former test script (Y channel, R/B-swapped weights, peak 255, no crop)."""
    a = official_y(_official_255(pred, channel_order))
    b = official_y(_official_255(gt, channel_order))
    _check_pair(a, b)
    mse = np.mean((a - b) ** 2)  # float32, as in the script (its final value is float32 too)
    if mse == 0:
        return float('inf')
    peak = 1.0 if a.max() <= 1 else 255.0
    return float(20.0 * np.log10(peak / np.sqrt(mse)))


_GAUSS = cv2.getGaussianKernel(11, 1.5)
_WINDOW = np.outer(_GAUSS, _GAUSS.transpose())


def _ssim_replicate(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)

    def filt(v: np.ndarray) -> np.ndarray:
        return cv2.filter2D(v, -1, _WINDOW, borderType=cv2.BORDER_REPLICATE)

    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def official_ssim(pred: Any, gt: Any, channel_order: str = 'bgr') -> float:
    """SSIM of the official UDR-S2Former test script (Y channel, replicate borders, whole map, no crop)."""
    a = official_y(_official_255(pred, channel_order))
    b = official_y(_official_255(gt, channel_order))
    _check_pair(a, b)
    if a.shape[2] != 1:
        raise ValueError(f'official SSIM is defined on 1- or 3-channel images, got {a.shape[2]} channels')
    return _ssim_replicate(a[..., 0], b[..., 0])


# ----------------------------------------------------------------------------------------------------------------
# Standard protocol (pyiqa)
# ----------------------------------------------------------------------------------------------------------------
def _device(opts: dict, metric: str) -> torch.device:
    dev = opts.pop('device', None)
    if dev in (None, 'auto'):
        dev = 'cuda' if metric not in _Y_DEFAULTS and torch.cuda.is_available() else 'cpu'
    return torch.device(dev)


def pyiqa_name(metric: str) -> str:
    return _PYIQA_NAMES.get(metric, metric)


def is_no_reference(metric: str) -> bool:
    """Whether ``metric`` scores an image alone (``niqe``, ``piqe``, ``brisque``, ...), without a reference."""
    if metric == BASICSR_NIQE:
        return True
    return _pyiqa_configs().get(pyiqa_name(metric), {}).get('metric_mode') == 'NR'


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of the metric are better (``lpips``, ``niqe``, ``piqe``: yes; ``psnr``: no)."""
    if metric in _Y_DEFAULTS:
        return False
    return bool(_pyiqa_configs().get(pyiqa_name(metric), {}).get('lower_better', False))


def check_metric_name(metric: str) -> None:
    """Raise :class:`UnknownMetric` unless ``metric`` names a metric (``niqe``, ``niqe_pyiqa`` or a pyiqa name)."""
    if metric != BASICSR_NIQE and pyiqa_name(metric) not in _pyiqa_configs():
        raise UnknownMetric(f'unknown metric {metric!r} (niqe, niqe_pyiqa or a pyiqa name: see pyiqa.list_models())')


def _check_protocol_name(protocol: str, where: str = '') -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f'{where}protocol: {protocol!r} is not one of {", ".join(PROTOCOLS)}')


def check_protocol(metric: str, protocol: str, where: str = '') -> None:
    """Raise ``ValueError`` unless ``protocol`` is known and defines ``metric`` (official: psnr and ssim only).

    Args:
        metric: Metric name.
        protocol: ``standard`` or ``official``.
        where: How the caller names the entry, put first in the message (``val:metrics:psnr:``).
    """
    _check_protocol_name(protocol, where)
    if protocol == 'official' and metric not in OFFICIAL_METRICS:
        message = f'the official protocol defines {", ".join(OFFICIAL_METRICS)} only, not {metric!r}'
        raise ValueError(f'{where} {message}' if where else message)


def check_metric(metric: str, protocol: str = 'standard', weights_dir: str | None = None, **opts) -> None:
    """Raise if ``metric`` cannot be computed here, without computing it (the pyiqa metric is built and cached).

    Raises:
        UnknownMetric: no metric of that name.
        MetricUnavailable: the protocol does not define it, or its weight files are missing.
    """
    _check_protocol_name(protocol)
    check_metric_name(metric)
    if protocol == 'official':
        if metric not in OFFICIAL_METRICS:
            raise MetricUnavailable(f'the official protocol defines {", ".join(OFFICIAL_METRICS)} only')
        return
    if metric != BASICSR_NIQE:
        opts = {**_Y_DEFAULTS.get(metric, {}), **opts}
        opts.pop('channel_order', None)
        get_pyiqa_metric(pyiqa_name(metric), _device(opts, metric), weights_dir, **opts)


def basicsr_niqe(img: Any, channel_order: str = 'bgr', crop_border: int = 0, convert_to: str = 'y') -> float:
    """NIQE exactly as ``basicsr.metrics.calculate_niqe(img, crop_border, 'HWC', convert_to)``.

    BasicSR's port of the MATLAB ``niqe`` with the pristine-image model it ships (``niqe_pris_params.npz``).
    ``uint8`` BGR arrays are passed as they are; other inputs (``uint16``, float, tensors) are first put on the 0-255
    scale in BGR order, as ``calculate_niqe`` expects.

    Raises:
        ValueError: the image holds fewer than two of NIQE's 96x96 blocks (after ``crop_border``).
    """
    from basicsr.metrics.niqe import calculate_niqe

    arr, scale = _hwc(img, channel_order)  # RGB
    if arr.shape[2] == 3:
        arr = arr[..., ::-1]
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float32) * np.float32(255.0 / scale), 0, 255)
    h, w = arr.shape[0] - 2 * crop_border, arr.shape[1] - 2 * crop_border
    if (h // 96) * (w // 96) < 2:  # one block gives no covariance (basicsr fails with 'SVD did not converge')
        raise ValueError(f'niqe needs at least two 96x96 blocks (e.g. 192x96 pixels), got {w}x{h}')
    return float(calculate_niqe(np.ascontiguousarray(arr), crop_border, input_order='HWC', convert_to=convert_to))


def standard_metric(metric: str, pred: Any, gt: Any = None, channel_order: str = 'bgr', **opts) -> float:
    """One metric value: pyiqa's, or BasicSR's NIQE for ``niqe`` (full-reference when ``gt`` is given).

    Args:
        metric: ``niqe`` (BasicSR's), ``niqe_pyiqa`` (pyiqa's) or a pyiqa metric name (``psnr``, ``lpips``, ...).
        pred: Prediction (numpy or tensor, see module docstring).
        gt: Reference image, same size; ignored by no-reference metrics.
        channel_order: Channel order of numpy inputs (``bgr`` or ``rgb``).
        **opts: pyiqa options; ``psnr``/``ssim`` default to ``test_y_channel=True, color_space='ycbcr'``.
            ``device`` picks the device (default: CPU for psnr/ssim, else CUDA when available); ``weights_dir``
            a folder of weight files. ``niqe`` takes ``crop_border`` and ``convert_to`` only.

    Returns:
        The score as a float.
    """
    if metric == BASICSR_NIQE:
        return basicsr_niqe(pred, channel_order, **opts)
    weights_dir = opts.pop('weights_dir', None)
    opts = {**_Y_DEFAULTS.get(metric, {}), **opts}
    device = _device(opts, metric)
    fn = get_pyiqa_metric(pyiqa_name(metric), device, weights_dir, **opts)
    x = to_rgb_tensor(pred, channel_order)
    dtype = torch.float64 if metric in _Y_DEFAULTS else torch.float32
    x = x.to(device, dtype)
    with torch.no_grad():
        if gt is None or is_no_reference(metric):
            score = fn(x)
        else:
            y = to_rgb_tensor(gt, channel_order).to(device, dtype)
            if x.shape != y.shape:
                raise ValueError(f'image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}')
            score = fn(x, y)
    return float(torch.as_tensor(score).reshape(-1)[0])


# ----------------------------------------------------------------------------------------------------------------
def compute(metric: str, pred: Any, gt: Any = None, protocol: str = 'standard', **opts) -> float:
    """One metric value under ``protocol`` (``standard`` or ``official``).

    Args:
        metric: ``psnr``/``ssim`` (both protocols); ``niqe`` (BasicSR), ``niqe_pyiqa`` or any pyiqa name (standard).
        pred: Prediction image.
        gt: Reference image.
        protocol: ``standard`` (pyiqa) or ``official`` (the UDR-S2Former test script).
        **opts: ``channel_order`` (numpy inputs, default ``bgr``); standard protocol: pyiqa options.

    Returns:
        The score.

    Raises:
        ValueError: unknown protocol, or an option the official protocol does not have; a NaN score.
        NonFiniteImage: an image holds NaN or inf.
        MetricUnavailable: the metric cannot be computed here.
    """
    check_protocol(metric, protocol)
    channel_order = opts.pop('channel_order', 'bgr')
    if protocol == 'official':
        if gt is None:
            raise ValueError(f'official {metric} needs a reference image')
        y, crop = opts.pop('test_y_channel', True), opts.pop('crop_border', 0)
        if y is not True or crop != 0 or opts:
            raise ValueError(
                'the official protocol has no options (always Y channel, no border crop); got '
                f'test_y_channel={y}, crop_border={crop}, others={sorted(opts)}'
            )
        fn = official_psnr if metric == 'psnr' else official_ssim
        value = fn(pred, gt, channel_order)
    else:
        value = standard_metric(metric, pred, gt, channel_order, **opts)
    if math.isnan(value):  # never passed on: a mean would drop it or turn NaN without saying why
        raise ValueError(f'{protocol} {metric} is NaN for this image')
    return value
