"""Edge cases of the uncertainty ranking mask and of the ops switch (found by mutation testing: the network tests
never reach them)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2former_plugin.archs import s2former_ops as ops
from s2former_plugin.archs.s2former_ranking import topk_mask


def _reference(scores: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    k = int(keep_ratio * scores.shape[-1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, scores.topk(k, dim=-1).indices, True) if k > 0 else mask


@pytest.mark.parametrize('n', [1, 2, 3, 5, 64])
@pytest.mark.parametrize('keep_ratio', [0.0, 0.3, 0.8, 1.0])
def test_topk_mask_small_maps_and_extreme_ratios(n, keep_ratio):
    scores = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(n))
    mask = topk_mask(scores, keep_ratio)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert torch.equal(mask, _reference(scores, keep_ratio))


@pytest.mark.parametrize(
    ('value', 'fast'),
    [('', True), ('1', True), (' TRUE ', True), ('On', True), ('yes', True), ('0', False), ('False', False)]
    + [(' off', False), ('NO', False)],
)
def test_fast_ops_environment_spellings(monkeypatch, value, fast):
    """The variable as read at import, in-process (the subprocess tests of tests/test_archs/test_s2former_ops.py see
    the module as installed, not a modified copy)."""
    monkeypatch.setenv(ops.ENV_VAR, value)
    assert ops._read_env() is fast
    monkeypatch.delenv(ops.ENV_VAR)
    assert ops._read_env() is True


@pytest.mark.parametrize('value', ['2', 'of', 'none', 'y'])
def test_fast_ops_environment_typo_is_refused(monkeypatch, value):
    monkeypatch.setenv(ops.ENV_VAR, value)
    with pytest.raises(ValueError, match=f"^{ops.ENV_VAR}='{value}': expected 1"):
        ops._read_env()


@pytest.mark.parametrize('frozen', ['weights', 'input'])
def test_linear_gelu_keeps_gradients_when_only_one_side_needs_them(frozen):
    """A frozen layer on a trainable input (or the reverse) still needs autograd: the fused kernel has none."""
    torch.manual_seed(0)
    fc = nn.Linear(8, 16)
    x = torch.randn(3, 8, requires_grad=frozen == 'weights')
    fc.requires_grad_(frozen == 'input')
    with ops.fast_ops(True):
        out = ops.linear_gelu(x, fc)
    assert out.requires_grad
    leaf = x if frozen == 'weights' else fc.weight
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    xr, wr = x.detach().requires_grad_(frozen == 'weights'), fc.weight.detach().requires_grad_(frozen == 'input')
    (expected,) = torch.autograd.grad(
        torch.nn.functional.gelu(xr @ wr.T + fc.bias.detach()).sum(), xr if frozen == 'weights' else wr
    )
    torch.testing.assert_close(grad, expected)


def test_to_float32_leaves_float32_and_float64_alone():
    for dtype in (torch.float32, torch.float64):
        x = torch.ones(2, dtype=dtype)
        assert ops.to_float32(x) is x
    for dtype in (torch.float16, torch.bfloat16):
        assert ops.to_float32(torch.ones(2, dtype=dtype)).dtype == torch.float32


def test_lr_modulation_default_scale_is_one():
    """Without ``scale``: 1 for the keys in a query's top 80 % of the window affinity, ``LR_SHARPENING`` elsewhere."""
    from s2former_plugin.archs.s2former_ranking import LR_SHARPENING, lr_modulation

    var = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mod = lr_modulation(var, 4)
    assert mod.shape == (4, 1, 16, 16)
    keep = mod == 1.0
    assert torch.equal(keep | (mod == LR_SHARPENING), torch.ones_like(keep))
    assert torch.equal(keep.sum(-1), torch.full((4, 1, 16), int(0.8 * 16)))
    torch.testing.assert_close(lr_modulation(var, 4, scale=0.5), mod * 0.5)


@pytest.mark.parametrize('fast', [True, False])
def test_attention_on_three_dimensional_inputs(fast):
    """``(..., N, d)`` takes any number of leading dims: here none but the batch, with a bias and autograd on (the
    plain formula's path)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(5, 5, generator=g, dtype=torch.float64)
    with ops.fast_ops(fast):
        out = ops.attention(q, k, v, bias)
    expected = torch.softmax(q @ k.transpose(1, 2) / 2 + bias, dim=-1) @ v
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_autocast_on_a_device_autocast_does_not_know():
    assert ops.autocast_on(torch.empty(2, device='meta')) is False


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_sampling_grid_does_not_depend_on_the_default_dtype(dtype):
    """The grid is cached by size, device and dtype only, so building it must not read torch's default dtype: a
    grid first built under ``set_default_dtype(float64)`` was served, with float64 rounding, to later callers
    (and a float32-built one to float64 callers), so float64 results depended on what ran before."""
    from s2former_plugin.archs.s2former_blocks import _sampling_axes

    default = torch.get_default_dtype()
    grids = []
    try:
        for build_under in (torch.float32, torch.float64):
            torch.set_default_dtype(build_under)
            _sampling_axes.cache_clear()
            grids.append(_sampling_axes(24, 40, 8, torch.device('cpu'), dtype))
    finally:
        torch.set_default_dtype(default)
        _sampling_axes.cache_clear()
    for a, b in zip(*grids, strict=True):
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
