"""UDR-S2Former network (ICCV 2023), registered in BasicSR's ``ARCH_REGISTRY`` and mmengine's ``MODELS``.

YAML usage::

    network_g:
      type: S2Former
      preset: small        # or 'paper' (the default); explicit kwargs override the preset's values

Data path: pad to a multiple of :attr:`S2Former.pad_multiple` -> embed -> 4 encoder stages (ConvBlocks, stride-2
convs) -> bottleneck transformer at 1/16 -> 4 decoder stages (transposed conv, skip fusion, uncertainty head,
SSA/LR reconstruction blocks) -> refinement -> output conv + input -> crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from mmengine.registry import MODELS
from torch import Tensor, nn

from .padding import pad_to_multiple
from .s2former_blocks import (
    BottleneckBlock,
    ConvBlock,
    ReconstructionLayer,
    Refinement,
    SkipFusion,
    UncertaintyHead,
)
from .s2former_keys import official_key_to_ours

__all__ = ['S2Former', 'PRESETS', 'multi_scale_inputs']

#: Named configurations. ``paper``: the published model (the official ``Transformer`` defaults, 8,525,361
#: parameters, the released checkpoints). ``small``: a 4-level net of the same structure with narrow widths and
#: one or two blocks per stage, for tests and quick experiments (the parity fixture's configuration).
PRESETS: dict[str, dict[str, Any]] = {
    'paper': dict(
        in_channels=3,
        out_channels=3,
        dims=(16, 32, 64, 128, 256),
        num_conv_blocks=(4, 6, 7, 8),
        num_bottleneck_blocks=8,
        num_reconstruction_blocks=(3, 6, 7, 8),
        num_heads=(1, 2, 4, 8, 16),
        window_size=8,
        expand_ratio=2,
    ),
    'small': dict(
        dims=(16, 16, 32, 32, 64),
        num_conv_blocks=(1, 1, 1, 1),
        num_bottleneck_blocks=2,
        num_reconstruction_blocks=(2, 2, 2, 2),
    ),
}


def _per_level(value: int | float | Sequence, n: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise ValueError(f'{name} needs {n} values, got {len(values)}')
    return values


def _convert_official_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: rename official UDR-S2Former keys in place, so official checkpoints load."""
    if prefix + 'embed.down.0.weight' not in state_dict:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + official_key_to_ours(key[len(prefix) :])] = state_dict.pop(key)


def multi_scale_inputs(x: Tensor) -> list[Tensor]:
    """The paper's multi-scale inputs: the (padded) rainy image at full, 1/2, 1/4 and 1/8 scale (bicubic), to which
    each decoder scale's image head adds its residual (the side outputs of ``forward(x, return_all=True)``)."""
    return [x if i == 0 else F.interpolate(x, scale_factor=0.5**i, mode='bicubic') for i in range(4)]


@ARCH_REGISTRY.register()
@MODELS.register_module()
class S2Former(nn.Module):
    """UDR-S2Former: sparse sampling transformer with uncertainty-driven ranking.

    Any input size and batch is accepted: the input is padded once (reflect, or replicate where the image is
    too small to reflect) to a multiple of :attr:`pad_multiple` and every output is cropped back, so on sizes the
    official code accepts (multiples of 64 for the default windows) nothing is padded and the outputs equal the
    official ones. Both this class's state dicts and the official ones (``udrs2former_*.pth``) load with
    ``load_state_dict(strict=True)``; official keys are renamed by :mod:`s2former_plugin.official`.

    Args:
        preset: ``'paper'`` (default) or ``'small'``, see :data:`PRESETS`; the keyword arguments below that are
            given (not None) override the preset's values.
        in_channels: Input image channels.
        out_channels: Output image (and uncertainty map) channels.
        dims: Widths of the four scales (full, 1/2, 1/4, 1/8) and the 1/16 bottleneck.
        num_conv_blocks: ConvBlocks per encoder scale.
        num_bottleneck_blocks: Transformer blocks in the bottleneck.
        num_reconstruction_blocks: Decoder blocks per scale, alternating sparse sampling attention and local
            reconstruction.
        num_heads: Attention heads per scale (four decoder scales, then the bottleneck).
        window_size: Attention window, one for all decoder scales or one per scale.
        expand_ratio: ConvBlock hidden expansion, one value or one per encoder scale (not 1).
    """

    def __init__(
        self,
        preset: str | None = None,
        *,
        in_channels: int | None = None,
        out_channels: int | None = None,
        dims: Sequence[int] | None = None,
        num_conv_blocks: Sequence[int] | None = None,
        num_bottleneck_blocks: int | None = None,
        num_reconstruction_blocks: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        window_size: int | Sequence[int] | None = None,
        expand_ratio: float | Sequence[float] | None = None,
    ):
        super().__init__()
        if preset is not None and preset not in PRESETS:
            raise ValueError(f'unknown S2Former preset {preset!r}; choose from {sorted(PRESETS)}')
        cfg = dict(PRESETS['paper'])
        cfg.update(PRESETS[preset or 'paper'])
        given = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            dims=dims,
            num_conv_blocks=num_conv_blocks,
            num_bottleneck_blocks=num_bottleneck_blocks,
            num_reconstruction_blocks=num_reconstruction_blocks,
            num_heads=num_heads,
            window_size=window_size,
            expand_ratio=expand_ratio,
        )
        cfg.update({k: v for k, v in given.items() if v is not None})
        dims = _per_level(cfg['dims'], 5, 'dims')
        heads = _per_level(cfg['num_heads'], 5, 'num_heads')
        windows = _per_level(cfg['window_size'], 4, 'window_size')
        ratios = _per_level(cfg['expand_ratio'], 4, 'expand_ratio')
        n_conv = _per_level(cfg['num_conv_blocks'], 4, 'num_conv_blocks')
        n_rec = _per_level(cfg['num_reconstruction_blocks'], 4, 'num_reconstruction_blocks')
        if any(r == 1 for r in ratios):
            raise ValueError('expand_ratio 1 is not supported (the official block changes structure there)')
        if dims[0] < 16:
            raise ValueError('dims[0] must be at least 16 (the refinement gates reduce channels by 16)')
        self.config = dict(
            in_channels=cfg['in_channels'],
            out_channels=cfg['out_channels'],
            dims=dims,
            num_conv_blocks=n_conv,
            num_bottleneck_blocks=cfg['num_bottleneck_blocks'],
            num_reconstruction_blocks=n_rec,
            num_heads=heads,
            window_size=windows,
            expand_ratio=ratios,
        )
        in_ch, out_ch = cfg['in_channels'], cfg['out_channels']
        #: Input sides are padded to a multiple of this: 16 for the four stride-2 stages, and scale i (downsampled
        #: 2**i times) must hold whole windows.
        self.pad_multiple = math.lcm(16, *(2**i * ws for i, ws in enumerate(windows)))

        self.embed = nn.Conv2d(in_ch, dims[0], 3, padding=1, bias=False)
        self.encoders = nn.ModuleList(
            nn.Sequential(*[ConvBlock(dims[i], ratios[i]) for _ in range(n_conv[i])]) for i in range(4)
        )
        self.downs = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1, bias=False) for i in range(4))
        self.bottleneck = nn.Sequential(
            *[BottleneckBlock(dims[4], heads[4]) for _ in range(cfg['num_bottleneck_blocks'])]
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(dims[i + 1], dims[i], 4, 2, 1) for i in range(4))
        self.skip_fusions = nn.ModuleList(SkipFusion(dims[i]) for i in range(4))
        self.uncertainty_heads = nn.ModuleList(UncertaintyHead(dims[i], out_ch) for i in range(4))
        self.decoders = nn.ModuleList(ReconstructionLayer(n_rec[i], dims[i], heads[i], windows[i]) for i in range(4))
        self.image_heads = nn.ModuleList(nn.Conv2d(dims[i], out_ch, 3, padding=1) for i in range(4))
        self.refinement = Refinement(dims)
        self.final_image_head = nn.Conv2d(dims[0], out_ch, 3, padding=1)
        self.final_uncertainty_head = UncertaintyHead(dims[0], out_ch)
        self.register_load_state_dict_pre_hook(_convert_official_keys)

    def heads_without_gradient(self, side_outputs: bool, uncertainties: bool) -> list[str]:
        """Names of the submodules whose parameters no gradient reaches when the training loss reads only some
        outputs of ``forward(x, return_all=True)``.

        The uncertainty heads feed the decoder only through the top-k rankings (discrete, no gradient), so without
        a loss on the uncertainty maps they get none; the side image heads only feed the side outputs.
        Distributed training must freeze these (DDP waits for every trainable parameter's gradient).

        Args:
            side_outputs: Whether the loss reads the four side outputs (not only the final image).
            uncertainties: Whether the loss reads the uncertainty maps.
        """
        names = [] if side_outputs or uncertainties else ['image_heads']
        return names if uncertainties else [*names, 'uncertainty_heads', 'final_uncertainty_head']

    def pad(self, x: Tensor) -> Tensor:
        """Pad ``(B, C, H, W)`` at the bottom/right to multiples of :attr:`pad_multiple` (no-op if already)."""
        return pad_to_multiple(x, self.pad_multiple)

    def forward(self, x: Tensor, return_all: bool = False) -> Tensor | tuple[list[Tensor], list[Tensor]]:
        """Derain ``x`` ``(B, in_channels, H, W)``, any ``H, W >= 1``.

        Args:
            x: Rainy images, typically in [0, 1].
            return_all: Also return the multi-scale outputs and the uncertainty maps.

        Returns:
            The derained image ``(B, out_channels, H, W)``; with ``return_all``, ``(outputs, uncertainties)``:
            two lists in the official order [final, full scale, 1/2, 1/4, 1/8], scale ``s`` cropped to
            ``ceil(H / s) x ceil(W / s)``.
        """
        h, w = x.shape[-2:]
        # Channels-last (NHWC) memory: 2-4x faster convolutions on CPU, and free permutes to the channel-last
        # layout of the decoder blocks. Shapes and results are unchanged.
        x = self.pad(x).contiguous(memory_format=torch.channels_last)

        feat = self.embed(x)  # (B, d0, H, W)
        skips = []
        for i in range(4):
            feat = self.encoders[i](feat)  # (B, d_i, H/2^i, W/2^i)
            skips.append(feat)
            feat = self.downs[i](feat)
        feat = self.bottleneck(feat)  # (B, d4, H/16, W/16)

        decoded: list[Tensor] = [x] * 4
        outputs: list[Tensor] = [x] * 4
        uncertainties: list[Tensor] = [x] * 4
        inputs = multi_scale_inputs(x) if return_all else []
        for i in (3, 2, 1, 0):
            fused = self.skip_fusions[i](self.ups[i](feat), skips[i])  # (B, d_i, H/2^i, W/2^i)
            guide = self.uncertainty_heads[i].features(fused)
            feat = decoded[i] = self.decoders[i](fused, guide)
            if return_all:
                outputs[i] = self.image_heads[i](fused) + inputs[i]  # the scale's image: a residual on its input
                uncertainties[i] = self.uncertainty_heads[i](guide)

        refined = self.refinement(decoded[0], skips, decoded)  # (B, d0, H, W)
        out = self.final_image_head(refined) + x
        if not return_all:
            return out[..., :h, :w].contiguous()
        uncertainties.insert(0, self.final_uncertainty_head(self.final_uncertainty_head.features(refined)))
        outputs.insert(0, out)
        # ceil(h / 2**i) written without negative floor division (a traced // truncates in ONNX)
        crop = [(h, w)] + [((h + 2**i - 1) // 2**i, (w + 2**i - 1) // 2**i) for i in range(4)]
        outputs = [o[..., :ch, :cw].contiguous() for o, (ch, cw) in zip(outputs, crop)]
        uncertainties = [u[..., :ch, :cw].contiguous() for u, (ch, cw) in zip(uncertainties, crop)]
        return outputs, uncertainties
