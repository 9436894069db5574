"""Building blocks of UDR-S2Former (Chen et al., "Sparse Sampling Transformer with Uncertainty-Driven Ranking for
Unified Removal of Raindrops and Rain Streaks", ICCV 2023).

Each block reproduces the computation of the official implementation (Owen718/UDR-S2Former_deraining) exactly, up
to floating-point rounding, with clearer names; ``s2former_plugin.official`` maps the official parameter names to
these. Layout conventions: ``(B, C, H, W)`` is "channel-first", ``(B, H, W, C)`` is "channel-last"; the decoder
(reconstruction) blocks work channel-last, everything else channel-first.

Uncertainty-driven ranking, which guides the decoder's two attentions, is its own module (``s2former_ranking``);
the kernels that exist only for speed sit behind one switch in ``s2former_ops`` (fast by default, plain ops as
the reference).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import s2former_ops as ops
from . import s2former_ranking as udr
from .precision import float32_island
from .s2former_export import traced_sampling_axes as _traced_sampling_axes


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------
def pointwise(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Apply a 1x1 ``nn.Conv2d`` to a channel-last tensor ``(..., C_in) -> (..., C_out)`` as a matmul."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def relative_position_index(window_size: int) -> Tensor:
    """Swin-style index ``(ws*ws, ws*ws)`` into a ``((2ws-1)^2, heads)`` relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # (2, ws*ws)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # (N, N, 2)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def window_partition(x: Tensor, ws: int) -> Tensor:
    """``(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C)`` (windows in raster order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, ws: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws*ws, C) -> (B, H, W, C)``."""
    x = windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


@functools.lru_cache(maxsize=256)
def _sampling_axes(h: int, w: int, ws: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Reference sampling grid of :class:`SparseSamplingAttention` for an ``h x w`` map, per axis, cached.

    The grid is separable (its x coordinates depend only on the column, its y coordinates only on the row), so
    only per-axis vectors are cached: O(h + w) bytes per size and device instead of two full-size grids (which,
    over photos of many sizes, pinned GBs of device memory). Returns ``(base_x, local_x, base_y, local_y,
    divisor)``: ``base_x``/``local_x`` ``(1, 1, 1, w/ws, ws)`` and ``base_y``/``local_y`` ``(1, h/ws, ws, 1, 1)``
    in ``grid_sample(align_corners=True)`` coordinates (``base`` is each window's centre plus ``local``, the pixel
    offsets inside the window, which the predicted scales stretch), and ``divisor = [w/ws, h/ws]`` on the device
    (built here once, not per call: a host-to-device copy synchronises the CUDA stream). Built in float32 with
    the official operation order (so the rounding matches), then cast.
    """
    with torch.inference_mode(False), torch.no_grad():
        nh, nw = h // ws, w // ws
        # float32 whatever torch's default dtype: the cache key does not hold the default dtype, so a grid built
        # under set_default_dtype(float64) would otherwise be served to later float32 callers and vice versa.
        f32 = torch.float32
        ref = torch.stack(
            torch.meshgrid(torch.linspace(-1, 1, w, dtype=f32), torch.linspace(-1, 1, h, dtype=f32), indexing='ij'), 0
        )
        ref = ref.permute(0, 2, 1).unsqueeze(0)  # (1, 2, h, w): channel 0 = x, channel 1 = y
        centres = F.avg_pool2d(ref, kernel_size=ws).reshape(1, 2, nh, 1, nw, 1)
        step_h = torch.arange(ws, dtype=f32) * 2 * ws / ws / (h - 1)  # integer-valued until / ws: same rounding
        step_w = torch.arange(ws, dtype=f32) * 2 * ws / ws / (w - 1)
        step_h, step_w = step_h - step_h.mean(), step_w - step_w.mean()
        offsets = torch.stack(torch.meshgrid(step_w.repeat(nw), step_h.repeat(nh), indexing='ij'), 0)
        offsets = offsets.permute(0, 2, 1).reshape(1, 2, nh, ws, nw, ws)
        base = centres + offsets  # (1, 2, nh, ws, nw, ws)
        # x varies only along (nw, ws), y only along (nh, ws): keep one row / one column of each.
        axes = (base[0, 0, 0, 0], offsets[0, 0, 0, 0], base[0, 1, :, :, 0, 0], offsets[0, 1, :, :, 0, 0])
        axes = [t.reshape(shape) for t, shape in zip(axes, [(1, 1, 1, nw, ws)] * 2 + [(1, nh, ws, 1, 1)] * 2)]
        divisor = torch.tensor([nw, nh])
        return tuple(t.contiguous().to(device, dtype) for t in (*axes, divisor))


# --------------------------------------------------------------------------------------------------------------
# Normalisation and attention gates
# --------------------------------------------------------------------------------------------------------------
class BiasFreeLayerNorm(nn.Module):
    """Restormer's bias-free LayerNorm over the channels of a channel-first map: ``x / std(x) * weight``.

    The input is *not* centred (only divided by the standard deviation), as in the official ConvBlock.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return float32_island(self._normalise, x)  # statistics in float32 under autocast, as autocast's layer_norm

    def _normalise(self, x: Tensor) -> Tensor:
        x = ops.bias_free_layer_norm(x.permute(0, 2, 3, 1), self.weight, self.eps)  # over C of (B, H, W, C)
        return x.permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of a channel-first map ``(B, C, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(expand(act(reduce(avgpool(x)))))``.

    Args:
        dim: Channels.
        reduction: Channel reduction of the hidden layer.
        bias: Whether the two 1x1 convolutions have biases.
        act: Hidden activation (the encoder uses LeakyReLU, the decoder and refinement ReLU).
    """

    def __init__(self, dim: int, reduction: int, bias: bool = False, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.reduce = nn.Conv2d(dim, dim // reduction, 1, bias=bias)
        self.act = act()
        self.expand = nn.Conv2d(dim // reduction, dim, 1, bias=bias)

    def gate(self, x: Tensor) -> Tensor:
        """The channel weights ``(B, C, 1, 1)``."""
        # sum / N, not mean: the same value (mean is computed as sum / N), but the backward of a sum is a free
        # broadcast view, while mean's backward materialises a full-size map divided by N (~4 % of a training
        # step: 32 such gates run at full resolution).
        pooled = x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3])
        return torch.sigmoid(self.expand(self.act(self.reduce(pooled))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class PixelAttention(nn.Module):
    """Spatial gate: ``x * sigmoid(conv2(relu(conv1(x))))`` with a one-channel gate map."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim // reduction, 1)
        self.conv2 = nn.Conv2d(dim // reduction, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(x))))  # gate (B, 1, H, W)


# --------------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    """Encoder block (inverted residual): 1x1 expand, depthwise 3x3, bias-free LN, GELU, depthwise 3x3,
    channel attention, 1x1 project, plus the identity.

    Args:
        dim: Channels in and out.
        expand_ratio: Hidden channels are ``round(dim * expand_ratio)`` (must not be 1: the official net then
            drops the expansion conv, a variant this port does not implement).
    """

    def __init__(self, dim: int, expand_ratio: float = 2):
        super().__init__()
        hidden = round(dim * expand_ratio)
        self.expand = nn.Conv2d(dim, hidden, 1)
        self.dwconv1 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = BiasFreeLayerNorm(hidden)
        self.dwconv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.channel_attn = ChannelAttention(hidden, reduction=4, bias=True, act=nn.LeakyReLU)
        self.project = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv1(self.expand(x)))  # (B, hidden, H, W)
        y = self.channel_attn(self.dwconv2(F.gelu(y)))
        return x + self.project(y)


# --------------------------------------------------------------------------------------------------------------
# Bottleneck
# --------------------------------------------------------------------------------------------------------------
class GlobalAttention(nn.Module):
    """Multi-head self-attention over all positions plus a depthwise 3x3 conv branch (channel-first in/out)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, N, C)
        q = self.q(tokens).view(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, heads, N, d)
        k, v = self.kv(tokens).view(b, -1, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = ops.attention(q, k, v)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, h, w, c)  # channel = head * d + i
        return pointwise(out, self.proj).permute(0, 3, 1, 2) + self.dwconv(x)


class GatedMultiScaleFFN(nn.Module):
    """Multi-scale gated FFN: 1x1 expand, ``x + dw3x3(x) + dw5x5(x)``, simple gate (halves), 1x1 project."""

    def __init__(self, dim: int, expand_ratio: int = 2):
        super().__init__()
        hidden = dim * expand_ratio
        self.expand = nn.Conv2d(dim, hidden, 1)
        self.dwconv3 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.dwconv5 = nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden)
        self.project = nn.Conv2d(hidden // 2, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(x)  # (B, hidden, H, W)
        x = x + self.dwconv3(x) + self.dwconv5(x)
        x1, x2 = x.chunk(2, dim=1)
        return self.project(x1 * x2)


class BottleneckBlock(nn.Module):
    """Bottleneck transformer block at 1/16 scale (channel-first in/out).

    Note the official block has *no* residual around the attention: ``y = attn(norm1(x))`` and then
    ``y + ffn(norm2(y))`` (the depthwise-conv branch inside the attention carries the signal).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = GlobalAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedMultiScaleFFN(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


# --------------------------------------------------------------------------------------------------------------
# Decoder: uncertainty-driven reconstruction
# --------------------------------------------------------------------------------------------------------------
class WindowAttentionBase(nn.Module):
    """Shared parts of the two window attentions: heads, scale and the relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim, self.num_heads, self.ws = dim, num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('relative_position_index', relative_position_index(window_size))

    def relative_position_bias(self) -> Tensor:
        """``(heads, ws*ws, ws*ws)`` additive attention bias."""
        n = self.ws * self.ws
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)


class SparseSamplingAttention(WindowAttentionBase):
    """Sparse sampling attention (SSA): window attention whose keys/values are bilinearly resampled on a
    per-window, per-head grid, shifted and stretched by offsets/scales predicted from uncertainty-ranked features.

    The offset/scale predictors see ``x * constraint``, where ``constraint`` is 1 at the positions whose
    uncertainty feature ranks in the top 80 % of its channel's map and 0.6 elsewhere
    (:func:`s2former_ranking.ssa_constraint`).
    Channel-last in/out; ``H`` and ``W`` must be multiples of ``window_size``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__(dim, num_heads, window_size)
        self.offset_head = nn.Conv2d(dim, num_heads * 2, 1)
        self.scale_head = nn.Conv2d(dim, num_heads * 2, 1)
        self.qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def sampling_grid(self, x: Tensor, constraint: Tensor) -> Tensor:
        """Per-head sampling grid ``(B*heads, H, W, 2)`` for ``grid_sample``."""
        b, h, w, _ = x.shape
        ws, heads = self.ws, self.num_heads
        nh, nw = h // ws, w // ws
        pooled = (x * constraint).view(b, nh, ws, nw, ws, -1).mean((2, 4))  # (B, nh, nw, C)
        pooled = F.leaky_relu(pooled)
        # (B, nh, nw, heads*2) -> (B*heads, nh, 1, nw, 1, 2): (x, y) per window and head
        offsets = pointwise(pooled, self.offset_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
        scales = pointwise(pooled, self.scale_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
        if torch.jit.is_tracing():  # export: sizes in the graph
            axes = _traced_sampling_axes
        elif torch.compiler.is_compiling():  # the compiler folds the grid into constants; its cache is not traced
            axes = _sampling_axes.__wrapped__
        else:
            axes = _sampling_axes
        base_x, local_x, base_y, local_y, divisor = axes(h, w, ws, x.device, x.dtype)
        offsets = (offsets / divisor).reshape(b * heads, nh, 1, nw, 1, 2)
        scales = scales.reshape(b * heads, nh, 1, nw, 1, 2)
        # base + (local * scale + offset), per axis; broadcast to (B*heads, nh, ws, nw, ws) by the one stack.
        gx = base_x + (local_x * scales[..., 0] + offsets[..., 0])  # (B*heads, nh, 1, nw, ws)
        gy = base_y + (local_y * scales[..., 1] + offsets[..., 1])  # (B*heads, nh, ws, nw, 1)
        shape = (b * heads, nh, ws, nw, ws)
        return torch.stack([gx.expand(shape), gy.expand(shape)], dim=-1).reshape(b * heads, h, w, 2)

    def forward(self, x: Tensor, constraint: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws, heads, d = self.ws, self.num_heads, c // self.num_heads
        nh, nw = h // ws, w // ws
        grid = self.sampling_grid(x, constraint)  # (B*heads, H, W, 2)
        qkv = pointwise(x, self.qkv).view(b, h, w, 3, heads, d)
        # queries in windows: (B*nh*nw, heads, ws*ws, d)
        q = qkv[:, :, :, 0].reshape(b, nh, ws, nw, ws, heads, d).permute(0, 1, 3, 5, 2, 4, 6)
        q = q.reshape(-1, heads, ws * ws, d)
        # keys and values sampled together: (B*heads, 2*d, H, W)
        kv = qkv[:, :, :, 1:].permute(0, 4, 3, 5, 1, 2).reshape(b * heads, 2 * d, h, w)
        kv = F.grid_sample(kv, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
        kv = kv.view(b, heads, 2, d, nh, ws, nw, ws).permute(2, 0, 4, 6, 1, 5, 7, 3)
        kv = kv.reshape(2, -1, heads, ws * ws, d)  # (2, B*nh*nw, heads, ws*ws, d)
        bias = self.relative_position_bias().unsqueeze(0)  # (1, heads, N, N)
        out = ops.attention(q, kv[0], kv[1], bias)  # softmax(q k^T / sqrt(d) + bias) v: (B*nW, heads, N, d)
        out = out.view(b, nh, nw, heads, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)
        return pointwise(out, self.proj)


class LocalReconstruction(WindowAttentionBase):
    """Window self-attention whose logits are modulated by uncertainty ranking (channel-last in/out).

    For each query, the logits of keys outside its top-80 % uncertainty affinity are multiplied by 1.2
    (:func:`s2former_ranking.lr_modulation`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__(dim, num_heads, window_size)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        """``modulation`` from :func:`s2former_ranking.lr_modulation` with ``scale=self.scale`` (the query
        scaling folded in)."""
        b, h, w, c = x.shape
        ws, heads = self.ws, self.num_heads
        windows = window_partition(x, ws)  # (B*nW, N, C)
        qkv = self.qkv(windows).view(windows.shape[0], ws * ws, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, heads, N, d)
        # The unscaled logits (scale folded into modulation) can overflow float16: float32 under autocast.
        attn = float32_island(self._attention_weights, q, k, modulation).to(v.dtype)
        out = attn @ v  # (B*nW, heads, N, d)
        out = self.proj(out.transpose(1, 2).reshape(-1, ws * ws, c))
        return window_reverse(out, ws, b, h, w)

    def _attention_weights(self, q: Tensor, k: Tensor, modulation: Tensor) -> Tensor:
        """``softmax(q k^T * modulation + bias)`` ``(B*nW, heads, N, N)``."""
        # In-place ops are autograd-safe here: matmul does not save its output, mul_ saves only `modulation`.
        logits = torch.matmul(q, k.transpose(-2, -1)).mul_(modulation).add_(self.relative_position_bias())
        return logits.softmax(dim=-1)


class Mlp(nn.Module):
    """Two-layer MLP with GELU (channel-last)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(ops.linear_gelu(x, self.fc1))


class ReconstructionBlock(nn.Module):
    """Pre-norm transformer block around one of the two decoder attentions (channel-last in/out).

    Args:
        dim: Channels.
        num_heads: Attention heads.
        window_size: Attention window.
        sparse: :class:`SparseSamplingAttention` if True, else :class:`LocalReconstruction`.
        mlp_ratio: MLP hidden expansion.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, sparse: bool, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        attn_cls = SparseSamplingAttention if sparse else LocalReconstruction
        self.attn = attn_cls(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), guide)
        return x + self.mlp(self.norm2(x))


class ReconstructionLayer(nn.ModuleList):
    """Decoder stage: alternating SSA (even index) and local reconstruction (odd index) blocks.

    The ranking guides (SSA constraint, LR modulation) depend only on the uncertainty features, so each is
    computed once per stage instead of once per block.
    """

    def __init__(self, depth: int, dim: int, num_heads: int, window_size: int):
        super().__init__(ReconstructionBlock(dim, num_heads, window_size, sparse=i % 2 == 0) for i in range(depth))
        if depth > 1 and dim % window_size:
            raise ValueError(f'decoder channels {dim} must be a multiple of the window size {window_size}')
        self.window_size = window_size

    def forward(self, x: Tensor, var: Tensor) -> Tensor:
        """Args: ``x`` channel-first ``(B, C, H, W)``; ``var`` uncertainty features ``(B, C, H, W)``.

        Returns the channel-first output ``(B, C, H, W)``.
        """
        constraint = udr.ssa_constraint(var)
        modulation = None
        if len(self) > 1:
            modulation = udr.lr_modulation(var, self.window_size, self[1].attn.scale)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        for i, block in enumerate(self):
            x = block(x, constraint if i % 2 == 0 else modulation)
        return x.permute(0, 3, 1, 2)


class UncertaintyHead(nn.Module):
    """Per-scale uncertainty head: ``elu(conv2(elu(conv1(x))))``; ``features`` is the inner ``elu(conv1(x))``,
    which guides the reconstruction attentions of the same scale."""

    def __init__(self, dim: int, out_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, out_channels, 3, padding=1)

    def features(self, x: Tensor) -> Tensor:
        """The ranking guide ``elu(conv1(x))``; float32 under autocast (half-precision ELU values tie near -1)."""
        return float32_island(lambda t: F.elu(self.conv1(t)), x)

    def forward(self, features: Tensor) -> Tensor:
        """Maps :meth:`features` output to the uncertainty map ``(B, out_channels, H, W)``."""
        return F.elu(self.conv2(features))


class SkipFusion(nn.Module):
    """Decoder skip fusion: ``project(channel_attn(cat(upsampled, skip)))`` from ``2*dim`` to ``dim`` channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.channel_attn = ChannelAttention(dim * 2, reduction=4)
        self.project = nn.Conv2d(dim * 2, dim, 1, bias=False)

    def forward(self, up: Tensor, skip: Tensor) -> Tensor:
        return self.project(self.channel_attn(torch.cat([up, skip], dim=1)))


# --------------------------------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------------------------------
class RefineBlock(nn.Module):
    """Residual channel-attention block: ``x + CA(conv2(gelu(conv1(x))))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.channel_attn = ChannelAttention(dim, reduction=4, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.gelu(self.conv1(x)))
        return torch.addcmul(x, y, self.channel_attn.gate(y))  # x + y * gate, one pass


class RefineStage(nn.Module):
    """One refinement stage at full resolution.

    ``x + gate(enc + dec)`` (encoder/decoder features of one scale, projected to ``dim`` channels and upsampled
    bilinearly when ``scale > 1``), then ``blocks`` residual CA blocks and a 3x3 conv, plus the identity.

    Args:
        dim: Channels of the refined features (the network's first width).
        skip_dim: Channels of this scale's encoder/decoder features.
        scale: Upsampling factor of this scale (1, 2, 4 or 8).
        num_blocks: Residual channel-attention blocks.
    """

    def __init__(self, dim: int, skip_dim: int, scale: int, num_blocks: int = 6):
        super().__init__()
        self.scale = scale
        if scale > 1:
            self.enc_proj = nn.Conv2d(skip_dim, dim, 1, bias=False)
            self.dec_proj = nn.Conv2d(skip_dim, dim, 1, bias=False)
        self.gate = nn.Sequential(
            ChannelAttention(dim, reduction=16),
            PixelAttention(dim, reduction=16),
            ChannelAttention(dim, reduction=16),
            PixelAttention(dim, reduction=16),
        )
        self.blocks = nn.Sequential(*[RefineBlock(dim) for _ in range(num_blocks)])
        self.tail = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def forward(self, x: Tensor, enc: Tensor, dec: Tensor) -> Tensor:
        if self.scale > 1:
            # 1x1 conv and bilinear upsampling commute (both linear, no bias): project at low resolution first.
            skip = self.enc_proj(enc) + self.dec_proj(dec)  # (B, dim, H/s, W/s)
            skip = F.interpolate(skip, scale_factor=self.scale, mode='bilinear', align_corners=False)
        else:
            skip = enc + dec
        x = x + self.gate(skip)
        return x + self.tail(self.blocks(x))


class Refinement(nn.Module):
    """Four refinement stages fusing the encoder and decoder features of each scale, coarse to fine order
    (full, 1/2, 1/4, 1/8)."""

    def __init__(self, dims: list[int], num_blocks: int = 6):
        super().__init__()
        self.stages = nn.ModuleList(RefineStage(dims[0], dims[i], 2**i, num_blocks) for i in range(4))

    def forward(self, x: Tensor, encoder_feats: list[Tensor], decoder_feats: list[Tensor]) -> Tensor:
        """``encoder_feats`` / ``decoder_feats``: per scale, index 0 = full resolution."""
        for stage, enc, dec in zip(self.stages, encoder_feats, decoder_feats):
            x = stage(x, enc, dec)
        return x
