"""The paper's losses against the official training code's values on the shared fixture cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss

from s2former_plugin.losses.s2former_loss import (
    MultiScalePSNRLoss,
    S2FormerPerceptualLoss,
    UncertaintyDrivenLoss,
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
