"""The paper-size network (the released checkpoints' configuration) actually runs: forward, training step, keys.

The small preset has two blocks per stage; the paper's has 3/6/7/8 decoder blocks, 4/6/7/8 encoder blocks and 8
bottleneck blocks, so only these tests exercise the third and later blocks of each stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s2former_plugin.archs.s2former_arch import PRESETS, S2Former
from s2former_plugin.losses.s2former_loss import MultiScalePSNRLoss, UncertaintyDrivenLoss
from s2former_plugin.official import infer_config, ours_state_dict_to_official

MANIFEST = Path(__file__).resolve().parents[1] / 'data' / 'official_default_manifest.json'


@pytest.fixture(scope='module')
def official_state_dict() -> dict[str, torch.Tensor]:
    """A state dict with exactly the keys (in order), shapes and dtypes of a released checkpoint.

    Values: a seeded network's initialisation with every float tensor perturbed, so a load that silently skips a
    tensor is visible.
    """
    torch.manual_seed(1)
    ours = ours_state_dict_to_official(S2Former().state_dict())
    manifest = json.loads(MANIFEST.read_text())['state_dict']
    assert sorted(ours) == sorted(k for k, _, _ in manifest)
    sd = {k: ours[k] for k, _, _ in manifest}  # the released files' key order
    assert [(list(v.shape), str(v.dtype).removeprefix('torch.')) for v in sd.values()] == [
        (list(shape), dtype) for _, shape, dtype in manifest
    ]
    gen = torch.Generator().manual_seed(0)
    return {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in sd.items()}


@pytest.fixture(scope='module')
def paper_net(official_state_dict) -> S2Former:
    net = S2Former()
    net.load_state_dict(official_state_dict, strict=True)
    return net


def test_official_keys_load_into_paper_net(paper_net, official_state_dict):
    assert ours_state_dict_to_official(paper_net.state_dict()).keys() == official_state_dict.keys()
    back = ours_state_dict_to_official(paper_net.state_dict())
    assert all(torch.equal(back[k], v) for k, v in official_state_dict.items())


def test_infer_config_on_paper_state_dict(paper_net, official_state_dict):
    expected = S2Former().config
    for sd in (official_state_dict, paper_net.state_dict()):
        cfg = infer_config(sd)
        assert S2Former(**cfg).config == expected
    assert expected['num_reconstruction_blocks'] == list(PRESETS['paper']['num_reconstruction_blocks'])


def test_paper_forward_shapes_and_grad_paths_agree(paper_net):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    net = paper_net.eval()
    with torch.no_grad():
        outputs, uncertainties = net(x, return_all=True)
    sizes = [64, 64, 32, 16, 8]
    for o, u, s in zip(outputs, uncertainties, sizes, strict=True):
        assert o.shape == u.shape == (1, 3, s, s)
        assert torch.isfinite(o).all() and torch.isfinite(u).all()
    # The autograd forward (hand-written LayerNorm, written-out attention) gives the same maps at paper depth.
    grad_outputs, grad_uncertainties = net(x, return_all=True)
    for a, b in zip(grad_outputs + grad_uncertainties, outputs + uncertainties, strict=True):
        assert (a.detach() - b).abs().max().item() <= 1e-4


def test_paper_training_step(official_state_dict):
    torch.manual_seed(0)
    net = S2Former().train()
    net.load_state_dict(official_state_dict, strict=True)
    x, gt = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)

    def loss_fn() -> torch.Tensor:
        outputs, uncertainties = net(x, return_all=True)
        return MultiScalePSNRLoss()(outputs, gt) + UncertaintyDrivenLoss()(outputs, uncertainties, gt)

    loss = loss_fn()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f'no finite gradient for {missing[:5]}'
    # Random weights leave a few of the refinement's narrow ReLU gates (1-4 hidden channels) dead, with zero
    # gradient; nothing else.
    zero = {k for k, p in net.named_parameters() if not p.grad.any()}
    assert all(k.startswith('refinement.') and ('.gate.' in k or '.channel_attn.' in k) for k in zero), sorted(zero)
    assert len(zero) < 0.05 * len(before)
    opt.step()
    unchanged = {k for k, p in net.named_parameters() if torch.equal(p.detach(), before[k])}
    assert unchanged == zero
    with torch.no_grad():
        assert loss_fn() < loss.detach()  # one small step downhill
