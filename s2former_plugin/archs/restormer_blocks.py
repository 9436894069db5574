"""Blocks DRSformer and NeRD-Rain share with Restormer (same authors' code): layer norm over channels, patch
embedding, pixel-(un)shuffle down/up-sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['ChannelLayerNorm', 'Downsample', 'OverlapPatchEmbed', 'PreNormBlock', 'Upsample', 'channel_similarities']


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


def channel_similarities(qkv: Tensor, num_heads: int, temperature: Tensor) -> tuple[Tensor, Tensor]:
    """Restormer's transposed attention before its softmax: similarities of channels, not of pixels.

    Args:
        qkv: Queries, keys and values stacked on the channels, ``(B, 3C, H, W)``.
        num_heads: Heads; each holds ``C / num_heads`` channels.
        temperature: The learnt per-head scale, ``(num_heads, 1, 1)``.

    Returns:
        The L2-normalised queries' and keys' similarities over the pixels times ``temperature``,
        ``(B, heads, C/heads, C/heads)``, and the values ``(B, heads, C/heads, H*W)``.
    """
    b, _, h, w = qkv.shape
    q, k, v = qkv.chunk(3, dim=1)  # each (B, C, H, W)
    q, k, v = (t.reshape(b, num_heads, t.shape[1] // num_heads, h * w) for t in (q, k, v))  # (B, heads, Ch, HW)
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    return (q @ k.transpose(-2, -1)) * temperature, v


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
