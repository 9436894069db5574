"""Uformer, the authors' class from spandrel (optional extra ``rivals``), see ``spandrel_rival``."""

from __future__ import annotations

import math

from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from .fixed_size_crops import crop_from_square, expand_to_square
from .spandrel_rival import SpandrelRival

__all__ = ['Uformer', 'PARAMS_DEFAULT', 'SQUARE_FACTOR']

#: Parameters of Uformer-B, the paper's main configuration (``tests`` recompute it).
PARAMS_DEFAULT = 50_880_946
#: The authors' test scripts centre each image on a zero square whose side is a multiple of this.
SQUARE_FACTOR = 128

#: The scale (as a power of 2) of each of the authors' nine layers.
_LAYER_SCALES = {
    'encoderlayer_0': 0,
    'encoderlayer_1': 1,
    'encoderlayer_2': 2,
    'encoderlayer_3': 3,
    'conv': 4,
    'decoderlayer_0': 3,
    'decoderlayer_1': 2,
    'decoderlayer_2': 1,
    'decoderlayer_3': 0,
}


@ARCH_REGISTRY.register()
class Uformer(SpandrelRival):
    """Uformer (Wang et al., CVPR 2022), ZhendongWang6/Uformer ``model.Uformer``; licence: see the authors'.

    Keyword arguments as the authors' (``img_size, in_chans, dd_in, embed_dim, depths, num_heads, win_size,
    mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, patch_norm, use_checkpoint,
    token_projection, token_mlp, shift_flag, modulator, cross_modulator``); spandrel's copy takes them by keyword
    only and refuses unknown ones (the authors' ``**kwargs`` swallowed them silently). State-dict keys are the
    authors', including the ``relative_position_index`` buffers. The authors' ``get_arch`` configurations (all
    ``win_size=8, token_projection='linear', token_mlp='leff', modulator=True``, ``img_size`` = the training patch
    side): Uformer-T (``embed_dim=16``) 5,291,853 parameters, Uformer-S (``embed_dim=32``) 20,751,197, Uformer-B
    (``embed_dim=32, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1]``) 50,880,946.

    Any ``H x W``: an ``img_size x img_size`` input (the training patches) goes to the authors' forward directly.
    Any other size as the authors' test scripts (``expand2square`` in ``test/test_*.py``): centred on a zero square
    whose side is the smallest multiple of 128 holding it (a larger multiple where this configuration's windows need
    one: :attr:`square_multiple`), restored whole, and the centred region cut back out. Unlike the scripts the output
    is not clamped to ``[0, 1]``.
    """

    impl = ('spandrel.architectures.Uformer.__arch.Uformer', 'Uformer')
    distribution = 'spandrel'
    multiple = 1

    @property
    def square_multiple(self) -> int:
        """Side multiple of the zero square: 128 (the authors'), or a multiple of it where a layer's windows
        (``win_size`` as built, clamped at small scales) times its scale do not divide 128."""
        factor = SQUARE_FACTOR
        for name, scale in _LAYER_SCALES.items():
            for block in getattr(self, name).blocks:
                factor = math.lcm(factor, block.win_size * 2**scale)
        return factor

    def forward(self, x: Tensor) -> Tensor:
        """Restore ``x`` (B, C, H, W) of any H x W; returns one image of the input's size."""
        h, w = x.shape[-2:]
        if h == w == self.reso:
            return super().forward(x)
        square, offset = expand_to_square(x, self.square_multiple)
        return crop_from_square(super().forward(square), offset, (h, w))
