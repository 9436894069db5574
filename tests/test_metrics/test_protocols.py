"""Both metric protocols against hand-computed values, and the basicsr registry bridge."""

import math

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from basicsr.metrics.psnr_ssim import calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY
from helpers import photo

from s2former_plugin.metrics import protocols
from s2former_plugin.metrics.protocols import MetricUnavailable, compute


def _pair(seed=0, shape=(24, 32, 3)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(40, 200, shape, dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    return pred, gt


def test_y_conversion_formulas():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    # Standard: BT.601 on RGB, 0-1 scale.
    y_std = protocols.to_rgb_tensor(bgr)
    from pyiqa.utils.color_util import rgb2ycbcr

    expected = (16 + (65.481 * 30 + 128.553 * 20 + 24.966 * 10) / 255) / 255
    assert rgb2ycbcr(y_std)[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-8)  # pyiqa keeps float32 weights
    # Official: the BGR weights applied to RGB data (R and B swap weights), 0-255 scale.
    y_off = protocols.official_y(protocols._official_255(bgr, 'bgr'))
    assert y_off.dtype == np.float32 and y_off.shape == (2, 2, 1)
    assert y_off[0, 0, 0] == pytest.approx(16 + (24.966 * 30 + 128.553 * 20 + 65.481 * 10) / 255, abs=1e-4)


@pytest.mark.parametrize('protocol', ['standard', 'official'])
def test_psnr_of_known_mse_on_gray_images(protocol):
    gt = np.full((16, 16, 3), 100, np.uint8)
    pred = gt + 4  # Y difference 4 * 219 / 255 levels everywhere
    d = 4 * 219 / 255
    assert compute('psnr', pred, gt, protocol) == pytest.approx(20 * math.log10(255 / d), abs=1e-3)


def test_official_rb_swap_changes_psnr_on_colour_image():
    gt = np.full((16, 16, 3), 100, np.uint8)
    pred = gt.copy()
    pred[..., 0] += 10  # blue only (BGR)
    std = compute('psnr', pred, gt, 'standard')
    off = compute('psnr', pred, gt, 'official')
    assert std == pytest.approx(20 * math.log10(255 / (24.966 * 10 / 255)), abs=1e-2)  # pyiqa adds eps=1e-8 to mse
    assert off == pytest.approx(20 * math.log10(255 / (65.481 * 10 / 255)), abs=1e-3)
    assert std - off > 8  # the swap is measurable: ~8.4 dB here


def test_ssim_identical_is_one_and_psnr_inf():
    _, gt = _pair()
    assert compute('ssim', gt, gt, 'standard') == pytest.approx(1.0)
    assert compute('ssim', gt, gt, 'official') == pytest.approx(1.0)
    assert compute('psnr', gt, gt, 'official') == math.inf


def test_standard_psnr_matches_basicsr_y_psnr():
    pred, gt = _pair(1)
    ref = calculate_psnr(pred, gt, crop_border=0, test_y_channel=True)
    assert compute('psnr', pred, gt) == pytest.approx(ref, abs=1e-3)


def test_official_ssim_uses_replicate_borders_on_the_whole_map():
    pred, gt = _pair(2)
    a = protocols.official_y(protocols._official_255(pred, 'bgr'))[..., 0].astype(np.float64)
    b = protocols.official_y(protocols._official_255(gt, 'bgr'))[..., 0].astype(np.float64)
    # Hand-rolled SSIM with edge padding (= replicate) and a full-size map.
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()

    def filt(x):
        p = np.pad(x, 5, mode='edge')
        return np.array(
            [[(p[i : i + 11, j : j + 11] * win).sum() for j in range(x.shape[1])] for i in range(x.shape[0])]
        )

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = filt(a), filt(b)
    va, vb, cov = filt(a * a) - ma**2, filt(b * b) - mb**2, filt(a * b) - ma * mb
    ssim = (((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean()
    assert compute('ssim', pred, gt, 'official') == pytest.approx(ssim, abs=1e-9)
    assert compute('ssim', pred, gt, 'official') != pytest.approx(compute('ssim', pred, gt, 'standard'), abs=1e-4)


def test_official_float_tensor_is_neither_clamped_nor_quantised():
    gt = torch.full((1, 3, 8, 8), 0.5)
    pred = gt + 0.6  # exceeds 1
    d = 0.6 * 255 * (24.966 + 128.553 + 65.481) / 255
    assert compute('psnr', pred, gt, 'official') == pytest.approx(20 * math.log10(255 / d), abs=1e-3)
    standard = compute('psnr', pred, gt, 'standard')  # clamped to [0, 1] first
    assert standard > compute('psnr', pred, gt, 'official')


def test_official_protocol_rejects_other_metrics_and_options():
    pred, gt = _pair()
    with pytest.raises(ValueError, match='psnr, ssim only'):
        compute('lpips', pred, gt, 'official')
    with pytest.raises(ValueError, match='no options'):
        compute('psnr', pred, gt, 'official', crop_border=4)
    with pytest.raises(ValueError, match='protocol'):
        compute('psnr', pred, gt, 'matlab')


def test_registry_bridge_through_calculate_metric():
    for name in ('pyiqa', 'official_psnr', 'official_ssim'):
        assert name in METRIC_REGISTRY
    pred, gt = _pair(3)
    data = {'img': pred, 'img2': gt}
    assert calculate_metric(data, {'type': 'pyiqa', 'metric': 'psnr', 'test_y_channel': True}) == pytest.approx(
        compute('psnr', pred, gt)
    )
    assert calculate_metric(data, {'type': 'pyiqa', 'metric': 'ssim', 'better': 'higher'}) == pytest.approx(
        compute('ssim', pred, gt)
    )
    assert calculate_metric(data, {'type': 'official_psnr'}) == compute('psnr', pred, gt, 'official')
    assert calculate_metric(data, {'type': 'pyiqa', 'metric': 'ssim', 'protocol': 'official'}) == compute(
        'ssim', pred, gt, 'official'
    )
    chw = {'img': pred.transpose(2, 0, 1), 'img2': gt.transpose(2, 0, 1)}
    assert calculate_metric(chw, {'type': 'official_ssim', 'input_order': 'CHW'}) == compute(
        'ssim', pred, gt, 'official'
    )


# ----------------------------------------------------------------------------------------------------------------
# No-reference metrics
# ----------------------------------------------------------------------------------------------------------------
def test_niqe_equals_basicsr_calculate_niqe():
    from basicsr.metrics import calculate_niqe

    for seed in range(3):
        img = photo(seed)
        expected = calculate_niqe(img, 0, input_order='HWC', convert_to='y')
        assert compute('niqe', img) == expected  # the very same computation on uint8 BGR
        assert compute('niqe', img, img[::-1].copy()) == expected  # a reference is ignored
        assert compute('niqe', img.astype(np.uint16) * 257) == pytest.approx(expected, abs=1e-6)
        rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
        assert compute('niqe', rgb) == pytest.approx(expected, abs=1e-6)
        bridge = calculate_metric({'img': img}, {'type': 'pyiqa', 'metric': 'niqe', 'better': 'lower'})
        assert bridge == expected
    with pytest.raises(ValueError, match='two 96x96 blocks'):
        compute('niqe', photo(0, (100, 180)))


def test_piqe_equals_pyiqa():
    import pyiqa

    ref = pyiqa.create_metric('piqe', device='cpu')
    for seed in range(3):
        img = photo(seed, (72, 88))
        rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        assert compute('piqe', img) == pytest.approx(float(ref(rgb)), abs=1e-5)
        assert calculate_metric({'img': img, 'img2': img}, {'type': 'pyiqa', 'metric': 'piqe'}) == pytest.approx(
            float(ref(rgb)), abs=1e-5
        )


def test_no_reference_metrics_offline_leave_the_cache_untouched(tmp_path, monkeypatch):
    cache = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(cache))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    img = photo(1)
    for m in protocols.NR_DEFAULT_METRICS:
        protocols.check_metric(m)
        assert protocols.is_no_reference(m) and protocols.lower_is_better(m)
        assert math.isfinite(compute(m, img))
    for m, file in (('brisque', 'brisque_svm_weights.pth'), ('niqe_pyiqa', 'niqe_modelparameters.mat')):
        with pytest.raises(MetricUnavailable, match=f'needs {file}'):
            protocols.check_metric(m, weights_dir=str(tmp_path / 'no_weights_here'))
    assert not cache.exists()  # a refused download creates no folder either
    with pytest.raises(protocols.UnknownMetric, match='nique'):
        protocols.check_metric('nique')
    with pytest.raises(protocols.UnknownMetric):
        calculate_metric({'img': img}, {'type': 'pyiqa', 'metric': 'nique', 'on_unavailable': 'nan'})  # a typo
