"""Default metric values pinned: the standard protocol against BasicSR, the official one against stored values of
the official test script, and the report's numbers against both.

The official values below were computed once with ``psnr_ssim.py`` of Owen718/UDR-S2Former_deraining (commit
93c50a8) exactly as its ``test.py`` calls it: images read with torchvision's ``ToTensor`` (RGB, float32 / 255),
``calculate_psnr/ssim(dehaze * 255, clean * 255, crop_border=0, test_y_channel=True)``, on the images that
:func:`_images` builds (numpy's seeded generators are stable across versions).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics.psnr_ssim import _ssim, calculate_psnr, calculate_ssim
from basicsr.utils.color_util import bgr2ycbcr

from s2former_plugin import report
from s2former_plugin.metrics.protocols import compute

# Official script on _images(): (psnr, ssim) of the uint8 prediction and of the unclamped float prediction.
OFFICIAL_UINT8 = (31.656930923461914, 0.7396157223861194)
OFFICIAL_FLOAT = (32.65009689331055, 0.7823200323226658)
# ... and of ``pred_float * 0.1 - 0.2`` (in float32 torch): so dark that its Y never exceeds 1, where the script
# takes 1 as the PSNR peak instead of 255.
OFFICIAL_DARK = (-42.70056915283203, -0.2518395658387149)


def _images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB ``gt`` and ``pred`` (uint8, 40 x 56, coloured gradients plus noise) and a float prediction ``pred_float``
    (float32, unclamped: it leaves [0, 1] like a network's raw output)."""
    rng = np.random.default_rng(17)
    yy, xx = np.mgrid[0:40, 0:56]
    base = np.stack([(xx * 4 + yy * 2) % 256, (yy * 5) % 256, (xx * 3 + 60) % 256], -1).astype(np.float64)
    gt = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).round().astype(np.uint8)
    pred = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).round().astype(np.uint8)
    pred_float = (gt / 255 + rng.normal(0, 0.04, gt.shape)).astype(np.float32)
    return gt, pred, pred_float


@pytest.fixture(scope='module')
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt, pred, pred_float = _images()
    assert pred_float.min() < 0 and pred_float.max() > 1
    return gt, pred, pred_float


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


# ---------------------------------------------------------------------------------------------- standard protocol
def test_standard_psnr_equals_basicsr_y_psnr(images):
    gt, pred, _ = images
    ref = calculate_psnr(_bgr(pred), _bgr(gt), crop_border=0, test_y_channel=True)
    # pyiqa converts to Y with float32 weights: equal to ~1e-4 dB; the R/B swap or RGB PSNR differ by > 0.1 dB.
    assert compute('psnr', _bgr(pred), _bgr(gt)) == pytest.approx(ref, abs=2e-4)
    assert abs(calculate_psnr(_bgr(pred), _bgr(gt), crop_border=0, test_y_channel=False) - ref) > 0.1


def test_standard_ssim_equals_basicsr_ssim_on_the_rounded_y_channel(images):
    gt, pred, _ = images
    ours = compute('ssim', _bgr(pred), _bgr(gt))
    # The standard SSIM is MATLAB's: Y rounded to 0-255 integers, then BasicSR's Gaussian SSIM (valid part);
    # pyiqa's float32 Y weights round a few pixels the other way (~3e-6 here).
    y_pred, y_gt = (np.round(bgr2ycbcr(_bgr(a).astype(np.float32) / 255, y_only=True) * 255) for a in (pred, gt))
    assert ours == pytest.approx(_ssim(y_pred, y_gt), abs=1e-5)
    # BasicSR's calculate_ssim keeps Y unrounded: the same metric up to that rounding.
    assert ours == pytest.approx(calculate_ssim(_bgr(pred), _bgr(gt), crop_border=0, test_y_channel=True), abs=2e-3)


def test_standard_values_of_tensors_equal_those_of_arrays(images):
    gt, pred, _ = images

    def tensor(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255

    for metric in ('psnr', 'ssim'):
        assert compute(metric, tensor(pred), tensor(gt)) == pytest.approx(compute(metric, _bgr(pred), _bgr(gt)))


# ---------------------------------------------------------------------------------------------- official protocol
def test_official_values_equal_the_official_script(images):
    gt, pred, pred_float = images
    assert compute('psnr', _bgr(pred), _bgr(gt), 'official') == pytest.approx(OFFICIAL_UINT8[0], abs=1e-5)
    assert compute('ssim', _bgr(pred), _bgr(gt), 'official') == pytest.approx(OFFICIAL_UINT8[1], abs=1e-12)
    raw = torch.from_numpy(pred_float).permute(2, 0, 1)[None]  # the network's float output, RGB
    assert compute('psnr', raw, _bgr(gt), 'official') == pytest.approx(OFFICIAL_FLOAT[0], abs=1e-5)
    assert compute('ssim', raw, _bgr(gt), 'official') == pytest.approx(OFFICIAL_FLOAT[1], abs=1e-12)
    dark = raw * 0.1 - 0.2
    assert compute('psnr', dark, _bgr(gt), 'official') == pytest.approx(OFFICIAL_DARK[0], abs=1e-5)
    assert compute('ssim', dark, _bgr(gt), 'official') == pytest.approx(OFFICIAL_DARK[1], abs=1e-12)


# ---------------------------------------------------------------------------------------------- report
@pytest.fixture(scope='module')
def folders(images, tmp_path_factory):
    gt, pred, pred_float = images
    root = tmp_path_factory.mktemp('report_values')
    for d in ('pred', 'gt', 'pred_float'):
        (root / d).mkdir()
    cv2.imwrite(str(root / 'gt' / 'a.png'), _bgr(gt))
    cv2.imwrite(str(root / 'pred' / 'a.png'), _bgr(pred))
    # A second pair: a shifted copy, for a mean over two different values.
    cv2.imwrite(str(root / 'gt' / 'b.png'), _bgr(np.roll(gt, 3, axis=1)))
    cv2.imwrite(str(root / 'pred' / 'b.png'), _bgr(np.roll(pred, 3, axis=0)))
    cv2.imwrite(str(root / 'pred_float' / 'a.tiff'), _bgr(pred_float))
    return root


def _report(root, pred: str, protocol: str) -> dict:
    out = root / f'out_{pred}_{protocol}'
    argv = ['--pred', str(root / pred), '--gt', str(root / 'gt'), '--out', str(out), '--protocol', protocol]
    if pred == 'pred_float':  # one prediction for two ground truths: accepted and listed, not an error
        argv.append('--allow-missing')
    assert report.main([*argv, '--workers', '1', '--no-progress']) == 0
    return json.loads((out / 'metrics.json').read_text())


def test_report_standard_numbers_equal_basicsr(folders):
    doc = _report(folders, 'pred', 'standard')
    assert doc['count'] == 2
    per_image = {}
    for name in ('a', 'b'):
        pred = cv2.imread(str(folders / 'pred' / f'{name}.png'))
        gt = cv2.imread(str(folders / 'gt' / f'{name}.png'))
        ref = calculate_psnr(pred, gt, crop_border=0, test_y_channel=True)
        assert doc['per_image'][name]['psnr'] == pytest.approx(ref, abs=2e-4)
        assert doc['per_image'][name]['ssim'] == pytest.approx(compute('ssim', pred, gt), abs=1e-12)
        per_image[name] = doc['per_image'][name]
    assert abs(per_image['a']['psnr'] - per_image['b']['psnr']) > 1
    for metric in ('psnr', 'ssim'):
        assert doc['mean'][metric] == pytest.approx(np.mean([v[metric] for v in per_image.values()]), abs=1e-12)


def test_report_official_numbers_equal_the_official_script(folders):
    doc = _report(folders, 'pred', 'official')
    assert doc['per_image']['a']['psnr'] == pytest.approx(OFFICIAL_UINT8[0], abs=1e-5)
    assert doc['per_image']['a']['ssim'] == pytest.approx(OFFICIAL_UINT8[1], abs=1e-12)
    # A float TIFF is scored unclamped and unquantised, like the script's float output.
    doc = _report(folders, 'pred_float', 'official')
    assert doc['count'] == 1
    assert doc['per_image']['a']['psnr'] == pytest.approx(OFFICIAL_FLOAT[0], abs=1e-5)
    assert doc['per_image']['a']['ssim'] == pytest.approx(OFFICIAL_FLOAT[1], abs=1e-12)
