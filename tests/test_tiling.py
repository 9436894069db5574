"""Tiled inference: exact reproduction, blending quality, odd sizes, tuples, devices, documented edge values."""

from __future__ import annotations

import math

import pytest
import torch

from s2former_plugin.tiling import blend_margin, ramp_window, tile_starts, tiled_forward


def test_tile_starts_cover_and_align_last_tile():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(32, 32, 8) == [0]
    with pytest.raises(ValueError, match='smaller than the tile'):
        tile_starts(100, 16, 16)


def test_ramp_window_positive_and_flat_on_borders():
    w = ramp_window(16, 6, left=True, right=False)
    assert (w > 0).all() and w[-1] == 1 and w[0] < 0.1
    m = ramp_window(16, 8, left=True, right=True, margin=2)
    assert m[:2].eq(0).all() and m[-2:].eq(0).all() and (m[2:-2] > 0).all()
    assert torch.equal(ramp_window(8, 4, False, False), torch.ones(8, dtype=torch.float64))


@pytest.mark.parametrize('shape', [(1, 3, 37, 53), (2, 3, 19, 70), (1, 1, 5, 9), (3, 23, 41)])
@pytest.mark.parametrize('tile,overlap', [(16, 6), (16, 0), (8, 7), (None, 0)])
def test_identity_and_constant_reproduced_exactly(shape, tile, overlap):
    x = torch.rand(shape)
    assert torch.equal(tiled_forward(lambda t: t, x, tile, overlap), x)
    c = torch.full(shape, 0.3)
    assert torch.equal(tiled_forward(lambda t: t * 0 + 0.7, c, tile, overlap), torch.full(shape, 0.7))


def test_conv_net_with_small_receptive_field_matches_whole_image():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)
    ).eval()  # receptive field 5 (radius 2) << overlap
    x = torch.rand(1, 3, 45, 67)
    with torch.no_grad():
        whole = net(x)
    tiled = tiled_forward(net, x, tile=24, overlap=12)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)  # radius 2 <= blend margin 12 // 4
    naive = tiled_forward(net, x, tile=24, overlap=0)  # no overlap: seams
    assert (naive - whole).abs().max() > 1e-3
    near = tiled_forward(net, x, tile=24, overlap=4)  # radius 2 > margin 1: blended, nearly whole-image
    assert (near - whole).abs().mean() < (naive - whole).abs().mean()


@pytest.mark.parametrize('size', [(33, 47), (100, 21), (64, 64)])
@pytest.mark.parametrize('tile,overlap', [(16, 15), (16, 8), (9, 8), (12, 3)])
def test_weights_positive_for_extreme_overlaps(size, tile, overlap):
    x = torch.rand(1, 2, *size)
    assert torch.equal(tiled_forward(lambda t: t, x, tile, overlap), x)


def test_tuple_outputs_batched_tiles_and_progress():
    x = torch.rand(2, 3, 30, 41)
    calls = []

    def fn(t):
        return t * 2, t.mean(1, keepdim=True).expand(-1, 3, -1, -1)

    img, unc = tiled_forward(fn, x, 16, 4, tile_batch=3, on_tile=lambda d, n: calls.append((d, n)))
    torch.testing.assert_close(img, x * 2)
    torch.testing.assert_close(unc, x.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert calls[-1][0] == calls[-1][1] == len(calls)


def test_spatial_size_change_rejected():
    with pytest.raises(ValueError, match='spatial size'):
        tiled_forward(lambda t: t[..., :-1, :], torch.rand(1, 3, 40, 40), 16, 4)


def test_half_outputs_returned_as_float32():
    out = tiled_forward(lambda t: t.half(), torch.rand(1, 3, 20, 20), 8, 2)
    assert out.dtype == torch.float32


def test_official_blend_is_the_official_test_scripts_averaging():
    # The official test.py: square tiles of min(tile, h, w), starts range(0, h - tile, stride) + [h - tile],
    # outputs summed and divided by the per-pixel count.
    torch.manual_seed(0)
    x = torch.rand(1, 3, 70, 101)
    conv = torch.nn.Conv2d(3, 3, 5, padding=2)
    tile, overlap = 48, 12
    t = min(tile, 70, 101)
    stride = t - overlap
    acc, cnt = torch.zeros(1, 3, 70, 101), torch.zeros(1, 3, 70, 101)
    with torch.no_grad():
        for y in list(range(0, 70 - t, stride)) + [70 - t]:
            for x0 in list(range(0, 101 - t, stride)) + [101 - t]:
                acc[..., y : y + t, x0 : x0 + t] += conv(x[..., y : y + t, x0 : x0 + t])
                cnt[..., y : y + t, x0 : x0 + t] += 1
    expected = acc / cnt
    got = tiled_forward(conv, x, tile, overlap, blend='official')
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(tiled_forward(conv, x, tile, overlap), expected, atol=1e-4)  # cosine differs
    with pytest.raises(ValueError, match='blend'):
        tiled_forward(conv, x, tile, overlap, blend='gaussian')
    # An image smaller than the tile but not square is still tiled with square min(h, w) tiles.
    small = x[..., :40, :60]
    acc, cnt = torch.zeros(1, 3, 40, 60), torch.zeros(1, 3, 40, 60)
    with torch.no_grad():
        for x0 in list(range(0, 60 - 40, 40 - overlap)) + [20]:
            acc[..., x0 : x0 + 40] += conv(small[..., x0 : x0 + 40])
            cnt[..., x0 : x0 + 40] += 1
    assert torch.allclose(tiled_forward(conv, small, 320, overlap, blend='official'), acc / cnt, atol=1e-6)


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
