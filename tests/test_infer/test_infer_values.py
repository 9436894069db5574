"""``infer`` output values (not only shapes and dtypes) for 16-bit, grey, RGBA and float inputs; the uncertainty
colour map's values; odd sizes against an independent pad-and-crop; S2Former tiling against a hand-made blend.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import infer
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.tiling import tile_starts, tiled_forward
from s2former_plugin.visualize import uncertainty_to_color


@pytest.fixture(scope='module')
def net(parity_fixture) -> S2Former:
    from s2former_plugin.official import build_from_official

    return build_from_official(parity_fixture['config'], parity_fixture['state_dict']).eval()


@pytest.fixture(scope='module')
def weights(net, tmp_path_factory):
    path = tmp_path_factory.mktemp('weights') / 'net.pth'
    torch.save(net.state_dict(), path)
    return path


def _forward(net: S2Former, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network on an ``H x W x 3`` RGB float image in [0, 1]: (image, uncertainty), ``H x W x 3`` float64."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        outputs, uncertainties = net(x, return_all=True)
    return (t[0].permute(1, 2, 0).double().numpy() for t in (outputs[0], uncertainties[0]))


def _run_cli(weights, tmp_path, name: str, img: np.ndarray, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir(exist_ok=True)
    assert cv2.imwrite(str(src / name), img)
    argv = ['--weights', str(weights), '--input', str(src / name), '--output', str(out), '--device', 'cpu']
    assert infer.main([*argv, '--tile', '0', '--save-uncertainty', '--no-progress', *extra]) == 0
    stem = name.rsplit('.', 1)[0]
    result = cv2.imread(str(out / (f'{stem}.tiff' if img.dtype.kind == 'f' else f'{stem}.png')), cv2.IMREAD_UNCHANGED)
    return result, cv2.imread(str(out / 'uncertainty' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)


def _smooth(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth random image in [0, 1] (float64), so the network's output is not dominated by noise."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random(shape), (0, 0), 2)
    return (img - img.min()) / (img.max() - img.min())


# ---------------------------------------------------------------------------------------------- bit depths, modes
def test_16bit_colour_values(net, weights, tmp_path):
    rgb = _smooth((23, 29, 3), 0)
    img16 = np.rint(rgb[..., ::-1] * 65535).astype(np.uint16)  # BGR on disk
    res, _ = _run_cli(weights, tmp_path, 'deep.png', img16)
    assert res.dtype == np.uint16 and res.shape == img16.shape
    out, _ = _forward(net, img16[..., ::-1] / 65535)
    expected = np.rint(np.clip(out, 0, 1) * 65535)[..., ::-1]
    assert np.abs(res.astype(np.float64) - expected).max() <= 2  # float32 rounding only: 2 of 65535 levels
    # An 8-bit reading of the same file would be off by orders of magnitude, not levels.
    assert np.abs(res.astype(np.float64) - expected).mean() < 0.5


def test_grey_values(net, weights, tmp_path):
    grey = np.rint(_smooth((21, 26), 1) * 255).astype(np.uint8)
    res, _ = _run_cli(weights, tmp_path, 'grey.png', grey)
    assert res.dtype == np.uint8 and res.shape == grey.shape
    out, _ = _forward(net, np.repeat(grey[..., None] / 255, 3, axis=2))  # three equal channels in
    # Back to grey: BT.601 luma of the colour output (each channel clipped to the pixel range first).
    clipped = np.clip(out, 0, 1)
    expected = 0.299 * clipped[..., 0] + 0.587 * clipped[..., 1] + 0.114 * clipped[..., 2]
    assert np.abs(res - expected * 255).max() <= 1


def test_rgba_values_and_alpha(net, weights, tmp_path):
    rgb = _smooth((19, 24, 3), 2)
    alpha = np.random.default_rng(3).integers(0, 256, (19, 24, 1), dtype=np.uint8)
    bgra = np.concatenate([np.rint(rgb[..., ::-1] * 255).astype(np.uint8), alpha], axis=2)
    res, _ = _run_cli(weights, tmp_path, 'rgba.png', bgra)
    assert res.shape == bgra.shape and res.dtype == np.uint8
    np.testing.assert_array_equal(res[..., 3], alpha[..., 0])
    out, _ = _forward(net, bgra[..., 2::-1] / 255)
    assert np.abs(res[..., :3] - np.clip(out, 0, 1)[..., ::-1] * 255).max() <= 1


def test_float_values(net, weights, tmp_path):
    rgb = _smooth((18, 22, 3), 4).astype(np.float32)
    res, _ = _run_cli(weights, tmp_path, 'f.tiff', np.ascontiguousarray(rgb[..., ::-1]))
    assert res.dtype == np.float32 and res.shape == rgb.shape
    out, _ = _forward(net, rgb)
    assert np.abs(res.astype(np.float64) - np.clip(out, 0, 1)[..., ::-1]).max() <= 1e-6


def test_uncertainty_png_is_the_colour_map_of_the_network_uncertainty(net, weights, tmp_path):
    rgb = _smooth((20, 27, 3), 5)
    bgr = np.rint(rgb[..., ::-1] * 255).astype(np.uint8)
    _, unc_png = _run_cli(weights, tmp_path, 'u.png', bgr)
    _, unc = _forward(net, bgr[..., ::-1] / 255)
    np.testing.assert_array_equal(unc_png, _colour_by_hand(unc.mean(axis=2)))


# ---------------------------------------------------------------------------------------------- colour map
def _colour_by_hand(u: np.ndarray) -> np.ndarray:
    """The documented colour map, written out: scale between the 1st and 99th percentiles (linear interpolation
    between order statistics), clip, 256 levels, OpenCV's inferno table."""
    s = np.sort(u.ravel().astype(np.float64))

    def pct(q: float) -> float:
        pos = q / 100 * (s.size - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, s.size - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    lo, hi = pct(1), pct(99)
    levels = np.rint(np.clip((u - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_INFERNO)[0]  # (256, 3) BGR
    return lut[levels]


def test_uncertainty_colour_map_values():
    u = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30) ** 2
    u[0, 0] = 50  # an outlier above the 99th percentile must not wash out the rest
    colour = uncertainty_to_color(u)
    assert colour.shape == (20, 30, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour, _colour_by_hand(u))
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_INFERNO)[0]
    np.testing.assert_array_equal(colour[0, 0], lut[255])  # clipped to the brightest
    np.testing.assert_array_equal(colour[0, 1], lut[0])  # below the 1st percentile: the darkest
    # A C x H x W tensor is averaged over channels; an H x W x C array likewise.
    t = torch.from_numpy(np.stack([u, u * 3, u * 2]))
    np.testing.assert_array_equal(uncertainty_to_color(t), _colour_by_hand(u * 2))
    np.testing.assert_array_equal(uncertainty_to_color(t.permute(1, 2, 0).numpy()), _colour_by_hand(u * 2))


# ---------------------------------------------------------------------------------------------- odd sizes
def _pad_reference(net: S2Former, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pad-and-crop done by hand: mirror (or edge, for tiny images) padding with numpy to multiples of 64 at the
    bottom/right, the network on the padded image (a size it does not pad), then crop every scale."""
    h, w = x.shape[-2:]
    ph, pw = -h % 64, -w % 64
    mode = 'reflect' if ph < h and pw < w else 'edge'
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode))
    with torch.no_grad():
        outputs, uncertainties = net(padded, return_all=True)
    crops = [(h, w)] + [(math.ceil(h / 2**i), math.ceil(w / 2**i)) for i in range(4)]
    return (
        [o[..., :ch, :cw] for o, (ch, cw) in zip(outputs, crops)],
        [u[..., :ch, :cw] for u, (ch, cw) in zip(uncertainties, crops)],
    )


@pytest.mark.parametrize('size', [(37, 45), (70, 9), (5, 7)])
def test_odd_sizes_equal_an_independent_pad_and_crop(net, size):
    assert net.pad_multiple == 64
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        outputs, uncertainties = net(x, return_all=True)
    ref_outputs, ref_uncertainties = _pad_reference(net, x)
    for ours, ref in zip(outputs + uncertainties, ref_outputs + ref_uncertainties, strict=True):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------------------------- tiling seams
def _window_by_hand(length: int, overlap: int, left: bool, right: bool) -> np.ndarray:
    """The documented blending window: ``min(overlap // 4, length - overlap)`` zeros at an inner edge, then a
    raised cosine ``0.5 - 0.5 cos(pi i / (n + 1))``, ``i = 1..n``, up to 1."""
    w = np.ones(length)
    margin = max(0, min(overlap // 4, length - overlap, overlap - 1))
    n = overlap - margin
    up = np.concatenate([np.zeros(margin), 0.5 - 0.5 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1))])
    if left:
        w[:overlap] = np.minimum(w[:overlap], up)
    if right:
        w[length - overlap :] = np.minimum(w[length - overlap :], up[::-1])
    return w


def test_s2former_tiling_equals_a_hand_blend_of_the_tiles(net):
    """Tiled S2Former (image and uncertainty, odd size, 4 x 4 tiles) against the tiles' outputs blended
    by hand: the maximum difference, so a shifted or mis-weighted tile anywhere (a seam) fails."""
    x = torch.from_numpy(_smooth((3, 75, 83), 7).astype(np.float32))[None]
    tile, overlap = 32, 12

    def final(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, uncertainties = net(t, return_all=True)
        return outputs[0], uncertainties[0]

    image, uncertainty = tiled_forward(final, x, tile, overlap)
    ys, xs = tile_starts(75, tile, overlap), tile_starts(83, tile, overlap)
    assert (len(ys), len(xs)) == (4, 4)
    acc = [np.zeros((3, 75, 83)), np.zeros((3, 75, 83))]
    weight = np.zeros((75, 83))
    lo = [np.full((3, 75, 83), np.inf), np.full((3, 75, 83), np.inf)]
    hi = [np.full((3, 75, 83), -np.inf), np.full((3, 75, 83), -np.inf)]
    for y in ys:
        for x0 in xs:
            with torch.no_grad():
                outs = [o[0].double().numpy() for o in final(x[..., y : y + tile, x0 : x0 + tile])]
            wy = _window_by_hand(tile, overlap, y > 0, y + tile < 75)
            wx = _window_by_hand(tile, overlap, x0 > 0, x0 + tile < 83)
            win = wy[:, None] * wx[None, :]
            weight[y : y + tile, x0 : x0 + tile] += win
            box = (slice(None), slice(y, y + tile), slice(x0, x0 + tile))
            for j, o in enumerate(outs):
                acc[j][box] += o * win
                used = np.broadcast_to(win > 0, o.shape)
                lo[j][box] = np.where(used, np.minimum(lo[j][box], o), lo[j][box])
                hi[j][box] = np.where(used, np.maximum(hi[j][box], o), hi[j][box])
    assert (weight > 0).all()
    for j, ours in enumerate((image, uncertainty)):
        ours = ours[0].double().numpy()
        assert np.abs(ours - acc[j] / weight).max() <= 1e-5
        # Every pixel is a convex combination of the tiles that cover it with positive weight.
        assert (ours >= lo[j] - 1e-5).all() and (ours <= hi[j] + 1e-5).all()
