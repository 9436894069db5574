"""DRSformer (Chen et al., "Learning a Sparse Transformer Network for Effective Image Deraining", CVPR 2023).

Written from the authors' description and code (cschenxiang/DRSformer, ``basicsr/models/archs/DRSformer_arch.py``
and, without the mixture-of-experts feature compensator, ``DRSformer_arch_200L+SPA.py``). The module names follow
the paper; the state-dict keys are the authors' (their released ``{'params': ...}`` checkpoints load with
``strict=True``), which is why some attributes carry their names (``layers``, ``_ops``, ``_out``, ``ca_fc``, ...).

The network: a 3x3 patch embedding, [MEFC], a four-level U-shaped encoder-decoder of sparse transformer blocks
(STB = top-k sparse attention + mixed-scale feed-forward), [MEFC refinement], a 3x3 output conv, plus the input.
Three 2x down-samplings: the input is padded at the bottom and right to a multiple of 8 (reflection, as the
authors' ``test.py``; replication where a side is too short to reflect) and the output cropped back, so any
``H x W`` returns one image of the input's size. Unlike ``test.py`` the output is not clamped to ``[0, 1]``
(training needs the raw output; clamp when writing images).

YAML usage (the authors' keyword arguments; ``mefc: false`` for their Rain200L / SPA-Data variant)::

    network_g: {type: DRSformer, dim: 48, num_blocks: [4, 6, 6, 8], heads: [1, 2, 4, 8],
                ffn_expansion_factor: 2.66, bias: false, LayerNorm_type: WithBias, mefc: true}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from .padding import pad_to_multiple
from .restormer_blocks import Downsample, OverlapPatchEmbed, PreNormBlock, Upsample, channel_similarities

__all__ = ['DRSformer', 'MULTIPLE', 'PARAMS_DEFAULT', 'PARAMS_DEFAULT_NO_MEFC']

#: Inputs are padded to a multiple of this (three 2x down-samplings).
MULTIPLE = 8
#: Parameters of the paper's configuration (the defaults), with and without MEFC (``tests`` recompute them).
PARAMS_DEFAULT = 33_655_424
PARAMS_DEFAULT_NO_MEFC = 32_610_304

#: The top-k fractions of the sparse attention, as (numerator, denominator): k = int(C * num / den), as the authors
#: compute it (1/2, 2/3, 3/4, 4/5 of the C keys each query sees).
TOPK_FRACTIONS = ((1, 2), (2, 3), (3, 4), (4, 5))


class TopKSparseAttention(nn.Module):
    """Top-k sparse attention (TKSA): channel ("transposed") attention keeping only each query's largest scores.

    Queries, keys and values come from a 1x1 then a depth-wise 3x3 conv; per head, the ``C x C`` similarities of the
    L2-normalised queries and keys (scaled by a learnt temperature) are masked four times, keeping the top
    1/2, 2/3, 3/4 and 4/5 of each row; the four softmax-attentions' outputs are summed with learnt weights.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        # The weights of the four top-k branches (the authors' attn1..attn4, each initialised to 0.2).
        self.attn1 = nn.Parameter(torch.tensor([0.2]))
        self.attn2 = nn.Parameter(torch.tensor([0.2]))
        self.attn3 = nn.Parameter(torch.tensor([0.2]))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        scores, v = channel_similarities(self.qkv_dwconv(self.qkv(x)), self.num_heads, self.temperature)
        ch = scores.shape[-1]
        out = None
        for (num, den), weight in zip(TOPK_FRACTIONS, (self.attn1, self.attn2, self.attn3, self.attn4)):
            top = torch.topk(scores, k=int(ch * num / den), dim=-1, largest=True)[1]
            # a tensor of True, not the scalar: the JIT tracer (MAC counting) has no scatter_ of a bool scalar
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, torch.ones_like(top, dtype=torch.bool))
            attn = torch.where(keep, scores, torch.full_like(scores, float('-inf'))).softmax(dim=-1)
            branch = (attn @ v) * weight  # (B, heads, Ch, HW)
            out = branch if out is None else out + branch
        return self.project_out(out.reshape(b, c, h, w))


class MixedScaleFeedForward(nn.Module):
    """Mixed-scale feed-forward network (MSFN): two depth-wise branches (3x3 and 5x5) that exchange halves twice.

    1x1 to ``2 * hidden``; 3x3 and 5x5 depth-wise convs + ReLU; the first halves of both and the second halves of
    both are concatenated and go through a grouped 3x3 resp. 5x5 conv (``2 * hidden`` -> ``hidden``) + ReLU;
    concatenated (``2 * hidden``) and projected back to ``dim``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.dwconv5x5 = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=5, padding=2, groups=hidden * 2, bias=bias)
        self.dwconv3x3_1 = nn.Conv2d(hidden * 2, hidden, kernel_size=3, padding=1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(hidden * 2, hidden, kernel_size=5, padding=2, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 2, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.project_in(x)  # (B, 2 * hidden, H, W)
        a3, b3 = F.relu(self.dwconv3x3(x)).chunk(2, dim=1)  # each (B, hidden, H, W)
        a5, b5 = F.relu(self.dwconv5x5(x)).chunk(2, dim=1)
        a = F.relu(self.dwconv3x3_1(torch.cat([a3, a5], dim=1)))  # (B, hidden, H, W)
        b = F.relu(self.dwconv5x5_1(torch.cat([b3, b5], dim=1)))
        return self.project_out(torch.cat([a, b], dim=1))  # (B, dim, H, W)


class SparseTransformerBlock(PreNormBlock):
    """Sparse transformer block (STB): ``x + TKSA(LN(x))``, then ``x + MSFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, with_bias: bool) -> None:
        attn = TopKSparseAttention(dim, num_heads, bias)
        super().__init__(dim, attn, MixedScaleFeedForward(dim, ffn_expansion_factor, bias), with_bias)


# ---- Mixture of experts feature compensator (MEFC) ----


class SeparableConvExpert(nn.Module):
    """Expert: two depth-wise-separable ``k x k`` convs (depth-wise, 1x1) with a ReLU between, no bias."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.op = nn.Sequential(
            nn.Conv2d(dim, dim, kernel, padding=pad, groups=dim, bias=False),
            nn.Conv2d(dim, dim, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(dim, dim, kernel, padding=pad, groups=dim, bias=False),
            nn.Conv2d(dim, dim, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilatedConvExpert(nn.Module):
    """Expert: a depth-wise ``k x k`` conv of dilation 2, then a 1x1 conv, no bias."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(dim, dim, kernel, padding=kernel - 1, dilation=2, groups=dim, bias=False),
            nn.Conv2d(dim, dim, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def _experts(dim: int) -> list[nn.Module]:
    """The eight experts, in the authors' order (their indices are state-dict keys): separable 1/3/5/7, dilated
    3/5/7, and a 3x3 average pooling (padding not counted)."""
    return [
        *(SeparableConvExpert(dim, k) for k in (1, 3, 5, 7)),
        *(DilatedConvExpert(dim, k) for k in (3, 5, 7)),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    ]


NUM_EXPERTS = 8


class MixtureOfExpertsLayer(nn.Module):
    """One step of the MEFC: every expert on ``x``, weighted per image by the router, concatenated, 1x1 + ReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self._ops = nn.ModuleList(_experts(dim))
        self._out = nn.Sequential(nn.Conv2d(dim * NUM_EXPERTS, dim, 1, bias=False), nn.ReLU())

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """``weights`` (B, experts): each expert's output is scaled by its weight for that image."""
        outs = [expert(x) * w.view(-1, 1, 1, 1) for w, expert in zip(weights.t(), self._ops)]
        return self._out(torch.cat(outs, dim=1))  # (B, experts * C, H, W) -> (B, C, H, W)


class ExpertRouter(nn.Module):
    """The MEFC's gate: global average pooling, then a two-layer MLP to one logit per (step, expert)."""

    def __init__(self, dim: int, steps: int, num_experts: int) -> None:
        super().__init__()
        self.steps, self.num_experts = steps, num_experts
        out = steps * num_experts
        self.ca_fc = nn.Sequential(nn.Linear(dim, out * 2), nn.ReLU(), nn.Linear(out * 2, out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.ca_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, C) -> (B, steps * experts)
        return y.view(-1, self.steps, self.num_experts)


class ExpertSteps(nn.Module):
    """The MEFC's body: a 1x1 conv + ReLU, then ``steps`` residual mixture-of-experts layers (ReLU after each sum)."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.preprocess = _Conv1x1ReLU(dim)
        self._ops = nn.ModuleList(MixtureOfExpertsLayer(dim) for _ in range(steps))

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """``weights`` (B, steps, experts): the router's softmax weights."""
        x = self.preprocess(x)
        for i, layer in enumerate(self._ops):
            x = F.relu(layer(x, weights[:, i, :]) + x)
        return x


class _Conv1x1ReLU(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class MEFC(nn.Module):
    """Mixture of experts feature compensator: the router's per-image expert weights drive the expert steps.

    ``(B, C, H, W) -> (B, C, H, W)``. The authors' ``subnet`` (one router + body pair, four steps).
    """

    def __init__(self, dim: int, layer_num: int = 1, steps: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(layer_num):
            self.layers.append(ExpertRouter(dim, steps, NUM_EXPERTS))
            self.layers.append(ExpertSteps(dim, steps))

    def forward(self, x: Tensor) -> Tensor:
        for router, body in zip(self.layers[0::2], self.layers[1::2]):
            x = body(x, F.softmax(router(x), dim=-1))
        return x


# ---- Encoder-decoder ----


def _stage(dim: int, heads: int, blocks: int, ffn: float, bias: bool, with_bias: bool) -> nn.Sequential:
    return nn.Sequential(*(SparseTransformerBlock(dim, heads, ffn, bias, with_bias) for _ in range(blocks)))


@ARCH_REGISTRY.register()
class DRSformer(nn.Module):
    """DRSformer, the authors' ``DRSformer`` (cschenxiang/DRSformer); licence: see the authors'.

    The defaults are the paper's configuration: 33,655,424 parameters with MEFC (``mefc=True``, the authors'
    Rain200H / DID / DDN models), 32,610,304 without (``mefc=False``, their Rain200L / SPA-Data models).

    Args:
        inp_channels: Input image channels.
        out_channels: Output image channels (the output adds the input, so equal to ``inp_channels``).
        dim: Features at full resolution (level 1); levels 2-4 have 2, 4, 8 times as many.
        num_blocks: Sparse transformer blocks at levels 1-4 (decoder levels 3, 2, 1 repeat those counts).
        heads: Attention heads at levels 1-4.
        ffn_expansion_factor: Hidden width of the mixed-scale feed-forward, relative to its input.
        bias: Biases in the transformer blocks' convs and the 1x1 channel reductions.
        LayerNorm_type: ``'WithBias'`` or ``'BiasFree'``.
        mefc: The mixture of experts feature compensator after the patch embedding and before the output conv.

    Raises:
        ValueError: a configuration the network cannot run (one line naming the argument).
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = 'WithBias',  # the authors' keyword
        mefc: bool = True,
    ) -> None:
        super().__init__()
        _check_config(inp_channels, out_channels, dim, num_blocks, heads, LayerNorm_type)
        with_bias = LayerNorm_type == 'WithBias'
        nb, hd = list(num_blocks), list(heads)

        def stage(level: int, width: int) -> nn.Sequential:
            return _stage(width, hd[level], nb[level], ffn_expansion_factor, bias, with_bias)

        # The authors' registration order (it is the state-dict order).
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        if mefc:
            self.encoder_level0 = MEFC(dim)
        self.encoder_level1 = stage(0, dim)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(1, dim * 2)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(2, dim * 4)
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(3, dim * 8)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = stage(2, dim * 4)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = stage(1, dim * 2)
        self.up2_1 = Upsample(dim * 2)  # level 1 keeps the concatenation's 2 * dim channels (no reduction)
        self.decoder_level1 = stage(0, dim * 2)
        if mefc:
            self.refinement = MEFC(dim * 2)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)
        self.mefc = mefc

    def forward(self, x: Tensor) -> Tensor:
        """Derain ``x`` (B, C, H, W) of any H x W; returns one image of the input's size."""
        h, w = x.shape[-2:]
        return self.restore(pad_to_multiple(x, MULTIPLE))[..., :h, :w]

    def restore(self, x: Tensor) -> Tensor:
        """The authors' forward: ``x`` (B, C, H, W) with H and W multiples of 8."""
        feat = self.patch_embed(x)  # (B, dim, H, W)
        if self.mefc:
            feat = self.encoder_level0(feat)
        enc1 = self.encoder_level1(feat)  # (B, dim, H, W)
        enc2 = self.encoder_level2(self.down1_2(enc1))  # (B, 2 dim, H/2, W/2)
        enc3 = self.encoder_level3(self.down2_3(enc2))  # (B, 4 dim, H/4, W/4)
        latent = self.latent(self.down3_4(enc3))  # (B, 8 dim, H/8, W/8)
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))  # (B, 8 dim -> 4 dim, H/4, W/4)
        dec3 = self.decoder_level3(dec3)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))  # (B, 4 dim -> 2 dim, H/2, W/2)
        dec2 = self.decoder_level2(dec2)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))  # (B, 2 dim, H, W)
        if self.mefc:
            dec1 = self.refinement(dec1)
        return self.output(dec1) + x  # (B, out_channels, H, W)


def _check_config(
    inp_channels: int, out_channels: int, dim: int, num_blocks: Sequence[int], heads: Sequence[int], norm: str
) -> None:
    """Refuse, in one line, what the authors' class would fail on later or compute wrongly (NaN attention)."""
    if norm not in ('WithBias', 'BiasFree'):
        raise ValueError(f"DRSformer: LayerNorm_type must be 'WithBias' or 'BiasFree', got {norm!r}")
    if len(num_blocks) != 4 or len(heads) != 4:
        raise ValueError(f'DRSformer: num_blocks and heads need 4 values (one per level), got {num_blocks}, {heads}')
    if out_channels != inp_channels:
        raise ValueError(f'DRSformer: out_channels ({out_channels}) must equal inp_channels (the input is added)')
    if dim < 2 or dim % 2:
        raise ValueError(f'DRSformer: dim must be even and at least 2 (Downsample halves it), got {dim}')
    # Per head, the top-k keeps int(C/2) of C channels: C >= 2 or every score is masked (NaN). Decoder level 1
    # (2 * dim channels, heads[0] heads) passes whenever level 1 does.
    for width, head in ((dim, heads[0]), (dim * 2, heads[1]), (dim * 4, heads[2]), (dim * 8, heads[3])):
        if head < 1 or width % head or width // head < 2:
            raise ValueError(
                f'DRSformer: heads {list(heads)} must divide the widths {dim}, {dim * 2}, {dim * 4}, '
                f'{dim * 8} into at least 2 channels per head'
            )
