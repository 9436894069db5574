"""Documented edge values of the tiling helpers (found by mutation testing: each assertion kills a mutant that the
behavioural tiling tests let through)."""

from __future__ import annotations

import math

import pytest
import torch

from s2former_plugin.tiling import blend_margin, ramp_window, tiled_forward


def test_blend_margin_formula():
    # min(overlap // 4, tile - overlap), never negative.
    assert blend_margin(32, 12) == 3
    assert blend_margin(16, 3) == 0  # overlap // 4 == 0: no zero-weight border
    assert blend_margin(16, 15) == 1  # bounded by the stride
    assert blend_margin(9, 8) == 1
    assert blend_margin(8, 0) == 0


def test_ramp_window_values_dtype_and_margin_clamp():
    w = ramp_window(10, 4, left=True, right=False, margin=1)
    assert w.dtype == torch.float64  # accumulation in float64
    n = 3
    expected = [0.0] + [0.5 - 0.5 * math.cos(math.pi * i / (n + 1)) for i in range(1, n + 1)] + [1.0] * 6
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    # A margin beyond the ramp is clamped to ramp - 1: one positive sample is left.
    c = ramp_window(8, 4, left=True, right=False, margin=10)
    assert c[:3].eq(0).all() and c[3].item() == pytest.approx(0.5) and c[4:].eq(1).all()
    # A one-sample ramp is 0.5 (the midpoint of the raised cosine), not 1.
    assert ramp_window(4, 1, left=True, right=True).tolist() == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert ramp_window(6, 2, True, True, dtype=torch.float32).dtype == torch.float32


def test_float64_tiles_stay_float64_and_others_become_float32():
    x = torch.rand(1, 2, 20, 20, dtype=torch.float64)
    assert tiled_forward(lambda t: t, x, 8, 2).dtype == torch.float64
    assert tiled_forward(lambda t: t.half(), x.float(), 8, 2).dtype == torch.float32
    assert tiled_forward(lambda t: t, x, None).dtype == torch.float64


@pytest.mark.parametrize('bad', [[], ('x',), [torch.zeros(1), 'x'], 3])
def test_tile_function_must_return_tensors(bad):
    x = torch.rand(1, 1, 12, 12)
    with pytest.raises(TypeError, match=f'tensor or a tuple of tensors, got {type(bad).__name__}'):
        tiled_forward(lambda t: bad, x, 8, 2)
