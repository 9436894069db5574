"""Export-only twins of two S2Former computations, for a tracer (``torch.jit.trace`` / ONNX export).

Eagerly, the top-k's ``k`` and the SSA's sampling grid are computed from Python integers (the grid cached per size);
a tracer would bake the tracing size into the graph. These twins compute the same values with tensor operations on
the traced sizes, so an exported graph ranks and samples any input size. ``s2former_ops.topk_mask`` and
``SparseSamplingAttention.sampling_grid`` call them only while tracing.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['traced_sampling_axes', 'traced_topk_mask']


def traced_topk_mask(scores: Tensor, keep_ratio: float, fast: bool) -> Tensor:
    """``s2former_ops.topk_mask`` for a tracer, where ``scores.shape[-1]`` is a traced 0-dim tensor: ``k`` is
    computed in the graph (in float64 and floored, as Python's ``int(keep_ratio * n)``), so an exported graph ranks
    any size. ``fast``: the threshold path (else ``topk`` + scatter)."""
    n = torch.as_tensor(scores.shape[-1])
    k = (n.double() * keep_ratio).floor().long()
    if not fast:
        indices = scores.topk(k.clamp(min=1), dim=-1).indices
        kept = torch.ones_like(indices, dtype=torch.bool)  # a tensor source: the tracer has no scalar-bool scatter
        return torch.zeros_like(scores, dtype=torch.bool).scatter(-1, indices, kept) & (k > 0)
    smallest = scores.topk(n - k.clamp(min=1) + 1, dim=-1, largest=False, sorted=False).values
    return (scores >= smallest.amax(dim=-1, keepdim=True)) & (k > 0)  # k = 0 (n = 1): nothing kept


def traced_sampling_axes(h: Tensor, w: Tensor, ws: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``s2former_blocks._sampling_axes`` for a tracer, where ``h`` and ``w`` are traced 0-dim tensors: the same
    grid built with tensor operations (so an exported graph follows the input size; the cached version would bake in the
    tracing size). Equal to the cached grid up to float32 rounding (``linspace`` and ``avg_pool2d`` written out).
    ``local_x``/``local_y`` come as ``(1, 1, 1, 1, ws)``/``(1, 1, ws, 1, 1)``, the same after broadcasting.
    """

    def axis(n: Tensor) -> tuple[Tensor, Tensor]:
        i = torch.arange(n, device=device, dtype=torch.float32)
        step = 2.0 / (n - 1)
        # torch.linspace(-1, 1, n): the first half counts up from -1, the second half down from 1
        coords = torch.where(i < n / 2, -1.0 + i * step, 1.0 - (n - 1 - i) * step)
        centres = coords.view(-1, ws).mean(1, keepdim=True)  # (n/ws, 1): avg_pool2d over each window
        local = torch.arange(ws, device=device, dtype=torch.float32) * 2 * ws / ws / (n - 1)
        local = local - local.mean()
        return (centres + local).to(dtype), local.to(dtype)  # (n/ws, ws), (ws,)

    base_x, local_x = axis(w)
    base_y, local_y = axis(h)
    divisor = torch.stack([w // ws, h // ws]).to(device, dtype)
    return (
        base_x.view(1, 1, 1, -1, ws),
        local_x.view(1, 1, 1, 1, ws),
        base_y.view(1, -1, ws, 1, 1),
        local_y.view(1, 1, ws, 1, 1),
        divisor,
    )
