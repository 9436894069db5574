"""Precision guards of S2Former under autocast: the numerically sensitive parts run in float32.

Not speed tricks (they hold with fast and plain ops alike). Under float16/bfloat16 autocast:

* the uncertainty rankings: in half precision, ELU values near -1 tie, the top-k threshold then keeps every position
  and the damping silently switches off; the ``v @ v^T`` affinity can overflow float16;
* the normalisation statistics: a float16 variance overflows for ``|x| > 256``;
* the local reconstruction's unscaled logits (the query scaling is folded into the modulation) can overflow float16.

One helper, :func:`float32_island`, runs such a part with autocast off and its 16-bit tensor inputs in float32
(float64 stays float64); without autocast it calls the part as it is, so float32/float64 runs are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ['autocast_on', 'float32_island', 'float32_under_autocast', 'to_float32']

_R = TypeVar('_R')


def autocast_on(x: Tensor) -> bool:
    """Whether autocast (to float16/bfloat16) is active for ``x``'s device."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (e.g. meta)
        return False


def float32_under_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off while active for ``x``'s device (a no-op otherwise)."""
    return torch.autocast(x.device.type, enabled=False) if autocast_on(x) else contextlib.nullcontext()


def to_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16/bfloat16, else ``x`` itself (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def float32_island(part: Callable[..., _R], *tensors: Tensor) -> _R:
    """``part(*tensors)``; under autocast for ``tensors[0]``'s device, with autocast off and the 16-bit inputs cast
    to float32 (the result then is float32: callers that feed a 16-bit op cast it themselves)."""
    if not autocast_on(tensors[0]):
        return part(*tensors)
    with torch.autocast(tensors[0].device.type, enabled=False):
        return part(*(to_float32(t) for t in tensors))
