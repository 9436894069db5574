"""NeRD-Rain's parts (:mod:`.nerdrain_arch`): the Restormer-style transformer block, the bidirectional feedback
propagation unit and the intra-scale implicit neural representation with its coordinate MLP.

The attribute names are the authors' (cschenxiang/NeRD-Rain, ``model.py`` and ``mlp.py``), so their checkpoints'
keys load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .restormer_blocks import PreNormBlock, channel_similarities

__all__ = [
    'INR_FREQUENCIES',
    'INR_HIDDEN',
    'ChannelSelfAttention',
    'CoordinateMLP',
    'DepthwiseConv',
    'FeedbackPropagationUnit',
    'GatedFeedForward',
    'ImplicitNeuralRepresentation',
    'TransformerBlock',
    'pixel_centres',
    'positional_encoding',
]

#: The INR's coordinate MLP: hidden widths and the number of positional-encoding frequencies (the authors' mlp.py).
INR_HIDDEN = (256, 256, 256)
INR_FREQUENCIES = 4


# ---- Transformer parts (Restormer-style blocks) ----


class DepthwiseConv(nn.Module):
    """A depth-wise 3x3 conv (wrapped in ``main`` for the authors' ``BasicConv`` keys: ``*.main.0.weight``)."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class ChannelSelfAttention(nn.Module):
    """Multi-head channel ("transposed") self-attention: per head, a ``C x C`` attention over all pixels.

    Queries, keys and values come from a 1x1 then a depth-wise 3x3 conv; queries and keys are L2-normalised over the
    pixels and their similarities scaled by a learnt per-head temperature before the softmax.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = DepthwiseConv(dim * 3, bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        scores, v = channel_similarities(self.qkv_dwconv(self.qkv(x)), self.num_heads, self.temperature)
        attn = scores.softmax(dim=-1)  # (B, heads, Ch, Ch)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """Gated feed-forward: 1x1 to ``2 * hidden``, depth-wise 3x3, ``gelu(first half) * second half``, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = DepthwiseConv(hidden * 2, bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(PreNormBlock):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``+ ffn(norm2(.))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, with_bias: bool) -> None:
        attn = ChannelSelfAttention(dim, num_heads, bias)
        super().__init__(dim, attn, GatedFeedForward(dim, ffn_expansion_factor, bias), with_bias)


# ---- Inter-scale bidirectional feedback ----


class FeedbackPropagationUnit(nn.Module):
    """Bidirectional feedback propagation unit (BFPU; the authors' ``Fusion``): fuses two latents ``x`` and ``y``.

    A shared gate ``sigmoid(q(x) * k(y))`` (3x3 convs) re-weights both; each input and its gated copy are mixed per
    pixel by two predicted coefficients (``gamma1`` for ``x``, ``gamma2`` for ``y``), and the two mixtures summed.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.chanel_in = in_dim  # the authors' attribute (not a parameter)
        self.query_conv = nn.Conv2d(in_dim, in_dim, 3, 1, 1, bias=True)
        self.key_conv = nn.Conv2d(in_dim, in_dim, 3, 1, 1, bias=True)
        self.gamma1 = nn.Conv2d(in_dim * 2, 2, 3, 1, 1, bias=True)
        self.gamma2 = nn.Conv2d(in_dim * 2, 2, 3, 1, 1, bias=True)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        gate = torch.sigmoid(self.query_conv(x) * self.key_conv(y))
        gx, gy = x * gate, y * gate
        cx = self.gamma1(torch.cat([x, gx], dim=1))  # (B, 2, H, W)
        cy = self.gamma2(torch.cat([y, gy], dim=1))
        return (x * cx[:, 0:1] + gx * cx[:, 1:2]) + (y * cy[:, 0:1] + gy * cy[:, 1:2])


# ---- Intra-scale implicit neural representation ----


class CoordinateMLP(nn.Module):
    """The INR's decoder: ``Linear + ReLU`` per hidden width, then a linear layer to the output channels."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def pixel_centres(h: int, w: int, device: torch.device) -> Tensor:
    """The ``(h * w, 2)`` centres of an ``h x w`` grid in ``[-1, 1]`` (row, column), row-major, in float32."""
    axes = [-1 + 1 / n + (2 / n) * torch.arange(n, device=device).float() for n in (h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(-1, 2)


def positional_encoding(coord: Tensor, frequencies: int = INR_FREQUENCIES) -> Tensor:
    """``(..., 2) -> (..., 2 + 4 * frequencies)``: the coordinates, then per coordinate ``sin`` of
    ``2^k pi x`` for ``k < frequencies`` followed by their ``cos``."""
    freq = 2 ** torch.arange(frequencies, dtype=torch.float32, device=coord.device) * math.pi
    spectrum = coord[..., None] * freq  # (..., 2, F)
    enc = torch.stack([spectrum.sin(), spectrum.cos()], dim=-2)  # (..., 2, 2, F)
    return torch.cat([coord, enc.reshape(*coord.shape[:-1], -1)], dim=-1)


class ImplicitNeuralRepresentation(nn.Module):
    """Intra-scale INR (the authors' ``INR``): an image from features by a coordinate MLP at every pixel.

    ``(B, dim, H, W) -> (B, 3, H, W)``. Each pixel is a query at its own centre: the MLP sees the 3x3 unfolded
    features of the feature pixel, the positionally encoded query coordinate relative to that pixel's (scaled by the
    grid size) and the cell size (scaled likewise). The four local-ensemble terms are weighted by the areas of the
    opposite corners, normalised. The authors' code shifts the four queries but then never samples with the shifted
    coordinates: the queries lie on the feature grid itself, so the four predictions coincide (computed once here)
    and the relative coordinates are zero; this reproduces their computation, equal weights included.

    The coordinate geometry is float32 whatever the features' dtype, as in the authors' code (their coordinates are
    float32 tensors), and cast to the features' dtype where it meets them.
    """

    def __init__(self, dim: int, out_channels: int = 3) -> None:
        super().__init__()
        in_dim = dim * 9 + 2 + 4 * INR_FREQUENCIES + 2  # unfolded features, encoded coordinate, cell
        self.imnet = CoordinateMLP(in_dim, out_channels, INR_HIDDEN)

    def forward(self, feat: Tensor) -> Tensor:
        b, c, h, w = feat.shape
        query = positional_encoding(pixel_centres(h, w, feat.device))  # (HW, 18): each output pixel's centre
        # The nearest feature pixel of each query (the same grid); relative coordinates scaled by the grid size.
        rel = query - positional_encoding(pixel_centres(h, w, feat.device))
        rel[:, 0] *= h
        rel[:, 1] *= w
        cell = torch.ones(h * w, 2, device=feat.device)
        cell[:, 0] *= 2 / h
        cell[:, 1] *= 2 / w
        cell[:, 0] *= h
        cell[:, 1] *= w
        unfolded = F.unfold(feat, 3, padding=1).reshape(b, c * 9, h * w).transpose(1, 2)  # (B, HW, 9C)
        geometry = torch.cat([rel, cell], dim=-1).to(feat.dtype).expand(b, -1, -1)
        pred = self.imnet(torch.cat([unfolded, geometry], dim=-1))  # (B, HW, 3)
        # Local ensemble: each of the four terms weighted by the area of its diagonally opposite corner.
        areas = [torch.abs(rel[:, 0] * rel[:, 1]) + 1e-9 for _ in range(4)]
        total_area = torch.stack(areas).sum(dim=0)
        out = 0
        for area in areas[::-1]:  # the authors swap 0<->3 and 1<->2
            out = out + pred * (area / total_area).to(pred.dtype).unsqueeze(-1)
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)
