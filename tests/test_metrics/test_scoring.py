"""Metric inputs beyond 8-bit BGR: 16-bit, float, grey, RGBA, RGB order, explicit options; which metrics rank lower
as better. Found by mutation testing: each test kills mutants that the value tests let through."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2former_plugin.metrics import protocols
from s2former_plugin.metrics.protocols import compute, lower_is_better, official_psnr, official_ssim

PROTOCOLS = ('standard', 'official')


def _pair(seed: int = 0, shape: tuple[int, ...] = (24, 30, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(30, 220, shape).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-25, 26, shape), 0, 255).astype(np.uint8)
    return pred, gt


@pytest.mark.parametrize('protocol', PROTOCOLS)
@pytest.mark.parametrize('metric', ['psnr', 'ssim'])
def test_16bit_and_float_arrays_score_like_the_same_8bit_image(protocol, metric):
    pred, gt = _pair(1)
    ref = compute(metric, pred, gt, protocol)
    # 257 * k maps 0..255 exactly onto 0..65535; float arrays are on the 0-1 scale.
    assert compute(metric, pred.astype(np.uint16) * 257, gt.astype(np.uint16) * 257, protocol) == pytest.approx(
        ref, abs=1e-4
    )
    assert compute(metric, pred / 255.0, gt / 255.0, protocol) == pytest.approx(ref, abs=1e-4)
    assert compute(metric, (pred / 255).astype(np.float32), gt, protocol) == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize('protocol', PROTOCOLS)
def test_rgba_scores_like_its_colour_and_rgb_order_is_honoured(protocol):
    pred, gt = _pair(2)
    alpha = np.random.default_rng(3).integers(0, 256, (*pred.shape[:2], 1)).astype(np.uint8)
    for metric in ('psnr', 'ssim'):
        ref = compute(metric, pred, gt, protocol)
        rgba = compute(metric, np.concatenate([pred, alpha], 2), np.concatenate([gt, 255 - alpha], 2), protocol)
        assert rgba == pytest.approx(ref, abs=1e-12)
        rgb = compute(metric, pred[..., ::-1], gt[..., ::-1], protocol, channel_order='rgb')
        assert rgb == pytest.approx(ref, abs=1e-12)
        # The order matters for a colour image (Y weights differ per channel): 'rgb' on BGR data is another score.
        assert compute(metric, pred, gt, protocol, channel_order='rgb') != pytest.approx(ref, abs=1e-6)


def test_official_grey_images_are_their_own_y_channel():
    pred, gt = _pair(4, (20, 26))
    mse = np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2)
    assert compute('psnr', pred, gt, 'official') == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-4)
    assert compute('psnr', pred[..., None], gt[..., None], 'official') == compute('psnr', pred, gt, 'official')
    assert compute('ssim', pred, gt, 'official') == compute('ssim', pred[..., None], gt[..., None], 'official')
    grey_tensor = torch.from_numpy(pred / 255.0)  # H x W
    assert compute('psnr', grey_tensor, gt, 'official') == pytest.approx(compute('psnr', pred, gt, 'official'))


def test_tensor_inputs():
    pred, gt = _pair(5)
    t_pred = torch.from_numpy(np.ascontiguousarray(pred[..., ::-1])).permute(2, 0, 1)  # RGB, uint8, C x H x W
    for protocol in PROTOCOLS:
        ref = compute('psnr', pred, gt, protocol)
        assert compute('psnr', t_pred.float() / 255, gt, protocol) == pytest.approx(ref, abs=1e-4)
        assert compute('psnr', t_pred[None].float() / 255, gt, protocol) == pytest.approx(ref, abs=1e-4)
        assert compute('psnr', t_pred, gt, protocol) == pytest.approx(ref, abs=1e-4)  # integer tensor: 0-255
    with pytest.raises(ValueError, match='one image at a time, got a batch of 2'):
        compute('psnr', torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_official_functions_default_to_bgr_arrays():
    pred, gt = _pair(6)
    assert official_psnr(pred, gt) == compute('psnr', pred, gt, 'official')
    assert official_ssim(pred, gt) == compute('ssim', pred, gt, 'official')


def test_explicit_default_options_are_accepted():
    pred, gt = _pair(7)
    for metric in ('psnr', 'ssim'):
        ref = compute(metric, pred, gt, 'official')
        assert compute(metric, pred, gt, 'official', test_y_channel=True, crop_border=0) == ref
        assert compute(metric, pred, gt, 'standard', device='cpu') == compute(metric, pred, gt)
        assert compute(metric, pred, gt, 'standard', device='auto') == compute(metric, pred, gt)


def test_bad_inputs_name_the_problem():
    pred, gt = _pair(8)
    with pytest.raises(ValueError, match=r'image shapes differ: \(24, 30, 1\) vs \(24, 29, 1\)'):
        compute('psnr', pred, gt[:, :29], 'official')
    with pytest.raises(ValueError, match='image shapes differ'):
        compute('psnr', pred, gt[:, :29])
    with pytest.raises(TypeError, match='unsupported image dtype int32'):
        compute('psnr', pred.astype(np.int32), gt.astype(np.int32))
    with pytest.raises(ValueError, match='expected an H x W x C image'):
        compute('psnr', pred[None], gt[None], 'official')
    with pytest.raises(ValueError, match='official ssim needs a reference image'):
        compute('ssim', pred, None, 'official')
    with pytest.raises(ValueError, match="protocol: 'matlab' is not one of standard, official"):
        compute('psnr', pred, gt, 'matlab')
    two = np.zeros((8, 8, 2), np.uint8)
    with pytest.raises(ValueError, match='1- or 3-channel images, got 2 channels'):
        official_ssim(two, two)


def test_lower_is_better():
    assert not lower_is_better('psnr') and not lower_is_better('ssim')
    assert lower_is_better('lpips') and lower_is_better('niqe') and lower_is_better('dists')
    assert not lower_is_better('musiq') and not lower_is_better('no_such_metric')
    assert protocols.PROTOCOLS == PROTOCOLS
