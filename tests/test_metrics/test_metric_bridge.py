"""The bridges to the metrics: basicsr's ``val:metrics`` types (options passed on, unavailable metrics, start-up
checks of the entries) and the one scoring path of ``report`` and the benchmark (reading, scoring, means)."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest
from basicsr.metrics import calculate_metric
from helpers import basicsr_log

from s2former_plugin.metrics import protocols, pyiqa_metric
from s2former_plugin.metrics.pyiqa_metric import check_val_metrics, needs_reference
from s2former_plugin.metrics.scoring import finite_mean, read_image, score_images


def _pair(seed: int = 0, shape=(32, 40, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.integers(-40, 41, shape)
    noise[..., 0] *= 2  # the channels differ, so the channel order and the Y weights matter
    return np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8), gt


@pytest.mark.parametrize(
    'opts',
    [{'test_y_channel': False}, {'crop_border': 4}, {'channel_order': 'rgb'}, {'metric': 'ssim', 'crop_border': 3}],
)
def test_metric_options_reach_the_metric(opts):
    pred, gt = _pair()
    opts = dict(opts)
    metric = opts.pop('metric', 'psnr')
    value = calculate_metric({'img': pred, 'img2': gt}, {'type': 'pyiqa', 'metric': metric, **opts})
    assert value == pytest.approx(protocols.compute(metric, pred, gt, **opts), rel=1e-6)
    assert value != pytest.approx(protocols.compute(metric, pred, gt), rel=1e-4)  # the option changed the value


@pytest.mark.parametrize('kind', ['official_psnr', 'official_ssim'])
def test_official_types_pass_their_options_on_to_be_refused(kind):
    pred, gt = _pair()
    with pytest.raises(ValueError, match='the official protocol has no options'):
        calculate_metric({'img': pred, 'img2': gt}, {'type': kind, 'crop_border': 4})


def test_bad_bridge_arguments_name_themselves():
    pred, gt = _pair()
    with pytest.raises(ValueError) as info:
        pyiqa_metric.pyiqa(pred, gt, input_order='WHC')
    assert str(info.value) == "input_order: 'WHC' is not 'HWC' or 'CHW'"
    with pytest.raises(ValueError) as info:
        pyiqa_metric.pyiqa(pred, gt, on_unavailable='skip')
    assert str(info.value) == "on_unavailable: 'skip' is not 'raise' or 'nan'"


def test_unavailable_metric_raises_unless_nan_is_asked_for_and_then_warns_once(monkeypatch):
    def unavailable(metric, *args, **kwargs):
        raise protocols.MetricUnavailable(f'no weight file for {metric}')

    monkeypatch.setattr(protocols, 'compute', unavailable)
    monkeypatch.setattr(pyiqa_metric, '_warned', set())
    pred, gt = _pair()
    with pytest.raises(protocols.MetricUnavailable) as info:
        pyiqa_metric.pyiqa(pred, gt, metric='lpips')  # the default: a missing metric stops the run
    assert str(info.value) == "metric 'lpips' unavailable: no weight file for lpips"

    with basicsr_log() as records:
        for metric in ('lpips', 'lpips', 'dists', 'lpips'):
            assert math.isnan(pyiqa_metric.pyiqa(pred, gt, metric=metric, on_unavailable='nan'))
    assert [r.getMessage() for r in records] == [
        "metric 'lpips' unavailable, reported as nan: no weight file for lpips",
        "metric 'dists' unavailable, reported as nan: no weight file for dists",
    ]
    assert all(r.levelno == logging.WARNING for r in records)


def test_val_metric_entries_get_their_better_flag_in_any_order():
    metrics = {
        'plain': None,  # an entry basicsr would refuse itself: left alone
        'psnr_basicsr': {'type': 'calculate_psnr', 'crop_border': 0},  # not ours: basicsr's default
        'psnr': {'type': 'pyiqa'},  # psnr by default
        'niqe': {'type': 'pyiqa', 'metric': 'niqe'},
        'ssim': {'type': 'pyiqa', 'metric': 'ssim', 'better': 'higher'},
        'piqe': {'type': 'pyiqa', 'metric': 'piqe', 'better': 'lower'},
        'niqe_basicsr': {'type': 'calculate_niqe', 'crop_border': 0},
    }
    check_val_metrics(metrics)
    assert metrics['plain'] is None and 'better' not in metrics['psnr_basicsr']
    better = {name: m['better'] for name, m in metrics.items() if m and 'better' in m}
    assert better == {'psnr': 'higher', 'niqe': 'lower', 'ssim': 'higher', 'piqe': 'lower', 'niqe_basicsr': 'lower'}
    check_val_metrics(None)


@pytest.mark.parametrize(
    ('entry', 'message'),
    [
        (
            {'type': 'pyiqa', 'protocol': 'offical'},
            "val:metrics:m:protocol: 'offical' is not one of standard, official",
        ),
        (
            {'type': 'pyiqa', 'metric': 'niqe', 'protocol': 'official'},
            "val:metrics:m: the official protocol defines psnr, ssim only, not 'niqe'",
        ),
        ({'type': 'pyiqa', 'metric': 'psnr', 'better': 'Higher'}, "val:metrics:m:better: expected 'higher' or 'lower'"),
        ({'type': 'pyiqa', 'metric': 'niqe', 'better': 'higher'}, "val:metrics:m:better: 'higher', but lower values"),
        ({'type': 'calculate_niqe', 'better': 'higher'}, "val:metrics:m:better: 'higher', but lower values"),
    ],
)
def test_val_metric_entries_are_refused_at_start_up(entry, message):
    with pytest.raises(ValueError) as info:
        check_val_metrics({'m': entry})
    assert str(info.value).startswith(message), str(info.value)
    check_val_metrics({'m': {'type': 'pyiqa', 'metric': 'ssim', 'protocol': 'official'}})


def test_which_val_metrics_need_ground_truth():
    assert needs_reference({'type': 'pyiqa'})  # psnr
    assert needs_reference({'type': 'pyiqa', 'metric': 'ssim', 'protocol': 'official'})
    assert needs_reference({'type': 'official_psnr'}) and needs_reference({'type': 'calculate_ssim'})
    assert not needs_reference({'type': 'pyiqa', 'metric': 'niqe'})
    assert not needs_reference({'type': 'pyiqa', 'metric': 'piqe', 'protocol': 'standard'})
    assert not needs_reference({'type': 'calculate_niqe'})


def test_finite_mean_counts_identical_images_and_refuses_failed_scores():
    assert finite_mean([30.0, 40.0, math.inf]) == (35.0, 1)
    assert finite_mean([math.inf, math.inf]) == (math.inf, 2)
    mean, n_inf = finite_mean([])
    assert math.isnan(mean) and n_inf == 0
    for bad in (math.nan, -math.inf):
        with pytest.raises(ValueError) as info:
            finite_mean([30.0, bad, 20.0])
        assert str(info.value) == '1 of 3 scores are NaN or -inf; refusing to average around them'


def test_read_image_gives_bgr_in_its_own_depth(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    rgba = np.dstack([colour, rng.integers(0, 256, (6, 7), dtype=np.uint8)])
    double = rng.random((6, 7, 3))
    for name, img in (('c.png', colour), ('g.png', grey), ('a.png', rgba), ('d.tiff', double)):
        cv2.imwrite(str(tmp_path / name), img)
    assert np.array_equal(read_image(str(tmp_path / 'c.png')), colour)
    g = read_image(str(tmp_path / 'g.png'))
    assert g.dtype == np.uint16 and g.shape == (6, 7, 3) and all(np.array_equal(g[..., c], grey) for c in range(3))
    assert np.array_equal(read_image(str(tmp_path / 'a.png')), colour)  # alpha dropped
    d = read_image(str(tmp_path / 'd.tiff'))
    assert d.dtype == np.float32 and np.array_equal(d, double.astype(np.float32))
    cv2.imwrite(str(tmp_path / 'i.tiff'), colour.astype(np.int16))
    with pytest.raises(ValueError) as info:
        read_image(str(tmp_path / 'i.tiff'))
    assert str(info.value) == f'unsupported image depth int16: {tmp_path / "i.tiff"}'


def test_score_images_refusals_name_the_problem():
    pred, gt = _pair(shape=(10, 20, 3))
    with pytest.raises(ValueError) as info:
        score_images(pred, None, ['psnr', 'niqe', 'ssim'], 'standard')
    assert str(info.value) == 'psnr, ssim need(s) ground truth'
    with pytest.raises(ValueError) as info:
        score_images(pred, np.zeros((12, 20, 3), np.uint8), ['psnr'], 'standard')
    assert str(info.value) == 'size 20x10 differs from ground truth 20x12'
    with pytest.raises(ValueError) as info:
        score_images(pred, np.zeros((10, 21, 3), np.uint8), ['psnr'], 'standard')
    assert str(info.value) == 'size 20x10 differs from ground truth 21x10'


@pytest.mark.parametrize('protocol', ['standard', 'official'])
def test_score_images_passes_the_reference_and_the_weights_folder_where_they_belong(monkeypatch, protocol):
    calls = []

    def record(metric, pred, gt=None, protocol='standard', **opts):
        calls.append((metric, gt is not None, protocol, opts))
        return 1.0

    monkeypatch.setattr(protocols, 'compute', record)
    pred, gt = _pair()
    assert score_images(pred, gt, ['psnr', 'niqe'], protocol, weights_dir='w') == {'psnr': 1.0, 'niqe': 1.0}
    weights = {'weights_dir': 'w'} if protocol == 'standard' else {}  # the official protocol takes no options
    assert calls == [('psnr', True, protocol, weights), ('niqe', False, protocol, weights)]
    calls.clear()
    score_images(pred, gt, ['psnr'], protocol)
    assert calls == [('psnr', True, protocol, {})]


def test_score_images_values_are_the_metrics():
    pred, gt = _pair()
    scores = score_images(pred, gt, ['psnr', 'ssim'], 'official')
    assert scores == {m: protocols.compute(m, pred, gt, 'official') for m in ('psnr', 'ssim')}
    big, _ = _pair(shape=(96, 192, 3))  # NIQE needs two 96x96 blocks
    assert score_images(big, None, ['niqe'], 'standard') == {'niqe': protocols.compute('niqe', big)}
