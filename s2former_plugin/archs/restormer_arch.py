"""Restormer, the authors' class from spandrel (optional extra ``rivals``), see ``spandrel_rival``."""

from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY

from .spandrel_rival import SpandrelRival

__all__ = ['Restormer']


@ARCH_REGISTRY.register()
class Restormer(SpandrelRival):
    """Restormer (Zamir et al., CVPR 2022), swz30/Restormer ``restormer_arch.Restormer``; licence: see the authors'.

    Keyword arguments as the authors' (``inp_channels, out_channels, dim, num_blocks, num_refinement_blocks,
    heads, ffn_expansion_factor, bias, LayerNorm_type, dual_pixel_task``); deraining uses the defaults
    (26.1 M parameters). Three 2x down-samplings: inputs are padded to a multiple of 8.
    """

    impl = ('spandrel_extra_arches.architectures.Restormer.__arch.restormer_arch', 'Restormer')
    distribution = 'spandrel-extra-arches'
    multiple = 8
