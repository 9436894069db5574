"""NeRDRainLoss: each piece against a hand computation (numpy loops) and the total against the authors' numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2former_plugin.losses.nerdrain_loss import (
    NeRDRainLoss,
    charbonnier,
    edge_loss,
    fft_l1,
    gaussian_pyramid,
    laplacian,
    pyramid_down,
)

#: Output sizes of NeRDRain for a 16x16 input, in the authors' order.
SIZES_16 = [(16, 16), (8, 8), (4, 4), (8, 8), (8, 8), (4, 4), (4, 4)]


def _conv5(img: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """``img`` (H, W) padded by 2 (numpy ``reflect`` / ``edge``) and correlated with the 5x5 ``kernel``, by loops."""
    p = np.pad(img, 2, mode=mode)
    h, w = img.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = (p[i : i + 5, j : j + 5] * kernel).sum()
    return out


def _np_down(img: np.ndarray) -> np.ndarray:
    """Binomial blur with reflection, then (even sides) each 2x2 block's mean: bilinear halving."""
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    b = _conv5(img, np.outer(k, k) / 256, 'reflect')
    return (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4


def _np_laplacian(img: np.ndarray) -> np.ndarray:
    k = np.array([0.05, 0.25, 0.4, 0.25, 0.05], dtype=np.float32)
    kernel = np.outer(k, k).astype(np.float64)  # the authors' kernel: a float32 product of float32 taps
    b = _conv5(img, kernel, 'edge')
    refill = np.zeros_like(b)
    refill[0::2, 0::2] = b[0::2, 0::2] * 4
    return img - _conv5(refill, kernel, 'edge')


def _per_channel(fn, x: torch.Tensor) -> np.ndarray:
    a = x.double().numpy()
    return np.stack([np.stack([fn(a[n, c]) for c in range(a.shape[1])]) for n in range(a.shape[0])])


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_pyramid_down_is_blur_then_halving():
    x = _rand(1, 2, 8, 12, seed=0)
    torch.testing.assert_close(pyramid_down(x), torch.from_numpy(_per_channel(_np_down, x)), rtol=0, atol=1e-12)
    # Odd sides: kornia's (H // 2, W // 2); a constant image stays constant.
    assert pyramid_down(torch.ones(1, 3, 9, 13)).shape == (1, 3, 4, 6)
    torch.testing.assert_close(pyramid_down(torch.full((1, 3, 9, 13), 0.3)), torch.full((1, 3, 4, 6), 0.3))
    levels = gaussian_pyramid(x, 3)
    assert [t.shape[-2:] for t in levels] == [(8, 12), (4, 6), (2, 3)] and levels[0] is x
    torch.testing.assert_close(levels[2], pyramid_down(pyramid_down(x)), rtol=0, atol=0)


def test_charbonnier_and_fft_terms():
    x, y = _rand(2, 3, 4, 6, seed=1), _rand(2, 3, 4, 6, seed=2)
    d = (x - y).numpy()
    assert charbonnier(x, y).item() == pytest.approx(np.sqrt(d**2 + 1e-6).mean(), rel=1e-12)
    assert charbonnier(x, x).item() == pytest.approx(1e-3, rel=1e-12)  # the floor: sqrt(eps^2)
    spectra = np.fft.fft2(x.numpy()) - np.fft.fft2(y.numpy())  # over the last two axes
    assert fft_l1(x, y).item() == pytest.approx(np.abs(spectra).mean(), rel=1e-12)


def test_laplacian_and_edge_term():
    x, y = _rand(1, 3, 7, 10, seed=3), _rand(1, 3, 7, 10, seed=4)  # odd sides: the refill keeps even indices
    lx, ly = _per_channel(_np_laplacian, x), _per_channel(_np_laplacian, y)
    torch.testing.assert_close(laplacian(x), torch.from_numpy(lx), rtol=0, atol=1e-12)
    assert edge_loss(x, y).item() == pytest.approx(np.sqrt((lx - ly) ** 2 + 1e-6).mean(), rel=1e-12)


def test_total_is_the_authors_weighted_sum_by_hand():
    gt = _rand(1, 3, 16, 16, seed=5)
    outs = [_rand(1, 3, *s, seed=10 + i) for i, s in enumerate(SIZES_16)]
    g = gt.numpy()
    t = [g, _per_channel(_np_down, gt)]
    t.append(_per_channel(_np_down, torch.from_numpy(t[1])))
    o = [v.numpy() for v in outs]

    def char(a, b):
        return np.sqrt((a - b) ** 2 + 1e-6).mean()

    def lap(a):
        return _per_channel(_np_laplacian, torch.from_numpy(a))

    char_sum = sum(char(o[s], t[s]) for s in range(3))
    fft_sum = sum(np.abs(np.fft.fft2(o[s]) - np.fft.fft2(t[s])).mean() for s in range(3))
    edge_sum = sum(char(lap(o[s]), lap(t[s])) for s in range(3))
    l1_sum = np.abs(o[3] - t[1]).mean() + np.abs(o[5] - t[2]).mean()  # the INR images against 1/2 and 1/4
    total = char_sum + 0.01 * fft_sum + 0.05 * edge_sum + 0.1 * l1_sum

    terms = NeRDRainLoss().terms(outs, gt)
    for key, value in zip(
        ('l_char', 'l_fft', 'l_edge', 'l_inr', 'l_pix'), (char_sum, fft_sum, edge_sum, l1_sum, total)
    ):
        assert terms[key].item() == pytest.approx(value, rel=1e-10), key
    assert NeRDRainLoss()(outs, gt).item() == pytest.approx(total, rel=1e-10)
    assert NeRDRainLoss(loss_weight=2.0)(outs, gt).item() == pytest.approx(2 * total, rel=1e-10)
    custom = NeRDRainLoss(fft_weight=0.0, edge_weight=1.0, inr_weight=0.0)(outs, gt).item()
    assert custom == pytest.approx(char_sum + edge_sum, rel=1e-10)


def test_equals_numbers_from_the_authors_code():
    # The authors' losses.py (CharbonnierLoss, EdgeLoss, fftLoss, nn.L1Loss) with kornia 0.7.0's build_pyramid,
    # combined as in their train.py, on these seeded float32 tensors (computed once on CPU).
    g = torch.Generator().manual_seed(11)
    gt = torch.rand(2, 3, 32, 48, generator=g)
    sizes = [(32, 48), (16, 24), (8, 12), (16, 24), (16, 24), (8, 12), (8, 12)]
    outs = [torch.rand(2, 3, *s, generator=g) for s in sizes]
    pyramid = gaussian_pyramid(gt, 3)
    assert pyramid[1].sum().item() == pytest.approx(1149.8427734375, rel=1e-6)
    assert pyramid[2].sum().item() == pytest.approx(287.51873779296875, rel=1e-6)
    terms = NeRDRainLoss().terms(outs, gt)
    expected = {'l_char': 0.8416080474853516, 'l_fft': 22.00418472290039, 'l_edge': 0.771323561668396}
    expected.update(l_inr=0.5065970420837402, l_pix=1.1508758068084717)
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-6), key


def test_gradients_reach_the_five_trained_outputs_only():
    gt = _rand(1, 3, 16, 16, seed=6)
    outs = [_rand(1, 3, *s, seed=20 + i).requires_grad_() for i, s in enumerate(SIZES_16)]
    NeRDRainLoss()(outs, gt).backward()
    trained = [o.grad is not None and o.grad.abs().sum() > 0 for o in outs]
    assert trained == [True, True, True, True, False, True, False]  # the authors' restored[0, 1, 2, 3, 5]


@pytest.mark.parametrize(
    ('outs', 'match'),
    [
        (lambda: torch.rand(1, 3, 16, 16), 'got a tensor'),
        (lambda: [torch.rand(1, 3, 16, 16)] * 5, 'got 5 outputs'),
        (lambda: [torch.rand(1, 3, *s) for s in [(16, 16), (8, 8), (8, 8), (8, 8), (8, 8), (4, 4), (4, 4)]],
         r'output 2 has shape \(1, 3, 8, 8\), its target \(1, 3, 4, 4\)'),
    ],
)  # fmt: skip
def test_wrong_outputs_are_one_line_errors(outs, match):
    with pytest.raises(ValueError, match=match) as err:
        NeRDRainLoss()(outs(), torch.rand(1, 3, 16, 16))
    assert '\n' not in str(err.value) and str(err.value).startswith('NeRDRainLoss: ')


def test_built_from_the_registry():
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.losses import build_loss

    loss = build_loss({'type': 'NeRDRainLoss', 'loss_weight': 1.0, 'fft_weight': 0.01})
    assert isinstance(loss, NeRDRainLoss) and (loss.edge_weight, loss.inr_weight, loss.eps) == (0.05, 0.1, 1e-3)
