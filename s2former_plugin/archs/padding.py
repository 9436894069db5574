"""Padding an image batch to a multiple of a network's stride, the same way in eager mode and in an ONNX export.

S2Former and the rival derainers pad their input at the bottom and right (reflection, as the authors' test scripts
do; replication where a side is shorter than its padding) and crop the output back. Under a tracer (ONNX export)
the padding is computed from the traced sizes, so one exported graph pads every input size as eager mode does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['pad_to_multiple']


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad ``x`` ``(B, C, H, W)`` at the bottom and right so that ``H`` and ``W`` are multiples of ``multiple``.

    Reflection where both paddings are shorter than their sides (reflection needs more pixels than it mirrors), else
    replication; a no-op when the size already fits.
    """
    if torch.jit.is_tracing():
        return _traced_pad_to_multiple(x, multiple)
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _traced_pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """:func:`pad_to_multiple` for a tracer, where ``H`` and ``W`` are traced 0-dim tensors: the same rows and
    columns gathered by index, so the graph follows the input size instead of baking in the traced one."""
    h, w = torch.as_tensor(x.shape[-2]), torch.as_tensor(x.shape[-1])
    reflect = (-h % multiple < h) & (-w % multiple < w)

    def index(n: Tensor) -> Tensor:
        i = torch.arange(n + -n % multiple, device=x.device)
        return torch.where(i < n, i, torch.where(reflect, 2 * (n - 1) - i, n - 1))

    return x.index_select(2, index(h)).index_select(3, index(w))
