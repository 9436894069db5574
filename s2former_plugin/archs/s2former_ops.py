"""Speed-only kernels of S2Former behind one switch, each next to its plain (reference) version.

Every op here computes the same function two ways: a *plain* path in ordinary torch ops, written to be read (and
the one to compare against when in doubt), and a *fast* path that only saves time (fused kernels, a hand-written
backward, a cheaper selection). Both agree to rounding (``tests/test_archs/test_s2former_ops.py``: ~1e-12 in float64).

The switch (like timm's ``set_fast_norm``)::

    set_fast_ops(False)            # plain ops from now on
    fast_ops_enabled()             # -> False
    with fast_ops(True): ...       # fast ops inside the block, the previous setting after it

It is on by default; ``S2FORMER_FAST_OPS=0`` in the environment turns it off (read once, at import). Tracing
(ONNX export) and ``torch.compile`` see plain ops where a fast path has no tracer support (the oneDNN kernel, the
autograd Function); the top-k mask has traced variants of both paths, so an exported graph ranks any size.

The precision guards (float32 islands under autocast) are not speed tricks: they live in ``precision.py`` and hold
on both paths; the export-only traced twins live in ``s2former_export.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import s2former_export
from .precision import autocast_on, float32_under_autocast, to_float32  # noqa: F401  (their former home)

__all__ = [
    'ENV_VAR',
    'attention',
    'autocast_on',
    'bias_free_layer_norm',
    'fast_ops',
    'fast_ops_enabled',
    'float32_under_autocast',
    'linear_gelu',
    'set_fast_ops',
    'to_float32',
    'topk_mask',
]

ENV_VAR = 'S2FORMER_FAST_OPS'
_TRUE, _FALSE = ('1', 'true', 'on', 'yes'), ('0', 'false', 'off', 'no')


def _read_env() -> bool:
    value = os.environ.get(ENV_VAR, '').strip().lower()
    if value in _TRUE or not value:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f'{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 1 (fast ops, the default) or 0 (plain ops)')


_FAST_OPS = _read_env()


def set_fast_ops(enabled: bool) -> None:
    """Use the fast (``True``) or the plain (``False``) path of every op in this module from now on."""
    global _FAST_OPS
    _FAST_OPS = bool(enabled)


def fast_ops_enabled() -> bool:
    """Whether the fast paths are in use."""
    return _FAST_OPS


@contextlib.contextmanager
def fast_ops(enabled: bool = True) -> Iterator[None]:
    """Context manager: the fast (``True``) or plain (``False``) paths inside, the previous setting after."""
    previous = _FAST_OPS
    set_fast_ops(enabled)
    try:
        yield
    finally:
        set_fast_ops(previous)


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


# --------------------------------------------------------------------------------------------------------------
# Fused linear + GELU (the decoder MLPs' first layer)
# --------------------------------------------------------------------------------------------------------------
# oneDNN's fused matmul + pointwise kernel (what inductor uses on CPU); no autograd formula, so inference only.
_HAS_LINEAR_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')


def linear_gelu(x: Tensor, fc: nn.Linear) -> Tensor:
    """``gelu(fc(x))`` (exact, erf GELU) for ``x (..., C_in) -> (..., C_out)``.

    Fast path, without autograd on float32 CPU tensors: one oneDNN matmul with the bias and GELU fused, which
    skips two passes over the (4x wide) output (~5 % of a 256x256 forward). Elsewhere the plain ops.
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or fc.weight.requires_grad)
    usable = _HAS_LINEAR_POINTWISE and x.device.type == 'cpu' and x.dtype == torch.float32
    if not _FAST_OPS or needs_grad or not usable or _tracing():
        return F.gelu(fc(x))
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), fc.weight, fc.bias, 'gelu', [], 'none')
    return out.view(*x.shape[:-1], -1)


# --------------------------------------------------------------------------------------------------------------
# Bias-free LayerNorm (the encoder's ConvBlock)
# --------------------------------------------------------------------------------------------------------------
def bias_free_layer_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``x / sqrt(var(x) + eps) * weight`` over the last dim (channel-last ``(..., C)``), ``x`` not centred.

    Plain path: Restormer's formula with ``Tensor.var``. Fast path: a two-pass variance and ``rsqrt`` (a short
    last dim makes ``var`` ~9x slower), and with autograd the :class:`_BiasFreeLayerNormFunction` backward.
    """
    if not _FAST_OPS:
        return x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * weight
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if needs_grad and not _tracing():  # tracers: the autograd Function is opaque to them
        return _BiasFreeLayerNormFunction.apply(x, weight, eps)
    var = (x - x.mean(-1, keepdim=True)).square().mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight


class _BiasFreeLayerNormFunction(torch.autograd.Function):
    """``x / sqrt(var(x) + eps) * weight`` over the last dim, with a hand-written backward.

    Same forward values as the fast no-autograd path; autograd through those ops saves four full-size tensors
    and runs about a dozen full-size passes backward (the two means alone broadcast-and-divide twice). Here only
    ``xhat = x * rstd`` is saved and the backward is five passes:

        grad_weight = sum(g * xhat),   s = g * weight,   m = mean_C(s * xhat)
        grad_x = rstd * (s - (xhat - mean * rstd) * m) = rstd * s - (rstd * m) * xhat + rstd^2 * m * mean

    (1.5-3x faster forward + backward for the encoder's maps, e.g. 12 vs 41 ms at 4x32x128x128).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).square_().mean(-1, keepdim=True)  # two-pass: var_mean over a short last dim is ~9x slower
        rstd = (var + eps).rsqrt_()
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, mean, weight)
        return xhat * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        xhat, rstd, mean, weight = ctx.saved_tensors
        grad_weight = (g * xhat).sum(tuple(range(g.dim() - 1))) if ctx.needs_input_grad[1] else None
        if not ctx.needs_input_grad[0]:
            return None, grad_weight, None
        s = g * weight
        m = (s * xhat).mean(-1, keepdim=True)  # (..., 1)
        grad_x = torch.addcmul(rstd * rstd * m * mean, rstd, s).addcmul_(-rstd * m, xhat)
        return grad_x, grad_weight, None


# --------------------------------------------------------------------------------------------------------------
# Attention (the SSA windows and the bottleneck)
# --------------------------------------------------------------------------------------------------------------
def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for ``q, k, v (..., N, d)`` and an additive ``bias`` broadcast to
    ``(..., N, N)``.

    Plain path: the formula written out. Fast path: ``F.scaled_dot_product_attention``, except with autograd and
    a bias: SDPA then takes its "math" path, whose safe softmax adds an ``isneginf().all()`` pass over the logits
    (for fully masked rows, which an additive bias cannot produce), so the written-out formula, bitwise the same
    values, runs ~30 % faster forward + backward.
    """
    if _FAST_OPS and (bias is None or not torch.is_grad_enabled()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (..., N, N)
    return (logits if bias is None else logits + bias).softmax(dim=-1) @ v


# --------------------------------------------------------------------------------------------------------------
# Top-k mask (the uncertainty ranking's selection; see s2former_ranking)
# --------------------------------------------------------------------------------------------------------------
def _traced_topk_mask(scores: Tensor, keep_ratio: float) -> Tensor:
    """The export twin (:func:`s2former_export.traced_topk_mask`) on the path the switch selects."""
    return s2former_export.traced_topk_mask(scores, keep_ratio, _FAST_OPS)


def topk_mask(scores: Tensor, keep_ratio: float) -> Tensor:
    """Boolean mask of the ``k = int(keep_ratio * N)`` largest entries along the last dim of ``scores``.

    Plain path: ``torch.topk`` indices scattered into a zero mask (the official code). Fast path: a threshold
    and a comparison: the k-th largest value is the largest of the ``N - k + 1`` smallest, selected unsorted
    (about 2x faster on CPU than ``kthvalue`` for the same value, and than a full top-k plus scatter). The two
    differ only when the k-th largest value is tied with a value outside the top-k (then the threshold keeps all
    tied entries): a measure-zero event for real-valued features.
    """
    if torch.jit.is_tracing():  # export: k follows the traced size instead of being baked in
        return _traced_topk_mask(scores, keep_ratio)
    n = scores.shape[-1]
    k = int(keep_ratio * n)
    if not _FAST_OPS:
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(k, dim=-1).indices, True)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    smallest = scores.topk(n - k + 1, dim=-1, largest=False, sorted=False).values
    return scores >= smallest.amax(dim=-1, keepdim=True)
