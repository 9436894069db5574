"""NAFNet, the authors' class from spandrel (optional extra ``rivals``), see ``spandrel_rival``."""

from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY

from .spandrel_rival import SpandrelRival

__all__ = ['NAFNet']


@ARCH_REGISTRY.register()
class NAFNet(SpandrelRival):
    """NAFNet (Chen et al., ECCV 2022), megvii-research/NAFNet ``NAFNet_arch.NAFNet``.

    Keyword arguments as the authors' (``img_channel, width, middle_blk_num, enc_blk_nums, dec_blk_nums``). The
    authors' class pads to its multiple (``2 ** len(enc_blk_nums)``, zeros) and crops back itself; that is kept,
    so outputs equal the authors' at every size.
    """

    impl = ('spandrel.architectures.NAFNet.__arch.NAFNet_arch', 'NAFNet')
    distribution = 'spandrel'
    multiple = 1
