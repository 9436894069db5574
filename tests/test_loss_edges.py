"""Perceptual-loss defaults and loading (found by mutation testing: each test kills mutants the loss tests let
through)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from s2former_plugin.losses.s2former_loss import (
    MultiScalePSNRLoss,
    S2FormerPerceptualLoss,
    UncertaintyDrivenLoss,
    default_vgg19_path,
    psnr_loss,
)


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
