"""The paper's losses: the official training code's values on the fixture cases; the perceptual loss's defaults."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss

from s2former_plugin.losses.s2former_loss import (
    MultiScalePSNRLoss,
    S2FormerPerceptualLoss,
    UncertaintyDrivenLoss,
    default_vgg19_path,
    psnr_loss,
    target_pyramid,
)


def test_losses_equal_official_on_fixture(parity_fixture):
    udl, psnr = UncertaintyDrivenLoss(), MultiScalePSNRLoss()
    for case in parity_fixture['cases']:
        got_udl = udl(case['outputs'], case['uncertainties'], case['gt'])
        got_psnr = psnr(case['outputs'], case['gt'])
        assert abs(got_udl.item() - float(case['udl_loss'])) <= 1e-5
        assert abs(got_psnr.item() - float(case['psnr_loss_multiscale'])) <= 1e-5


def test_target_pyramid_matches_official_scale_factor_resizing():
    gt = torch.rand(2, 3, 64, 96)
    outs = [torch.zeros(2, 3, 64 >> k, 96 >> k) for k in (0, 0, 1, 2, 3)]
    pyramid = target_pyramid(gt, outs)
    assert pyramid[0] is gt and pyramid[1] is gt
    for k, t in enumerate(pyramid[2:], start=1):
        assert torch.equal(t, F.interpolate(gt, scale_factor=0.5**k, mode='bicubic'))


def test_udl_by_hand():
    y, gt = torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)
    u = torch.full((1, 1, 2, 2), 0.3)
    expected = 0.5 * torch.exp(torch.tensor(-0.3)) + 2 * 0.3
    assert UncertaintyDrivenLoss()([y], [u], gt).item() == pytest.approx(expected.item(), rel=1e-6)


def test_psnr_loss_by_hand():
    gt = torch.zeros(2, 3, 8, 8)
    final = torch.full_like(gt, 0.1)  # mse 0.01 -> -20 dB
    side = [torch.full((2, 3, 8 >> k, 8 >> k), 0.01) for k in (0, 1, 2, 3)]  # mse 1e-4 -> -40 dB
    loss = MultiScalePSNRLoss()([final, *side], gt)
    assert loss.item() == pytest.approx(-20 + 0.5 * -40, abs=1e-3)
    assert MultiScalePSNRLoss()(final, gt).item() == pytest.approx(-20, abs=1e-3)  # single-output archs


def test_registered_in_basicsr():
    assert isinstance(build_loss({'type': 'UncertaintyDrivenLoss'}), UncertaintyDrivenLoss)
    assert isinstance(build_loss({'type': 'MultiScalePSNRLoss', 'loss_weight': 2.0}), MultiScalePSNRLoss)


def test_perceptual_uses_vgg_conv1_features_without_normalisation(vgg19_file):
    loss = S2FormerPerceptualLoss(loss_weight=0.2, vgg_weights=str(vgg19_file))
    state = torch.load(vgg19_file, weights_only=True)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    c1 = lambda t: F.conv2d(t, state['features.0.weight'], state['features.0.bias'], padding=1)  # noqa: E731
    c2 = lambda t: F.conv2d(F.relu(c1(t)), state['features.2.weight'], state['features.2.bias'], padding=1)  # noqa: E731
    expected = 0.2 * (0.5 * F.l1_loss(c1(x), c1(y)) + 0.5 * F.l1_loss(c2(x), c2(y)))
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training
    pred = x.clone().requires_grad_()
    loss(pred, y).backward()  # gradients flow to the prediction, never into VGG
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_perceptual_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with pytest.raises(FileNotFoundError, match=r'vgg19-dcbb9e9d\.pth.*perceptual_opt:vgg_weights'):
        S2FormerPerceptualLoss()
    bad = tmp_path / 'not_vgg.pth'
    torch.save({'weight': torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match='not a torchvision VGG19 state dict'):
        S2FormerPerceptualLoss(vgg_weights=str(bad))


def test_default_vgg19_path_is_torchvisions_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    expected = os.path.join(str(tmp_path / 'th'), 'hub', 'checkpoints', 'vgg19-dcbb9e9d.pth')
    assert default_vgg19_path() == expected
    os.makedirs(os.path.dirname(expected))
    state = {
        'features.0.weight': torch.randn(64, 3, 3, 3),
        'features.0.bias': torch.randn(64),
        'features.2.weight': torch.randn(64, 64, 3, 3),
        'features.2.bias': torch.randn(64),
    }
    torch.save(state, expected)
    loss = S2FormerPerceptualLoss()  # found there without vgg_weights
    assert torch.equal(loss.conv1_1.weight, state['features.0.weight'])
    assert loss.loss_weight == 0.2  # the paper's weight is the default


def test_vgg_weights_are_read_weights_only_on_cpu(vgg19_file, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    S2FormerPerceptualLoss(vgg_weights=str(vgg19_file))
    assert calls and all(c.get('weights_only') is True and str(c.get('map_location')) == 'cpu' for c in calls)


def test_layer_weights_weigh_each_feature_term(vgg19_file):
    x, y = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12)
    first = S2FormerPerceptualLoss(loss_weight=1.0, vgg_weights=str(vgg19_file), layer_weights=(1.0, 0.0))
    second = S2FormerPerceptualLoss(loss_weight=1.0, vgg_weights=str(vgg19_file), layer_weights=(0.0, 1.0))
    f1x, f1y = first.conv1_1(x), first.conv1_1(y)
    assert first(x, y).item() == pytest.approx(F.l1_loss(f1x, f1y).item(), rel=1e-6)
    f2 = F.l1_loss(first.conv1_2(F.relu(f1x)), first.conv1_2(F.relu(f1y)))
    assert second(x, y).item() == pytest.approx(f2.item(), rel=1e-6)


def test_psnr_loss_of_identical_images_is_finite():
    x = torch.rand(2, 3, 8, 8)
    assert psnr_loss(x, x).item() == pytest.approx(-80.0, abs=1e-6)  # 10 log10(1e-8): the epsilon, not NaN


def test_multiscale_psnr_loss_with_one_side_output():
    gt = torch.rand(1, 3, 8, 8)
    final, side = gt + 0.1, torch.rand(1, 3, 4, 4)
    side_target = F.interpolate(gt, size=(4, 4), mode='bicubic')
    expected = psnr_loss(final, gt) + 0.5 * psnr_loss(side, side_target)
    assert MultiScalePSNRLoss()([final, side], gt).item() == pytest.approx(expected.item(), rel=1e-6)


def test_uncertainty_loss_refuses_lists_of_different_lengths():
    gt = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match='expected lists of equal length, got 2 and 1'):
        UncertaintyDrivenLoss()([gt, gt], [torch.zeros_like(gt)], gt)
