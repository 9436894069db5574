"""MPRNet, the authors' class from spandrel (optional extra ``rivals``), see ``spandrel_rival``."""

from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY

from .spandrel_rival import SpandrelRival

__all__ = ['MPRNet']


@ARCH_REGISTRY.register()
class MPRNet(SpandrelRival):
    """MPRNet (Zamir et al., CVPR 2021), deraining variant, swz30/MPRNet ``Deraining/MPRNet.py``.

    Keyword arguments as the authors' (``in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, num_cab,
    kernel_size, reduction, bias``; deraining defaults n_feat 40, scale_unetfeats 20, scale_orsnetfeats 16,
    3.6 M parameters). Returns the final (third) stage only. Stage 1 works on quarters of the image with two 2x
    down-samplings: inputs are padded to a multiple of 8, as the authors' test script does.
    """

    impl = ('spandrel_extra_arches.architectures.MPRNet.__arch.MPRNet', 'MPRNet')
    distribution = 'spandrel-extra-arches'
    multiple = 8
