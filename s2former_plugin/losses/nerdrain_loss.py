"""The NeRD-Rain training loss, equal to the computation of the authors' ``train.py`` (cschenxiang/NeRD-Rain).

With the network's seven outputs ``r`` (:class:`~s2former_plugin.archs.nerdrain_arch.NeRDRain`, ``return_all=True``:
full, 1/2, 1/4, 1/2 INR image, 1/2 input / 2, 1/4 INR image, 1/4 input) and the ground truth's Gaussian pyramid
``t`` (full, 1/2, 1/4; kornia 0.7's ``build_pyramid(gt, 3)``)::

    L = sum_s Charbonnier(r_s, t_s) + 0.01 sum_s FFT(r_s, t_s) + 0.05 sum_s Edge(r_s, t_s)
        + 0.1 (L1(r_3, t_1) + L1(r_5, t_2)),          s = 0, 1, 2

Charbonnier: ``mean(sqrt(d^2 + 1e-6))``; FFT: ``mean(|fft2(r) - fft2(t)|)``; Edge: Charbonnier between Laplacians
(image minus its Gaussian-blurred, 2x-decimated-and-4x-re-filled copy, replicate padding). The two INR images are
pulled towards the clean image of their scale with L1.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

__all__ = ['NeRDRainLoss', 'gaussian_pyramid', 'pyramid_down', 'charbonnier', 'fft_l1', 'edge_loss', 'laplacian']

#: The pyramid's 5x5 blur (kornia's ``_get_pyramid_gaussian_kernel``): binomial [1, 4, 6, 4, 1] squared, / 256.
_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
#: The edge loss's 5x5 blur (the authors' ``EdgeLoss``): [.05, .25, .4, .25, .05] squared, float32 as theirs.
_EDGE_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


def _depthwise_blur(x: Tensor, taps: Sequence[float], scale: float, mode: str) -> Tensor:
    """Each channel blurred by the separable-tap 5x5 kernel ``outer(taps, taps) / scale`` (``mode`` padding).

    The kernel is built in float32, as in the authors' and kornia's code, then cast to ``x``'s dtype.
    """
    k = torch.tensor(taps, dtype=torch.float32)
    kernel = (torch.outer(k, k) / scale).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    pad = len(taps) // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), kernel.expand(c, 1, -1, -1), groups=c)


def pyramid_down(x: Tensor) -> Tensor:
    """kornia 0.7's ``pyrdown``: 5x5 binomial blur (reflection padding), bilinear resize to ``(H // 2, W // 2)``."""
    h, w = x.shape[-2:]
    blurred = _depthwise_blur(x, _PYRAMID_TAPS, 256.0, 'reflect')
    return F.interpolate(blurred, size=(h // 2, w // 2), mode='bilinear', align_corners=False)


def gaussian_pyramid(x: Tensor, levels: int = 3) -> list[Tensor]:
    """``[x, down(x), down(down(x)), ...]``, ``levels`` images (kornia's ``build_pyramid(x, levels)``)."""
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(pyramid_down(pyramid[-1]))
    return pyramid


def charbonnier(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """``mean(sqrt((x - y)^2 + eps^2))``."""
    d = x - y
    return torch.sqrt(d * d + eps * eps).mean()


def fft_l1(x: Tensor, y: Tensor) -> Tensor:
    """Mean modulus of the difference of the 2-D spectra (``torch.fft.fft2`` over H and W)."""
    return (torch.fft.fft2(x) - torch.fft.fft2(y)).abs().mean()


def laplacian(x: Tensor) -> Tensor:
    """``x`` minus its low-pass copy: blurred, every second pixel kept (x4, zeros between), blurred again."""
    blurred = _depthwise_blur(x, _EDGE_TAPS, 1.0, 'replicate')
    refilled = torch.zeros_like(blurred)
    refilled[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
    return x - _depthwise_blur(refilled, _EDGE_TAPS, 1.0, 'replicate')


def edge_loss(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier distance between the Laplacians of ``x`` and ``y``."""
    return charbonnier(laplacian(x), laplacian(y), eps)


@LOSS_REGISTRY.register()
class NeRDRainLoss(nn.Module):
    """The authors' total training loss on NeRD-Rain's seven outputs (the module docstring's formula).

    Args:
        loss_weight: Multiplier of the total (1 in the authors' code).
        fft_weight: Weight of the FFT terms (0.01).
        edge_weight: Weight of the edge terms (0.05).
        inr_weight: Weight of the L1 terms on the two INR images (0.1).
        eps: Charbonnier epsilon (1e-3, also in the edge loss).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        fft_weight: float = 0.01,
        edge_weight: float = 0.05,
        inr_weight: float = 0.1,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.fft_weight = fft_weight
        self.edge_weight = edge_weight
        self.inr_weight = inr_weight
        self.eps = eps

    def terms(self, outputs: Sequence[Tensor], gt: Tensor) -> OrderedDict[str, Tensor]:
        """The authors' logged sums (``l_char``, ``l_fft``, ``l_edge``, ``l_inr``; unweighted) and ``l_pix``,
        the weighted total times ``loss_weight``.

        Raises:
            ValueError: fewer than six outputs, or an output whose size is not its target's (one line).
        """
        if isinstance(outputs, Tensor) or len(outputs) < 6:
            n = 'a tensor' if isinstance(outputs, Tensor) else f'{len(outputs)} outputs'
            raise ValueError(f'NeRDRainLoss: needs the list of NeRDRain outputs (net(x, return_all=True)), got {n}')
        targets = gaussian_pyramid(gt, 3)
        pairs = [(outputs[s], targets[s]) for s in range(3)] + [(outputs[3], targets[1]), (outputs[5], targets[2])]
        for i, (o, t) in zip((0, 1, 2, 3, 5), pairs):
            if o.shape != t.shape:
                raise ValueError(
                    f'NeRDRainLoss: output {i} has shape {tuple(o.shape)}, its target {tuple(t.shape)} '
                    f'(ground truth {tuple(gt.shape)}; H and W must be multiples of 16)'
                )
        char = sum(charbonnier(o, t, self.eps) for o, t in pairs[:3])
        fft = sum(fft_l1(o, t) for o, t in pairs[:3])
        edge = sum(edge_loss(o, t, self.eps) for o, t in pairs[:3])
        inr = F.l1_loss(*pairs[3]) + F.l1_loss(*pairs[4])
        total = char + self.fft_weight * fft + self.edge_weight * edge + self.inr_weight * inr
        return OrderedDict(l_char=char, l_fft=fft, l_edge=edge, l_inr=inr, l_pix=self.loss_weight * total)

    def forward(self, outputs: Sequence[Tensor], gt: Tensor) -> Tensor:
        """The weighted total (a scalar)."""
        return self.terms(outputs, gt)['l_pix']
