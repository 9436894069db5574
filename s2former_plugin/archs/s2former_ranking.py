"""Uncertainty-driven ranking (UDR), the "UDR" of UDR-S2Former (Chen et al., ICCV 2023).

The paper's idea: the uncertainty the network predicts at each decoder scale marks where rain degrades the image,
and the decoder's two attentions should treat those positions differently. Rather than weighting by raw values,
UDR *ranks* positions by the uncertainty features ``var = elu(conv1(x))`` (``UncertaintyHead.features``,
``(B, C, H, W)``, the inner activation of the head that predicts the scale's uncertainty map): a top-k mask marks
the ``RANK_KEEP_RATIO`` (80 %) highest-ranked entries, and the mask re-weights the two attentions of each
reconstruction stage:

* sparse sampling attention (SSA), :func:`ssa_constraint`: per channel of ``var`` over the ``H*W`` map,
  features at positions outside the top 80 % are damped by ``SSA_DAMPING`` (x0.6) before the SSA predicts the
  offsets and scales of its key/value sampling grid;
* local reconstruction (LR), :func:`lr_modulation`: per window, the affinity ``v v^T`` of the uncertainty
  features ranks, for each query, the keys; the attention logits of keys outside the query's top 80 % are
  multiplied by ``LR_SHARPENING`` (x1.2).

The constants are the official code's (the released weights were trained with them). Both masks depend only on
``var``, so a decoder stage computes each once for all its blocks. The selection itself is
:func:`s2former_ops.topk_mask` (plain ``topk`` + scatter, or a faster threshold, behind the ops switch).
Under autocast the rankings run in float32 (:func:`precision.float32_island`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import s2former_ops as ops
from .precision import float32_island

__all__ = ['LR_SHARPENING', 'RANK_KEEP_RATIO', 'SSA_DAMPING', 'lr_modulation', 'ssa_constraint', 'topk_mask']

# Fraction of positions the uncertainty ranking keeps "in" (the official top-k uses k = int(0.8 * N)).
RANK_KEEP_RATIO = 0.8
# Sparse sampling attention: features at positions outside the top-k of the uncertainty map are scaled by this.
SSA_DAMPING = 0.6
# Local reconstruction: attention logits of key positions outside the per-query top-k are scaled by this.
LR_SHARPENING = 1.2


def topk_mask(scores: Tensor, keep_ratio: float = RANK_KEEP_RATIO) -> Tensor:
    """The ranking: a boolean mask of the ``int(keep_ratio * N)`` largest ``scores`` along the last dim ``N``."""
    return ops.topk_mask(scores, keep_ratio)


def ssa_constraint(var: Tensor) -> Tensor:
    """SSA's ranking constraint: 1 where ``var`` ranks in its channel's top-k over ``H*W``, ``SSA_DAMPING``
    elsewhere; ``(B, C, H, W)`` uncertainty features -> channel-last ``(B, H, W, C)`` (the SSA's layout)."""
    b, c, h, w = var.shape
    keep = topk_mask(var.reshape(b, c, h * w)).view(b, c, h, w)
    one = torch.ones((), dtype=var.dtype, device=var.device)
    return torch.where(keep, one, one * SSA_DAMPING).permute(0, 2, 3, 1)


def lr_modulation(var: Tensor, ws: int, scale: float = 1.0) -> Tensor:
    """LR's logit modulation ``(B*nW, 1, ws*ws, ws*ws)``: ``scale`` where a key ranks in its query's top-k of the
    window affinity, ``scale * LR_SHARPENING`` elsewhere, from uncertainty features ``(B, C, H, W)``.

    ``scale`` lets the LR fold its query scaling into the modulation. Reproduces the official windowing exactly:
    the official code partitions the *channel-first* ``var`` as if it were channel-last, i.e. views
    ``(B, C, H, W)`` as ``(B, C/ws, ws, H/ws, ws, W)``, swaps the two middle axes and regroups the result as
    ``(-1, ws*ws, C)``. The released weights were trained with this layout, so it is kept as is (it needs
    ``C % ws == 0``). The affinity is ``v @ v^T`` per window.
    """
    b, c, h, w = var.shape
    v = var.reshape(b, c // ws, ws, h // ws, ws, w).transpose(2, 3).reshape(-1, ws * ws, c)  # (B*nW, N, C)
    affinity = float32_island(lambda t: t @ t.transpose(1, 2), v)  # (B*nW, N, N); float32 under autocast
    keep = topk_mask(affinity)
    one = torch.full((), scale, dtype=var.dtype, device=var.device)
    return torch.where(keep, one, one * LR_SHARPENING).unsqueeze(1)
