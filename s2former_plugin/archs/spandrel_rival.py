"""The base of the rival derainers whose classes come from ``spandrel`` (Restormer, MPRNet, NAFNet, Uformer).

The networks are not re-implemented here: each registered class is, once built, a subclass of the maintained copy
of the authors' class in ``spandrel`` / ``spandrel-extra-arches`` (the optional extra
``pip install "s2former_plugin[rivals]"``). So it takes the authors' keyword arguments, its state dict has the
authors' key names (released checkpoints load with ``strict=True``), and its maths is theirs. What this module
adds, in :meth:`SpandrelRival.forward`:

* any input size: the input is padded at the bottom and right to the net's multiple with reflection (as the
  authors' deraining test scripts do) and the output cropped back; NAFNet pads itself (zeros, the authors' code);
* one output: MPRNet returns its final (third) stage only, so basicsr's ``SRModel``, whole-image validation,
  tiling and the benchmark treat every rival like any single-output net.

YAML usage (the authors' keyword arguments)::

    network_g: {type: Restormer, dim: 48, num_blocks: [4, 6, 6, 8], num_refinement_blocks: 4,
                heads: [1, 2, 4, 8], ffn_expansion_factor: 2.66, bias: false, LayerNorm_type: WithBias}

``spandrel`` is imported when a rival is first built, not when this module is imported, so the plugin works
without the extra; asking for a rival without it raises :class:`MissingExtraError` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from torch import Tensor, nn

from ..errors import S2FormerError
from .padding import pad_to_multiple

__all__ = ['MissingExtraError', 'SpandrelRival', 'RIVALS']

EXTRA = 's2former_plugin[rivals]'


class MissingExtraError(S2FormerError, ImportError):
    """A rival was asked for without the optional ``rivals`` extra installed (one-line message)."""


class SpandrelRival(nn.Module):
    """Base of the registered rivals: builds the authors' class lazily and makes its forward size-agnostic.

    Instantiating ``Restormer(**kwargs)`` creates (once) a class ``Restormer`` deriving from both the registered
    class and spandrel's ``Restormer``, and returns an instance of it, initialised by spandrel's ``__init__``.
    """

    #: (module, class name) of the authors' class in spandrel / spandrel-extra-arches.
    impl: ClassVar[tuple[str, str]]
    #: The pip distribution that holds :attr:`impl` (named in the missing-extra message).
    distribution: ClassVar[str]
    #: Inputs are padded to a multiple of this (1: the class accepts any size itself).
    multiple: ClassVar[int] = 1
    _concrete: ClassVar[dict[type, type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'impl' in cls.__dict__:  # a registered rival (the concrete classes built from it define no impl)
            RIVALS[cls.__name__] = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> SpandrelRival:
        if cls not in SpandrelRival._concrete.values():
            cls = SpandrelRival._concrete.get(cls) or SpandrelRival._concrete.setdefault(cls, _concrete_class(cls))
        return super().__new__(cls)

    def forward(self, x: Tensor) -> Tensor:
        """Derain ``x`` (B, 3, H, W) of any H x W; returns the final output at the input's size."""
        h, w = x.shape[-2:]
        out = super().forward(pad_to_multiple(x, self.multiple))
        if isinstance(out, (tuple, list)):  # MPRNet: (stage 3 = final, stage 2, stage 1)
            out = out[0]
        return out[..., :h, :w]


def _concrete_class(cls: type) -> type:
    """``cls`` combined with the authors' class it names (imported now: needs the extra)."""
    module, name = cls.impl
    try:
        base = getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise MissingExtraError(
            f'{cls.__name__} needs the optional extra: pip install "{EXTRA}" ({cls.distribution} is missing: {err})'
        ) from None
    return type(cls.__name__, (cls, base), {})  # __module__: this module's (the caller's); __qualname__: the name


#: The registered spandrel-backed rivals by name (filled as their ``*_arch`` modules are imported).
RIVALS: dict[str, type[SpandrelRival]] = {}
