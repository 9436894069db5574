"""Blocks DRSformer and NeRD-Rain share with Restormer (same authors' code): layer norm over channels, patch
embedding, pixel-(un)shuffle down/up-sampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ['ChannelLayerNorm', 'Downsample', 'OverlapPatchEmbed', 'PreNormBlock', 'Upsample']


class _LayerNormWeights(nn.Module):
    """The affine weights of :class:`ChannelLayerNorm` (their own module for the authors' ``norm.body.*`` keys)."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_parameter('bias', nn.Parameter(torch.zeros(dim)) if with_bias else None)


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of a ``(B, C, H, W)`` map at each pixel (biased variance, eps 1e-5).

    ``with_bias=False`` is the authors' ``BiasFree`` variant: the input is scaled, not centred, and has no bias.
    """

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.body = _LayerNormWeights(dim, with_bias)

    def forward(self, x: Tensor) -> Tensor:
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C): the statistics over C
        var = t.var(-1, keepdim=True, unbiased=False)
        if self.body.bias is None:
            t = t / torch.sqrt(var + 1e-5) * self.body.weight
        else:
            t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * self.body.weight + self.body.bias
        return t.permute(0, 3, 1, 2)


class OverlapPatchEmbed(nn.Module):
    """3x3 conv from the image to ``dim`` features (no bias)."""

    def __init__(self, in_c: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """``(B, C, H, W) -> (B, 2C, H/2, W/2)``: 3x3 conv to C/2, pixel-unshuffle."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """``(B, C, H, W) -> (B, C/2, 2H, 2W)``: 3x3 conv to 2C, pixel-shuffle."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class PreNormBlock(nn.Module):
    """Pre-norm residual transformer block: ``x + attn(norm1(x))``, then ``+ ffn(norm2(.))`` (each paper's attention
    and feed-forward given; keys ``norm1``, ``attn``, ``norm2``, ``ffn``)."""

    def __init__(self, dim: int, attn: nn.Module, ffn: nn.Module, with_bias: bool) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, with_bias)
        self.attn = attn
        self.norm2 = ChannelLayerNorm(dim, with_bias)
        self.ffn = ffn

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
