"""Uncertainty measures (metrics/uncertainty.py) against hand computations on small arrays, the metrics protocol's Y
channel, and the one-line refusals of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from s2former_plugin.metrics import protocols
from s2former_plugin.metrics import uncertainty as U
from s2former_plugin.metrics.uncertainty import UncertaintyError


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(U.average_ranks(np.array([3, 1, 4, 1, 5])), [3, 1.5, 4, 1.5, 5])
    np.testing.assert_array_equal(U.average_ranks(np.array([[2.0, 2.0], [2.0, 0.0]])), [3, 3, 3, 1])


def test_spearman_by_hand():
    e = np.array([[1.0, 2.0], [3.0, 4.0]])
    # No ties: 1 - 6 sum(d^2) / (n (n^2 - 1)) with d = (0, 1, -1, 0): 1 - 12/60.
    assert U.spearman(np.array([[1.0, 3.0], [2.0, 4.0]]), e) == pytest.approx(0.8, abs=1e-15)
    # Ties: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4): centred dot 4.5 over sqrt(4.5 * 5).
    u = np.array([[1.0, 1.0], [2.0, 3.0]])
    assert U.spearman(u, e) == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-15)
    rng = np.random.default_rng(0)
    e = rng.random((9, 11))
    u = np.round(e * 4 + rng.random((9, 11)), 0)  # many ties
    assert U.spearman(u, e) == pytest.approx(spearmanr(u.ravel(), e.ravel())[0], abs=1e-12)


def test_perfect_and_reversed_uncertainty():
    e = np.random.default_rng(1).random((8, 6))
    fr = U.fractions(10)
    for u in (e, 3 * e - 1, np.exp(e)):  # any increasing function of the error is perfect
        assert U.spearman(u, e) == pytest.approx(1.0, abs=1e-12)
        assert U.ause(U.sparsification_curve(u, e, fr), U.oracle_curve(e, fr), fr) == 0.0
    assert U.spearman(-e, e) == pytest.approx(-1.0, abs=1e-12)


def test_sparsification_oracle_random_ause_aurg_by_hand():
    e = np.array([4.0, 3.0, 2.0, 1.0])
    u = np.array([1.0, 4.0, 3.0, 2.0])  # removes errors 3, 2, 1, then 4
    fr = U.fractions(4)
    np.testing.assert_array_equal(fr, [0, 0.25, 0.5, 0.75])
    ours = U.sparsification_curve(u, e, fr)
    np.testing.assert_allclose(ours, [2.5, 7 / 3, 2.5, 4.0], rtol=1e-15)
    np.testing.assert_allclose(U.oracle_curve(e, fr), [2.5, 2.0, 1.5, 1.0], rtol=1e-15)
    np.testing.assert_array_equal(U.random_curve(e, fr), [2.5] * 4)
    # Trapezoids of width 1/4 over ours - oracle = (0, 1/3, 1, 3) and random - ours = (0, 1/6, 0, -3/2).
    assert U.ause(ours, U.oracle_curve(e, fr), fr) == pytest.approx(17 / 24, abs=1e-15)
    assert U.aurg(ours, U.random_curve(e, fr), fr) == pytest.approx(-7 / 48, abs=1e-15)


def test_ties_leave_together_whatever_the_order():
    e, u = np.array([3.0, 1.0, 5.0]), np.array([1.0, 1.0, 0.0])
    fr = U.fractions(3)
    # Removing one of the tied pair takes its mean error 2 in expectation: (9 - 2) / 2.
    np.testing.assert_allclose(U.sparsification_curve(u, e, fr), [3.0, 3.5, 5.0], rtol=1e-15)
    perm = [2, 0, 1]
    np.testing.assert_array_equal(U.sparsification_curve(u[perm], e[perm], fr), U.sparsification_curve(u, e, fr))
    big = np.random.default_rng(2).random((16, 16))
    flat = U.sparsification_curve(np.zeros_like(big), big)  # an uninformative map follows the random curve
    np.testing.assert_allclose(flat, U.random_curve(big), rtol=1e-12)


def test_seeded_random_curve_is_a_permutation_and_hovers_round_the_mean():
    e = np.random.default_rng(3).random((32, 32))
    a, b = U.random_curve(e, rng=5), U.random_curve(e, rng=5)
    np.testing.assert_array_equal(a, b)
    assert a[0] == pytest.approx(e.mean()) and np.abs(a - e.mean()).max() < 0.05


def test_detection_scores_by_hand():
    u = np.array([[0.9, 0.8], [0.8, 0.1]])
    mask = np.array([[1, 0], [1, 0]], np.uint8)
    # Positive/negative pairs: (.9>.8) (.9>.1) (.8=.8: half) (.8>.1) -> 3.5 of 4.
    assert U.auroc(u, mask) == 0.875
    # Thresholds .9: P 1, R 1/2; .8: P 2/3, R 1; .1: R unchanged.
    assert U.average_precision(u, mask) == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)
    assert U.auroc(mask.astype(float), mask) == 1.0 and U.average_precision(mask * 2.0, mask) == 1.0
    assert U.auroc(-mask.astype(float), mask) == 0.0
    assert U.auroc(np.zeros((2, 2)), mask) == 0.5  # all tied: chance
    assert U.average_precision(np.zeros((2, 2)), mask) == 0.5  # all tied: the positive rate


@pytest.mark.parametrize(
    ('call', 'message'),
    [
        (lambda: U.spearman(np.ones((3, 3)), np.random.rand(3, 3), 'a.npz'), r'^a\.npz: the uncertainty map is const'),
        (lambda: U.spearman(np.random.rand(3, 3), np.ones((3, 3)), 'a.npz'), 'error map is constant'),
        (
            lambda: U.spearman(np.random.rand(3, 4), np.random.rand(4, 3), 'a.npz'),
            r'a\.npz: .* is 4x3, the error .* 3x4',
        ),
        (lambda: U.auroc(np.random.rand(3, 3), np.zeros((3, 3)), 'm.png'), r'^m\.png: rain mask has no rain pixel'),
        (lambda: U.auroc(np.random.rand(3, 3), np.ones((3, 3)), 'm.png'), 'only rain pixels'),
        (lambda: U.average_precision(np.random.rand(3, 3), np.ones((2, 3)), 'm.png'), r'mask is 3x2, the map 3x3'),
        (lambda: U.pixel_map(np.array([[0.0, np.nan]]), 'a.npz'), r'^a\.npz: uncertainty map holds 1 NaN/inf'),
        (lambda: U.pixel_map(np.zeros((1, 1, 2, 2)), 'a.npz'), 'must be H x W or C x H x W'),
        (lambda: U.fractions(0), 'steps'),
        (lambda: U.error_map(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), name='p.png'), r'^p\.png: size 4x4 differs'),
        (lambda: U.error_map(np.full((2, 2, 3), np.inf), np.zeros((2, 2, 3)), name='p.png'), 'p.png: image holds 12'),
        (lambda: U.error_map(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), 'matlab'), 'protocol'),
    ],
)
def test_bad_input_is_one_line_naming_the_file(call, message):
    with pytest.raises(UncertaintyError, match=message) as info:
        call()
    assert '\n' not in str(info.value)


def test_error_map_is_the_protocols_y_channel():
    rng = np.random.default_rng(4)
    pred = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    e = U.error_map(pred, gt)
    assert e.shape == (12, 10) and e.dtype == np.float64
    # PSNR from the error map equals the standard protocol's Y PSNR (pyiqa adds 1e-8 to the MSE).
    psnr = protocols.compute('psnr', pred, gt)
    assert 10 * math.log10(1 / (np.mean(e**2) + 1e-8)) == pytest.approx(psnr, abs=1e-9)
    # By hand: BT.601 Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255 of BGR uint8 pixels.
    y = lambda im: (im[..., 2] * 65.481 + im[..., 1] * 128.553 + im[..., 0] * 24.966) / 255 / 255 + 16 / 255  # noqa: E731
    # (pyiqa holds the BT.601 weights in float32: agreement to 1e-7)
    np.testing.assert_allclose(e, np.abs(y(pred.astype(float)) - y(gt.astype(float))), atol=1e-7)
    official = U.error_map(pred, gt, 'official')
    peak_mse = np.mean((official * 255) ** 2)
    assert 20 * math.log10(255 / math.sqrt(peak_mse)) == pytest.approx(protocols.official_psnr(pred, gt), abs=1e-4)
    np.testing.assert_array_equal(U.error_map(pred, gt, crop_border=2), e[2:-2, 2:-2])
    t = torch.from_numpy(pred[..., ::-1] / 255.0).permute(2, 0, 1)[None]  # an RGB tensor is the same image
    np.testing.assert_allclose(U.error_map(t, gt), e, atol=1e-12)


def test_pixel_map_and_baseline():
    chw = np.stack([np.full((2, 3), v) for v in (1.0, 2.0, 6.0)])
    np.testing.assert_array_equal(U.pixel_map(chw), np.full((2, 3), 3.0))
    np.testing.assert_array_equal(U.pixel_map(torch.from_numpy(chw).float()), np.full((2, 3), 3.0))
    assert (U.blur_residual_map(np.full((9, 9, 3), 77, np.uint8)) == 0).all()
    img = np.zeros((9, 9), np.float32)
    img[4, 4] = 1.0
    r = U.blur_residual_map(img, sigma=1.0)
    assert r.shape == (9, 9) and r.argmax() == 40 and r[4, 4] > 0.8


def test_spread_is_the_99th_minus_the_1st_percentile():
    # 0, 1, ..., 100: numpy's linear percentiles are exactly 1 and 99
    assert U.spread(np.arange(101.0).reshape(1, 101)) == 98.0
    assert U.spread(np.full((4, 4), -1.0)) == 0.0
    # a map on the ELU floor but for 0.5 % of its pixels: the bulk is flat, so its spread is 0 (not 0.5)
    floor = np.full(1000, -1.0)
    floor[::200] = -0.5
    assert U.spread(floor) == 0.0


def test_score_uncertainty_row_curves_crop_and_mask():
    rng = np.random.default_rng(6)
    e = rng.random((10, 12))
    u = np.stack([e, e, e]) + 0.01 * rng.random((3, 10, 12))
    mask = e > 0.6
    s = U.score_uncertainty(u, e, mask, steps=5)
    assert set(s.row()) == {'spearman', 'ause', 'aurg', 'mean_error', 'spread', 'auroc', 'average_precision'}
    assert s.spearman > 0.99 and s.ause < 0.01 and s.aurg > 0 and s.auroc > 0.99
    assert s.mean_error == pytest.approx(e.mean()) and s.curves['fractions'] == [0, 0.2, 0.4, 0.6, 0.8]
    assert set(U.score_uncertainty(u, e).row()) == {'spearman', 'ause', 'aurg', 'mean_error', 'spread'}
    assert s.spread == U.spread(u.mean(0))
    cropped = U.score_uncertainty(u, e[1:-1, 1:-1], mask, steps=5, crop_border=1)  # map and mask cut alike
    assert cropped.spearman == U.spearman(u.mean(0)[1:-1, 1:-1], e[1:-1, 1:-1])
    with pytest.raises(UncertaintyError, match=r'^m\.png: rain mask has no rain'):
        U.score_uncertainty(u, e, np.zeros_like(mask), name='a.npz', mask_name='m.png')
