"""Float64 parity with the official network: forward to 1e-10, every parameter's gradient, custom autograd pieces.

In float64 the uncertainty ranking has no near-ties that rounding can flip, so the mathematics alone decides and
the comparisons can be tight (see ``docs/testing.md``). These tests catch a wrong training path (a gradient
formula, a scale dropped only with autograd) that the float32 inference parity cannot see.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2former_plugin.archs import s2former_ranking as udr
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.archs.s2former_blocks import (
    BiasFreeLayerNorm,
    LocalReconstruction,
    ReconstructionLayer,
    SparseSamplingAttention,
)
from s2former_plugin.official import build_from_official, official_key_to_ours

DATA = Path(__file__).resolve().parents[1] / 'data'


@pytest.fixture(scope='module')
def state_dict() -> dict:
    return torch.load(DATA / 'official_small_seed1.pt', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def forward64() -> dict:
    return torch.load(DATA / 'official_small_seed1_float64.pt', weights_only=True)


@pytest.fixture(scope='module')
def grads64() -> dict:
    return torch.load(DATA / 'official_small_seed1_float64_grads.pt', weights_only=True)


def _net64(config: dict, state_dict: dict) -> S2Former:
    return build_from_official(config, state_dict).double()


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_forward_float64_equals_official(forward64, state_dict):
    net = _net64(forward64['config'], state_dict).eval()
    for case in forward64['cases']:
        with torch.no_grad():
            outputs, uncertainties = net(case['input'], return_all=True)
        maps = outputs + uncertainties
        refs = case['outputs'] + case['uncertainties']
        assert len(maps) == len(refs) == 10
        for i, (ours, ref) in enumerate(zip(maps, refs, strict=True)):
            assert ours.dtype == torch.float64
            assert _max_abs(ours, ref) <= 1e-10, f'map {i} of case {tuple(case["input"].shape)}'


def test_training_forward_and_gradients_equal_official(grads64, state_dict):
    """Train mode, the stored probe loss over all ten maps: loss and every parameter's gradient (official keys)."""
    net = _net64(grads64['config'], state_dict).train()
    outputs, uncertainties = net(grads64['input'], return_all=True)
    maps = outputs + uncertainties
    loss = sum((m * p).mean() for m, p in zip(maps, grads64['probes'], strict=True))
    assert abs(loss.item() - grads64['loss'].item()) <= 1e-12
    loss.backward()
    params = dict(net.named_parameters())
    assert len(grads64['grads']) == len(params)
    worst = []
    for official_name, ref in grads64['grads'].items():
        p = params[official_key_to_ours(official_name)]
        assert p.grad is not None, official_name
        # Relative to the largest gradient entry of the parameter (some gradients are ~1e-8 in size).
        err = _max_abs(p.grad, ref) / max(ref.abs().max().item(), 1e-30)
        worst.append((err, official_name))
    err, name = max(worst)
    assert err <= 1e-10, f'gradient of {name} differs from the official one by {err:.3g} (relative)'


def test_with_and_without_gradient_forwards_agree(forward64, state_dict):
    """The autograd forward (hand-written LayerNorm, written-out attention) equals the inference forward."""
    net = _net64(forward64['config'], state_dict).train()  # no dropout anywhere: train mode only enables autograd
    x = forward64['cases'][0]['input']
    with torch.no_grad():
        ref_out, ref_unc = net(x, return_all=True)
    out, unc = net(x, return_all=True)
    assert out[0].requires_grad
    for a, b in zip(out + unc, ref_out + ref_unc, strict=True):
        assert _max_abs(a.detach(), b) <= 1e-12


def test_bias_free_layernorm_gradcheck():
    torch.manual_seed(0)
    norm = BiasFreeLayerNorm(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    # A mean far from zero: the backward's mean term matters (it is what a centred LayerNorm would not have).
    x = (torch.randn(2, 6, 3, 4, dtype=torch.float64) + 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: _layernorm_with(norm, x, w), (x, norm.weight), eps=1e-6, atol=1e-8)
    # Input gradient only, and weight gradient only.
    w = norm.weight.detach().clone()
    assert torch.autograd.gradcheck(lambda x: _layernorm_with(norm, x, w), (x,), eps=1e-6, atol=1e-8)
    wg = norm.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: _layernorm_with(norm, x.detach(), w), (wg,), eps=1e-6, atol=1e-8)


def _layernorm_with(norm: BiasFreeLayerNorm, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``norm`` applied with ``weight`` in place of its parameter (gradcheck needs the weight as an input)."""
    return torch.func.functional_call(norm, {'weight': weight}, (x,))


def test_bias_free_layernorm_autograd_path_equals_plain_ops():
    torch.manual_seed(1)
    norm = BiasFreeLayerNorm(8).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(2, 8, 5, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    g = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    # Reference: the plain formula, differentiated by autograd.
    xr = x.detach().clone().requires_grad_()
    wr = norm.weight.detach().clone().requires_grad_()
    ref = xr / torch.sqrt(xr.var(1, keepdim=True, unbiased=False) + norm.eps) * wr[:, None, None]
    (ref * g).sum().backward()
    out = norm(x)
    (out * g).sum().backward()
    assert _max_abs(out.detach(), ref.detach()) <= 1e-12
    assert _max_abs(x.grad, xr.grad) <= 1e-10 * xr.grad.abs().max().item()
    assert _max_abs(norm.weight.grad, wr.grad) <= 1e-10 * wr.grad.abs().max().item()


@pytest.mark.parametrize('sparse', [True, False], ids=['sparse_sampling', 'local_reconstruction'])
def test_decoder_attention_gradcheck_and_grad_paths_agree(sparse):
    """Each decoder attention: gradcheck in float64, and the with-gradient forward equals the no-gradient one."""
    torch.manual_seed(2)
    dim, heads, ws = 8, 2, 4
    attn_cls = SparseSamplingAttention if sparse else LocalReconstruction
    attn = attn_cls(dim, heads, ws).double()
    with torch.no_grad():  # non-trivial relative position bias
        attn.relative_position_bias_table.normal_(0, 0.5)
    x = torch.randn(1, 8, 8, dim, dtype=torch.float64)
    var = torch.randn(1, dim, 8, 8, dtype=torch.float64)
    guide = udr.ssa_constraint(var) if sparse else udr.lr_modulation(var, ws, attn.scale)
    with torch.no_grad():
        ref = attn(x, guide)
    out = attn(x.clone().requires_grad_(), guide)
    assert out.requires_grad and _max_abs(out.detach(), ref) <= 1e-12
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: attn(t, guide), (xg,), eps=1e-6, atol=1e-7)


def test_reconstruction_layer_alternates_sparse_and_local():
    """Even blocks are sparse sampling attention, odd ones local reconstruction, for any depth."""
    layer = ReconstructionLayer(7, 16, 2, 8)
    kinds = [type(block.attn) for block in layer]
    assert kinds == [SparseSamplingAttention, LocalReconstruction] * 3 + [SparseSamplingAttention]
