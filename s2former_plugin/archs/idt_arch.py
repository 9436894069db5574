"""IDT (Xiao et al., "Image De-raining Transformer", TPAMI 2022).

Written from the authors' description and code (jiexiaou/IDT, ``model.py``, class ``IDT``). The parts carry the
paper's names; the state-dict keys are the authors' (so their released weights load with ``strict=True``), which
is why some attributes keep their spelling (``Position_Extract``, ``dowsample_0``, ``bottle``, ...).

The network: a 3x3 input projection, a five-level U-shaped encoder-decoder of *dual Transformer* layers, a 3x3
output projection, plus the input. Each dual Transformer layer is a few *window-based Transformers* (self-attention
inside non-overlapping windows: local) followed by one *spatial-based Transformer* (self-attention across the 8x8
windows, each window one token, per channel: long-range); the bottleneck has no spatial-based Transformer. Both
use the *relative position enhanced multi-head self-attention*: a relative position bias on the attention logits
plus a positional branch (depth-wise and grouped convolutions over a third projection of the tokens) added to the
attention output. The feed-forward part is the locally-enhanced LeFF (linear, depth-wise 3x3 conv with a
residual, linear).

The authors' class is built for one input size (``img_size``: the spatial-based Transformer attends across a fixed
number of windows). :meth:`IDT.forward` takes any ``H x W``: an input of exactly ``img_size x img_size`` is
restored directly (the training patches, the authors' ``test.py``); any other size as the authors'
``test_full_size.py`` does, with ``img_size`` crops overlapping by 20 pixels merged with centre-distance weights
(:func:`.fixed_size_crops.blend_fixed_crops`; sides shorter than one crop are padded by reflection first, which the
authors' script cannot do). Unlike their scripts the output is not clamped to ``[0, 1]`` (training needs the raw
output; clamp when writing images).

One detail is kept as the authors compute it: the spatial-based Transformer's output tokens come back in window
order (window index, then position inside the window), not in raster order, before they are added to the raster
shortcut. Their trained weights expect exactly that.

YAML usage (the authors' keyword arguments, their training configuration)::

    network_g: {type: IDT, img_size: 128, in_chans: 3, embed_dim: 32, depths: [3, 3, 2, 2, 1, 1, 2, 2, 3],
                num_heads: [1, 2, 4, 8, 16, 16, 8, 4, 2], win_size: 8, mlp_ratio: 4.0, qkv_bias: true}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from .fixed_size_crops import blend_fixed_crops

__all__ = ['IDT', 'PARAMS_DEFAULT', 'CROP_OVERLAP', 'SPATIAL_WINDOW']

#: Parameters of the paper's configuration (the authors' training defaults; ``tests`` recompute it).
PARAMS_DEFAULT = 16_416_463
#: Overlap of the ``img_size`` crops for other input sizes (the authors' ``test_full_size.py``).
CROP_OVERLAP = 20
#: Side of the windows the spatial-based Transformer treats as tokens (fixed in the authors' code, whatever
#: ``win_size`` the window-based Transformers use).
SPATIAL_WINDOW = 8

#: Per level (encoder 0-3, bottleneck, decoder 0-3): the scale divisor, the clamp of the relative positions
#: (``k_bound``), the number of window-based Transformers, and whether a spatial-based Transformer follows.
_LEVELS = (
    (1, 16, 3, True),
    (2, 8, 3, True),
    (4, 4, 2, True),
    (8, 2, 2, True),
    (16, 1, 1, False),
    (8, 2, 1, True),
    (4, 4, 2, True),
    (2, 8, 2, True),
    (1, 16, 3, True),
)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of whole samples with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


class PositionEnhancedProjection(nn.Module):
    """Token projections of the attention: queries, and keys, values and the positional values in one linear."""

    def __init__(self, dim: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        inner = (dim // heads) * heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_kv = nn.Linear(dim, inner * 3, bias=bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x`` ``(B', N, C)`` -> q, k, v ``(B', heads, N, C / heads)`` and positional values ``(B', C, n, n)``."""
        b, n, c = x.shape
        q = self.to_q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        k, v, v_pos = self.to_kv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        side = int(n**0.5)
        return q, k, v, v_pos.transpose(-1, -2).reshape(b, c, side, side)


class RelativePositionEnhancedAttention(nn.Module):
    """Relative position enhanced multi-head self-attention over the tokens of one ``win x win`` grid.

    ``softmax(q k^T / sqrt(d) + B) v + P(v_pos)``: ``B`` a learnt bias per head for each relative offset (offsets
    clamped to ``+-(k_bound - 1)``), ``P`` the positional branch (a depth-wise conv of kernel ``2 min(win - 1, 2)
    + 1``, then a 1x1 conv grouped by head) applied to a third projection of the tokens laid out on the grid.
    """

    def __init__(self, dim: int, win: int, heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 k_bound: int = 8) -> None:  # fmt: skip
        super().__init__()
        self.heads = heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1) ** 2, heads))
        reach = min(win - 1, 2)
        self.Position_Extract = nn.Sequential(
            nn.Conv2d(dim, dim, 2 * reach + 1, padding=reach, groups=dim),
            nn.Conv2d(dim, dim, 1, groups=heads),
        )
        ys, xs = torch.meshgrid(torch.arange(win), torch.arange(win), indexing='ij')
        coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, win^2)
        rel = (coords[:, :, None] - coords[:, None, :]).clamp(-k_bound + 1, k_bound - 1) + (k_bound - 1)
        self.register_buffer('relative_position_index', rel[0] * (2 * k_bound - 1) + rel[1], persistent=False)
        self.qkv = PositionEnhancedProjection(dim, heads, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v, v_pos = self.qkv(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()].view(n, n, -1)
        attn = (attn + bias.permute(2, 0, 1).unsqueeze(0)).softmax(dim=-1)
        position = self.Position_Extract(v_pos).reshape(b, c, n).transpose(-2, -1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c) + position)


class LeFF(nn.Module):
    """Locally-enhanced feed-forward network: linear + GELU, depth-wise 3x3 conv + GELU with a residual, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden, dim))

    def forward(self, x: Tensor, size: int) -> Tensor:
        b, n, _ = x.shape
        x = self.linear1(x)
        grid = x.transpose(1, 2).reshape(b, -1, size, size)
        x = (self.dwconv(grid) + grid).flatten(2).transpose(1, 2)
        return self.linear2(x)


class WindowTransformer(nn.Module):
    """Window-based Transformer: attention inside non-overlapping ``win x win`` windows, then LeFF (pre-norm)."""

    def __init__(self, dim: int, resolution: int, heads: int, win: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop_path: float) -> None:  # fmt: skip
        super().__init__()
        self.win = min(win, resolution)  # a level smaller than a window is one window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelativePositionEnhancedAttention(dim, self.win, heads, qkv_bias, qk_scale)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: int) -> Tensor:
        b, _, c = x.shape
        s, g = self.win, size // self.win
        windows = self.norm1(x).view(b, g, s, g, s, c).transpose(2, 3).reshape(-1, s * s, c)
        y = self.attn(windows).view(b, g, g, s, s, c).transpose(2, 3).reshape(b, size * size, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class SpatialTransformer(nn.Module):
    """Spatial-based Transformer: per channel, each 8x8 window is one token of 64 values and the windows attend to
    one another (long-range), then LeFF (pre-norm); no norm before the attention, as the authors."""

    def __init__(self, channels: int, resolution: int, heads: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop_path: float, k_bound: int) -> None:  # fmt: skip
        super().__init__()
        tokens = SPATIAL_WINDOW * SPATIAL_WINDOW
        self.attn = RelativePositionEnhancedAttention(
            tokens, resolution // SPATIAL_WINDOW, heads, qkv_bias, qk_scale, k_bound=k_bound
        )
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = LeFF(channels, int(tokens * mlp_ratio))

    def forward(self, x: Tensor, size: int) -> Tensor:
        b, n, c = x.shape
        s = SPATIAL_WINDOW
        grid = x.transpose(1, 2).reshape(b, c, size, size)
        windows = F.unfold(grid, s, stride=s).view(b * c, s * s, -1).transpose(1, 2)  # (B C, windows, 64)
        y = self.attn(windows)
        # Back in window order (window, position in it), as the authors: not the shortcut's raster order.
        y = y.reshape(b, c, n).transpose(1, 2)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class DualTransformerLayer(nn.Module):
    """``num`` window-based Transformers, then (``spatial``) one spatial-based Transformer, at one level."""

    def __init__(self, dim: int, resolution: int, heads: int, win: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop_path: Sequence[float], k_bound: int, num: int,
                 spatial: bool) -> None:  # fmt: skip
        super().__init__()
        self.size = resolution
        blocks: list[nn.Module] = [
            WindowTransformer(dim, resolution, heads, win, mlp_ratio, qkv_bias, qk_scale, drop_path[0])
            for _ in range(num)
        ]
        if spatial:
            blocks.append(
                SpatialTransformer(dim, resolution, heads, mlp_ratio, qkv_bias, qk_scale, drop_path[-1], k_bound)
            )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, self.size)
        return x


class _Projection(nn.Module):
    """A 3x3 conv between tokens ``(B, L, C)`` and images ``(B, C, H, W)`` (the authors' Input/OutputProj)."""

    def __init__(self, cin: int, cout: int, act: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), *([nn.LeakyReLU(inplace=True)] if act else []))


def _tokens_to_square(x: Tensor) -> Tensor:
    """Tokens ``(B, L, C)`` of a square map -> ``(B, C, sqrt(L), sqrt(L))``."""
    b, n, c = x.shape
    side = int(n**0.5)
    return x.transpose(1, 2).reshape(b, c, side, side)


class Downsample(nn.Module):
    """Halves a square token map: 4x4 conv, stride 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_tokens_to_square(x)).flatten(2).transpose(1, 2)


class Upsample(nn.Module):
    """Doubles a square token map: 2x2 transposed conv, stride 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2))

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(_tokens_to_square(x)).flatten(2).transpose(1, 2)


@ARCH_REGISTRY.register()
class IDT(nn.Module):
    """IDT (Xiao et al., TPAMI 2022), written from jiexiaou/IDT ``model.py`` ``IDT``.

    Keyword arguments as the authors' (``drop_path_rate``: stochastic depth while training; ``depths`` only sets
    the drop-path rates there: the number of Transformers per level is fixed by the architecture). The paper's
    configuration, the authors' training defaults (``img_size=128, embed_dim=32,
    depths=[3, 3, 2, 2, 1, 1, 2, 2, 3]``, the default heads and window), has 16,416,463 parameters.

    Args:
        img_size: The one input side the network is built for (a multiple of 64); other sizes go through crops.
        in_chans: Image channels (input and output).
        embed_dim: Channels at full resolution (doubled per level).
        depths: Nine values (encoder 0-3, bottleneck, decoder 0-3) for the drop-path rate schedule.
        num_heads: Attention heads per level (nine values).
        win_size: Window side of the window-based Transformers.
        mlp_ratio: LeFF hidden width over the input width.
        qkv_bias: Biases in the token projections.
        qk_scale: Attention scale (default ``1 / sqrt(head width)``).
        drop_path_rate: Largest stochastic-depth rate.
    """

    def __init__(
        self,
        img_size: int = 128,
        in_chans: int = 3,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2, 2, 2, 2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2),
        win_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        _check(img_size, embed_dim, list(depths), list(num_heads), win_size)
        self.reso = img_size
        enc_dpr = torch.linspace(0, drop_path_rate, sum(depths[:4]), device='cpu').tolist()
        dec_dpr = enc_dpr[::-1]
        starts = [sum(depths[:i]) for i in range(5)] + [sum(depths[5 : 5 + i]) for i in range(5)]
        rates = [enc_dpr[starts[i] : starts[i + 1]] for i in range(4)] + [[drop_path_rate] * depths[4]]
        rates += [dec_dpr[starts[5 + i] : starts[6 + i]] for i in range(4)]
        dims = [embed_dim * m for m in (1, 2, 4, 8, 16, 16, 8, 4, 2)]

        def layer(i: int) -> DualTransformerLayer:
            div, k_bound, num, spatial = _LEVELS[i]
            if not rates[i]:
                raise ValueError(f'IDT: depths {list(depths)} leave level {i} no drop-path rate (a zero entry)')
            return DualTransformerLayer(dims[i], img_size // div, num_heads[i], win_size, mlp_ratio, qkv_bias,
                                        qk_scale, rates[i], k_bound, num, spatial)  # fmt: skip

        self.input_proj = _Projection(in_chans, embed_dim, act=True)
        self.output_proj = _Projection(2 * embed_dim, in_chans, act=False)
        self.encoderlayer_0 = layer(0)
        self.dowsample_0 = Downsample(embed_dim, embed_dim * 2)
        self.encoderlayer_1 = layer(1)
        self.dowsample_1 = Downsample(embed_dim * 2, embed_dim * 4)
        self.encoderlayer_2 = layer(2)
        self.dowsample_2 = Downsample(embed_dim * 4, embed_dim * 8)
        self.encoderlayer_3 = layer(3)
        self.dowsample_3 = Downsample(embed_dim * 8, embed_dim * 16)
        self.bottle = layer(4)
        self.upsample_0 = Upsample(embed_dim * 16, embed_dim * 8)
        self.decoderlayer_0 = layer(5)
        self.upsample_1 = Upsample(embed_dim * 16, embed_dim * 4)
        self.decoderlayer_1 = layer(6)
        self.upsample_2 = Upsample(embed_dim * 8, embed_dim * 2)
        self.decoderlayer_2 = layer(7)
        self.upsample_3 = Upsample(embed_dim * 4, embed_dim)
        self.decoderlayer_3 = layer(8)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """Derain ``x`` (B, C, H, W) of any H x W; returns one image of the input's size (see the module doc)."""
        if x.shape[-2:] == (self.reso, self.reso):
            return self.restore(x)
        return blend_fixed_crops(self.restore, x, self.reso, CROP_OVERLAP)

    def restore(self, x: Tensor) -> Tensor:
        """The authors' forward, on ``(B, C, img_size, img_size)`` only."""
        if x.shape[-2:] != (self.reso, self.reso):
            raise ValueError(f'IDT.restore: takes {self.reso}x{self.reso} inputs, got {tuple(x.shape[-2:])}')
        y = self.input_proj.proj(x).flatten(2).transpose(1, 2)
        skips = []
        for i in range(4):
            y = getattr(self, f'encoderlayer_{i}')(y)
            skips.append(y)
            y = getattr(self, f'dowsample_{i}')(y)
        y = self.bottle(y)
        for i in range(4):
            y = torch.cat([getattr(self, f'upsample_{i}')(y), skips[3 - i]], -1)
            y = getattr(self, f'decoderlayer_{i}')(y)
        b, n, c = y.shape
        return x + self.output_proj.proj(y.transpose(1, 2).reshape(b, c, self.reso, self.reso))


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _check(img_size: int, embed_dim: int, depths: list[int], num_heads: list[int], win_size: int) -> None:
    """One-line errors for configurations the authors' class cannot run."""
    if len(depths) != 9 or len(num_heads) != 9:
        raise ValueError(f'IDT: depths and num_heads need 9 values (4 encoder, bottleneck, 4 decoder levels), '
                         f'got {depths}, {num_heads}')  # fmt: skip
    if img_size < 64 or img_size % 64:
        raise ValueError(f'IDT: img_size must be a positive multiple of 64 (8x8 windows at 1/8 scale), got {img_size}')
    for i, (div, _, _, spatial) in enumerate(_LEVELS):
        side, dim, heads = img_size // div, embed_dim * (1, 2, 4, 8, 16, 16, 8, 4, 2)[i], num_heads[i]
        if side % min(win_size, side):
            raise ValueError(f'IDT: win_size {win_size} does not tile the {side}x{side} maps of img_size {img_size}')
        if heads < 1 or dim % heads or (spatial and (SPATIAL_WINDOW**2) % heads):
            raise ValueError(f'IDT: num_heads[{i}] = {heads} must divide the level width {dim} (and 64)')
