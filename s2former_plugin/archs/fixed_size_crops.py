"""Running a network built for one input size on images of any size, the way its authors' test scripts do.

Two procedures, each exactly as its authors compute it:

* :func:`blend_fixed_crops` (IDT's ``test_full_size.py``): the image is cut into ``crop x crop`` windows that
  overlap by at least ``overlap`` pixels (:func:`crop_starts`), each window is restored, and the results are merged
  with a weight that falls off with the distance from the window's centre (:func:`distance_weights`), normalised
  by the summed weights. The authors' script fails on a side no longer than one crop; here such a side is first
  padded at the bottom / right to the crop size (reflection, replication where the side is too short to reflect,
  as :mod:`.padding`) and the result cropped back.
* :func:`expand_to_square` / :func:`crop_from_square` (Uformer's ``test/test_*.py``, ``expand2square``): the image
  is centred on a zero square whose side is the smallest multiple of ``factor`` holding it, restored whole, and the
  centred region cut back out.

This is not :mod:`s2former_plugin.tiling` (raised-cosine ramps, other tile positions): these nets' published
figures come from these procedures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['crop_starts', 'distance_weights', 'blend_fixed_crops', 'expand_to_square', 'crop_from_square']


def crop_starts(size: int, crop: int, overlap: int) -> list[int]:
    """Start offsets of the crops along one axis of length ``size >= crop`` (IDT's ``splitimage``).

    The starts ``0, crop - overlap, 2 (crop - overlap), ...`` whose crop ends strictly inside the axis, then one
    crop aligned to the end (``size - crop``); ``[0]`` when ``size == crop``.
    """
    if not 0 <= overlap < crop:
        raise ValueError(f'crop overlap ({overlap}) must be in [0, crop size {crop})')
    if size < crop:
        raise ValueError(f'axis of {size} pixels is shorter than one crop ({crop}): pad it first')
    return [s for s in range(0, size, crop - overlap) if s + crop < size] + [size - crop]


def distance_weights(crop: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """IDT's merge weights ``1 / sqrt((h - crop/2)^2 + (w - crop/2)^2 + 1e-3)`` for a ``crop x crop`` window.

    Computed in float64 and rounded once to ``dtype`` (the authors evaluate each value in Python floats and store
    it in a float32 tensor).
    """
    i = torch.arange(crop, dtype=torch.float64) - crop / 2
    w = 1.0 / torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2 + 1e-3)
    return w.to(dtype=dtype, device=device)


def _pad_bottom_right(x: Tensor, height: int, width: int) -> Tensor:
    """``x`` padded at the bottom / right to ``height x width`` (reflection, else replication)."""
    h, w = x.shape[-2:]
    ph, pw = height - h, width - w
    if not (ph or pw):
        return x
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def blend_fixed_crops(fn: Callable[[Tensor], Tensor], x: Tensor, crop: int, overlap: int) -> Tensor:
    """Restore ``x`` ``(B, C, H, W)`` with ``fn`` (which takes ``(B, C, crop, crop)`` only) as IDT's full-size test.

    Crops are visited row by row (all starts along W for each start along H) and accumulated in ``x``'s dtype in
    that order, as the authors' ``mergeimage``. Returns ``(B, C_out, H, W)``.
    """
    h, w = x.shape[-2:]
    padded = _pad_bottom_right(x, max(h, crop), max(w, crop))
    ph, pw = padded.shape[-2:]
    weight = distance_weights(crop, x.dtype, x.device)
    merged = total = None
    for top in crop_starts(ph, crop, overlap):
        for left in crop_starts(pw, crop, overlap):
            out = fn(padded[..., top : top + crop, left : left + crop])
            if merged is None:
                merged = out.new_zeros(*out.shape[:2], ph, pw)
                total = out.new_zeros(*out.shape[:2], ph, pw)
            merged[..., top : top + crop, left : left + crop] += weight * out
            total[..., top : top + crop, left : left + crop] += weight
    return (merged / total)[..., :h, :w]


def expand_to_square(x: Tensor, factor: int) -> tuple[Tensor, tuple[int, int]]:
    """``x`` ``(B, C, H, W)`` centred on a zero square of side ``ceil(max(H, W) / factor) * factor`` (Uformer's
    ``expand2square``); returns the square and the ``(top, left)`` offset of the image in it."""
    h, w = x.shape[-2:]
    side = math.ceil(max(h, w) / factor) * factor
    top, left = (side - h) // 2, (side - w) // 2
    square = x.new_zeros(*x.shape[:2], side, side)
    square[..., top : top + h, left : left + w] = x
    return square, (top, left)


def crop_from_square(y: Tensor, offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """The ``size = (H, W)`` region at ``offset`` of ``y`` (what Uformer's scripts select with the square's mask)."""
    top, left = offset
    return y[..., top : top + size[0], left : left + size[1]]
