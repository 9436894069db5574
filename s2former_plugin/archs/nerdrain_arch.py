"""NeRD-Rain (Chen et al., "Bidirectional Multi-Scale Implicit Neural Representations for Image Deraining", CVPR 2024).

Written from the authors' description and code (cschenxiang/NeRD-Rain, ``model.py`` with ``mlp.py``, class
``MultiscaleNet``). The parts (:mod:`.nerdrain_blocks`) carry the paper's names; the state-dict keys are the
authors' (their released checkpoints load with ``strict=True``), which is why the attributes keep their names
(``INR``, ``BF1``, ``upsmall2mid1``, ``encoder_level1_max2``, ...).

The network works on three scales of the rainy image (1/4, 1/2 and full size, nearest-neighbour down-sampling as in
the authors' code), each with Restormer-style transformer U-Nets (channel self-attention + gated feed-forward):

- **Intra-scale implicit neural representation (INR)**: at the two coarse scales the latent features of the first
  encoder go up to the scale's resolution and a coordinate MLP (LIIF-style: the 3x3 neighbourhood of features, the
  positional encoding of the pixel coordinates relative to the feature's, the cell size) predicts a residual image;
  the coarser scale's INR image, up-sampled, is added to the next finer scale's input (the closed loop).
- **Inter-scale bidirectional feedback**: the full scale runs three encoder passes (two full U-Nets and a third
  encoder), the half scale two; the bidirectional feedback propagation units (BFPU, the authors' ``Fusion``: gated
  cross-attention of two latents) pass the finer scale's latents to the coarser scale (fine-to-coarse), and the
  decoders' features go coarse-to-fine into the next scale's last decoder.

Outputs (``return_all=True``), the authors' order: ``[full, 1/2, 1/4, 1/2 INR image, 1/2 input / 2, 1/4 INR image,
1/4 input]``; their ``train.py`` trains on the first four and the sixth (:mod:`..losses.nerdrain_loss`).

The network itself needs H and W multiples of 16 (1/4 scale, then two 2x down-samplings). ``forward(x)`` returns
the final image for any ``H x W`` the way the authors' ``test.py`` computes it: ``win_size`` (256) windows on a
grid, the last row and column of windows shifted to end at the border and only their new pixels kept, all windows
run as one batch. A side shorter than the window is one window of that side, padded at the bottom/right to a
multiple of 16 (reflection; replication where too short) and cropped back, which their script cannot do (it fails
there). The output is not clamped (training needs the raw output; clamp when writing images).

YAML usage (the authors' keyword arguments; ``win_size`` is their ``test.py`` option)::

    network_g: {type: NeRDRain, dim: 48, num_blocks: [2, 3, 3], heads: [1, 2, 4], ffn_expansion_factor: 2.66,
                bias: false, LayerNorm_type: WithBias, win_size: 256}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from .nerdrain_blocks import FeedbackPropagationUnit, ImplicitNeuralRepresentation, TransformerBlock
from .padding import pad_to_multiple
from .restormer_blocks import Downsample, OverlapPatchEmbed, Upsample

__all__ = ['NeRDRain', 'MULTIPLE', 'PARAMS_DEFAULT', 'NUM_OUTPUTS']

#: The network's own input sizes are multiples of this (1/4 scale, then two 2x down-samplings).
MULTIPLE = 16
#: Parameters of the paper's configuration (the defaults; ``tests`` recompute it).
PARAMS_DEFAULT = 22_893_146
#: Length of the authors' output list.
NUM_OUTPUTS = 7
# ---- The network ----


def _half(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=0.5, mode='nearest')


def _double(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode='nearest')


@ARCH_REGISTRY.register()
class NeRDRain(nn.Module):
    """NeRD-Rain, the authors' ``MultiscaleNet`` (cschenxiang/NeRD-Rain); licence: see the authors'.

    The defaults are the paper's configuration: 22,893,146 parameters.

    Args:
        inp_channels: Input image channels.
        out_channels: Output image channels (the outputs add the input, so equal to ``inp_channels``; the INR
            predicts 3 channels, so both are 3).
        dim: Features at each scale's full resolution; its levels 2 and 3 have 2 and 4 times as many.
        num_blocks: Transformer blocks at levels 1-3 of every encoder and decoder.
        heads: Attention heads at levels 1-3.
        ffn_expansion_factor: Hidden width of the gated feed-forward, relative to its input.
        bias: Biases in the transformer blocks' convs, the 1x1 channel reductions and the output convs.
        LayerNorm_type: ``'WithBias'`` or ``'BiasFree'``.
        win_size: Window of the authors' test procedure (``forward`` without ``return_all``); a multiple of 16.

    Raises:
        ValueError: a configuration the network cannot run (one line naming the argument).
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (2, 3, 3),
        heads: Sequence[int] = (1, 2, 4),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = 'WithBias',  # the authors' keyword
        win_size: int = 256,
    ) -> None:
        super().__init__()
        _check_config(inp_channels, out_channels, dim, num_blocks, heads, LayerNorm_type, win_size)
        self.win_size = win_size
        with_bias = LayerNorm_type == 'WithBias'
        nb, hd = list(num_blocks), list(heads)
        d1, d2, d3 = dim, dim * 2, dim * 4

        def stage(level: int) -> nn.Sequential:
            width = (d1, d2, d3)[level]
            blocks = (
                TransformerBlock(width, hd[level], ffn_expansion_factor, bias, with_bias) for _ in range(nb[level])
            )
            return nn.Sequential(*blocks)

        def conv1x1(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)

        def conv3x3(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias)

        # The authors' registration order (it is the state-dict order). 1/4 scale: one U-Net.
        self.patch_embed_small = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1_small = stage(0)
        self.down1_2_small = Downsample(d1)
        self.encoder_level2_small = stage(1)
        self.down2_3_small = Downsample(d2)
        self.latent_small = stage(2)
        self.up3_2_small = Upsample(d3)
        self.reduce_chan_level2_small = conv1x1(d3, d2)
        self.decoder_level2_small = stage(1)
        self.up2_1_small = Upsample(d2)
        self.reduce_chan_level1_small = conv1x1(d2, d1)
        self.decoder_level1_small = stage(0)
        self.output_small = conv3x3(d1, out_channels)
        self.INR = ImplicitNeuralRepresentation(dim)
        # 1/2 scale: two passes (suffixes 1 and 2).
        self.patch_embed_mid = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1_mid1, self.encoder_level1_mid2 = stage(0), stage(0)
        self.down1_2_mid, self.down1_2_mid2 = Downsample(d1), Downsample(d1)
        self.encoder_level2_mid1, self.encoder_level2_mid2 = stage(1), stage(1)
        self.down2_3_mid, self.down2_3_mid2 = Downsample(d2), Downsample(d2)
        self.latent_mid1, self.latent_mid2 = stage(2), stage(2)
        self.up3_2_mid, self.up3_2_mid2 = Upsample(d3), Upsample(d3)
        self.reduce_chan_level2_mid1, self.reduce_chan_level2_mid2 = conv1x1(d3, d2), conv1x1(d3, d2)
        self.decoder_level2_mid1, self.decoder_level2_mid2 = stage(1), stage(1)
        self.up2_1_mid, self.up2_1_mid2 = Upsample(d2), Upsample(d2)
        self.reduce_chan_level1_mid1, self.reduce_chan_level1_mid2 = conv1x1(d2, d1), conv1x1(d2, d1)
        self.decoder_level1_mid1, self.decoder_level1_mid2 = stage(0), stage(0)
        self.output_mid = conv3x3(d1, out_channels)
        self.output_mid_context = conv3x3(d1, dim)
        self.INR2 = ImplicitNeuralRepresentation(dim)
        # Full scale: three passes (suffixes 1, 2, 3; the first pass's down/up-samplings have none).
        self.patch_embed_max = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1_max1, self.encoder_level1_max2, self.encoder_level1_max3 = stage(0), stage(0), stage(0)
        self.down1_2_max, self.down1_2_max2, self.down1_2_max3 = Downsample(d1), Downsample(d1), Downsample(d1)
        self.encoder_level2_max1, self.encoder_level2_max2, self.encoder_level2_max3 = stage(1), stage(1), stage(1)
        self.down2_3_max, self.down2_3_max2, self.down2_3_max3 = Downsample(d2), Downsample(d2), Downsample(d2)
        self.latent_max1, self.latent_max2, self.latent_max3 = stage(2), stage(2), stage(2)
        self.up3_2_max, self.up3_2_max2, self.up3_2_max3 = Upsample(d3), Upsample(d3), Upsample(d3)
        self.reduce_chan_level2_max1 = conv1x1(d3, d2)
        self.reduce_chan_level2_max2 = conv1x1(d3, d2)
        self.reduce_chan_level2_max3 = conv1x1(d3, d2)
        self.decoder_level2_max1, self.decoder_level2_max2, self.decoder_level2_max3 = stage(1), stage(1), stage(1)
        self.up2_1_max, self.up2_1_max2, self.up2_1_max3 = Upsample(d2), Upsample(d2), Upsample(d2)
        self.reduce_chan_level1_max1 = conv1x1(d2, d1)
        self.reduce_chan_level1_max2 = conv1x1(d2, d1)
        # Kept for the authors' keys; their forward uses reduce_chan_level1_max2 in the third pass too, so this
        # layer receives no gradient (DDP needs find_unused_parameters).
        self.reduce_chan_level1_max3 = conv1x1(d2, d1)
        self.decoder_level1_max1, self.decoder_level1_max2, self.decoder_level1_max3 = stage(0), stage(0), stage(0)
        self.output_max = conv3x3(d1, out_channels)
        self.output_max_context1 = conv3x3(d1, dim)
        self.output_max_context2 = conv3x3(d1, dim)
        # Inter-scale: feedback units on the latents, and the latents' up-sampling to the INR's resolution.
        self.BF1 = FeedbackPropagationUnit(d3)
        self.BF2 = FeedbackPropagationUnit(d3)
        self.BF3 = FeedbackPropagationUnit(d3)
        self.upsmall2mid1 = Upsample(d3)
        self.upsmall2mid2 = Upsample(d2)
        self.upmid2max1 = Upsample(d3)
        self.upmid2max2 = Upsample(d2)

    # ---- the authors' forward, in pieces ----

    def _encode(self, x: Tensor, scale: str, k: str, first: str = '') -> tuple[Tensor, Tensor, Tensor]:
        """Encoder pass ``k`` of ``scale``: features of levels 1, 2 and the latent (level 3).

        ``first`` is the suffix of the pass's down-samplings (the first pass's have none).
        """
        m = self._modules
        e1 = m[f'encoder_level1_{scale}{k}'](x)
        e2 = m[f'encoder_level2_{scale}{k}'](m[f'down1_2_{scale}{first}'](e1))
        return e1, e2, m[f'latent_{scale}{k}'](m[f'down2_3_{scale}{first}'](e2))

    def _decode_level2(self, up: Tensor, e2: Tensor, scale: str, k: str) -> Tensor:
        m = self._modules
        return m[f'decoder_level2_{scale}{k}'](m[f'reduce_chan_level2_{scale}{k}'](torch.cat([up, e2], 1)))

    def _decode(self, latent: Tensor, e1: Tensor, e2: Tensor, scale: str, k: str, first: str = '') -> Tensor:
        """Decoder pass ``k`` of ``scale`` from its latent, with the encoder's skips; level-1 features."""
        m = self._modules
        d2 = self._decode_level2(m[f'up3_2_{scale}{first}'](latent), e2, scale, k)
        reduce = m[f'reduce_chan_level1_{scale}{k}']
        return m[f'decoder_level1_{scale}{k}'](reduce(torch.cat([m[f'up2_1_{scale}{first}'](d2), e1], 1)))

    def multiscale_forward(self, x: Tensor) -> list[Tensor]:
        """The authors' forward: ``x`` (B, C, H, W) with H and W multiples of 16; their list of seven images."""
        x_mid, x_small = F.interpolate(x, scale_factor=0.5), F.interpolate(x, scale_factor=0.25)

        # 1/4 scale encoder; its INR image (coarse-to-fine) joins the 1/2 scale's input.
        s1, s2, s_lat = self._encode(self.patch_embed_small(x_small), 'small', '')
        small_inr = self.INR(self.upsmall2mid2(self.upsmall2mid1(s_lat))) + x_small
        mid_in = x_mid + _double(small_inr)

        # 1/2 scale, first encoder; its INR image joins the full scale's input.
        m1, m2, m_lat1 = self._encode(self.patch_embed_mid(mid_in), 'mid', '1')
        mid_inr = self.INR2(self.upmid2max2(self.upmid2max1(m_lat1))) + mid_in
        max_in = x + _double(mid_inr)

        # Full scale: U-Net, U-Net, encoder; the latents of consecutive passes fuse (BFPU) and go to the 1/2 scale.
        f1, f2, f_lat1 = self._encode(self.patch_embed_max(max_in), 'max', '1')
        feat = self._decode(f_lat1, f1, f2, 'max', '1')
        f1, f2, f_lat2 = self._encode(self.output_max_context1(feat), 'max', '2', first='2')
        feat = self._decode(f_lat2, f1, f2, 'max', '2', first='2')
        f1, f2, f_lat3 = self._encode(self.output_max_context2(feat), 'max', '3', first='3')
        feedback1 = _half(self.BF1(f_lat1, f_lat2))
        feedback2 = _half(self.BF2(f_lat2, f_lat3))

        # 1/2 scale: its first latent takes the full scale's feedback, U-Net, then a second encoder.
        feat = self._decode(m_lat1 + feedback1, m1, m2, 'mid', '1')
        m1, m2, m_lat2 = self._encode(self.output_mid_context(feat), 'mid', '2', first='2')
        feedback3 = _half(self.BF3(m_lat1, m_lat2))

        # Decoders, coarse to fine: each scale's level-1 features join the next finer scale's last decoder.
        small_feat = self._decode(s_lat + feedback3, s1, s2, 'small', '')
        small_out = self.output_small(small_feat) + x_small

        d2 = self._decode_level2(self.up3_2_mid2(m_lat2 + feedback2), m2, 'mid', '2')
        mid_feat = self.decoder_level1_mid2(self.reduce_chan_level1_mid2(torch.cat([self.up2_1_mid2(d2), m1], 1)))
        mid_feat = mid_feat + _double(small_feat)
        mid_out = self.output_mid(mid_feat) + x_mid

        d2 = self._decode_level2(self.up3_2_max3(f_lat3), f2, 'max', '3')
        reduced = self.reduce_chan_level1_max2(torch.cat([self.up2_1_max3(d2), f1], 1))  # the authors' max2, sic
        max_feat = self.decoder_level1_max3(reduced) + _double(mid_feat)
        max_out = self.output_max(max_feat) + x

        return [max_out, mid_out, small_out, mid_inr, mid_in / 2, small_inr, x_small]

    def forward(self, x: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
        """Derain ``x`` (B, C, H, W).

        Args:
            x: Rainy images.
            return_all: The authors' list of seven outputs (final image first; H and W must be multiples of 16,
                as in training). Otherwise the final image for any ``H x W``, by the authors' window procedure.

        Raises:
            ValueError: ``return_all`` with H or W not a multiple of 16.
        """
        if return_all:
            h, w = x.shape[-2:]
            if h % MULTIPLE or w % MULTIPLE:
                raise ValueError(f'NeRDRain: return_all needs H and W multiples of {MULTIPLE}, got {h}x{w}')
            return self.multiscale_forward(x)
        return self.windowed_forward(x)

    def windowed_forward(self, x: Tensor) -> Tensor:
        """The final image of any ``H x W`` as the authors' ``test.py`` computes it (see the module docstring)."""
        b, _, h, w = x.shape
        rows, cols = _window_spans(h, self.win_size), _window_spans(w, self.win_size)
        wh, ww = min(h, self.win_size), min(w, self.win_size)
        windows = torch.cat([x[..., r0 : r0 + wh, c0 : c0 + ww] for r0, _, _ in rows for c0, _, _ in cols], dim=0)
        restored = self.multiscale_forward(pad_to_multiple(windows, MULTIPLE))[0][..., :wh, :ww]
        if len(rows) == len(cols) == 1:
            return restored
        out = x.new_empty(b, restored.shape[1], h, w)
        tiles = iter(restored.split(b))
        for r0, rk, rn in rows:
            for c0, ck, cn in cols:
                out[..., r0 + rk : r0 + rk + rn, c0 + ck : c0 + ck + cn] = next(tiles)[..., rk : rk + rn, ck : ck + cn]
        return out


def _window_spans(size: int, win: int) -> list[tuple[int, int, int]]:
    """Windows along one side, as ``(start, first kept offset, kept length)``.

    The authors' ``window_partitionx``: windows at ``0, win, 2 win, ...`` kept whole, and where ``win`` does not
    divide the side, one more ending at the border of which only the pixels past the last whole window are kept.
    A side shorter than the window is one window of that side.
    """
    if size <= win:
        return [(0, 0, size)]
    n, rest = divmod(size, win)
    spans = [(i * win, 0, win) for i in range(n)]
    if rest:
        spans.append((size - win, win - rest, rest))
    return spans


def _check_config(
    inp_channels: int,
    out_channels: int,
    dim: int,
    num_blocks: Sequence[int],
    heads: Sequence[int],
    norm: str,
    win_size: int,
) -> None:
    """Refuse, in one line, what the authors' class would fail on later."""
    if norm not in ('WithBias', 'BiasFree'):
        raise ValueError(f"NeRDRain: LayerNorm_type must be 'WithBias' or 'BiasFree', got {norm!r}")
    if len(num_blocks) != 3 or len(heads) != 3:
        raise ValueError(f'NeRDRain: num_blocks and heads need 3 values (one per level), got {num_blocks}, {heads}')
    if not (inp_channels == out_channels == 3):
        raise ValueError(
            f'NeRDRain: inp_channels and out_channels must be 3 (the INR predicts RGB and the input is added), '
            f'got {inp_channels}, {out_channels}'
        )
    if dim < 2 or dim % 2:
        raise ValueError(f'NeRDRain: dim must be even and at least 2 (Downsample halves it), got {dim}')
    for width, head in ((dim, heads[0]), (dim * 2, heads[1]), (dim * 4, heads[2])):
        if head < 1 or width % head:
            raise ValueError(f'NeRDRain: heads {list(heads)} must divide the level widths {dim, dim * 2, dim * 4}')
    if any(n < 0 for n in num_blocks):
        raise ValueError(f'NeRDRain: num_blocks must be non-negative, got {list(num_blocks)}')
    if win_size < MULTIPLE or win_size % MULTIPLE:
        raise ValueError(f'NeRDRain: win_size must be a positive multiple of {MULTIPLE}, got {win_size}')
