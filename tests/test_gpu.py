"""Device-path correctness: checks runnable on CPU (the ``meta`` device, bf16 autocast) and ``gpu``-marked CUDA
checks (deselected by default; they run where a GPU is present, e.g. ``benchmarks/gpu_checks.sh``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from s2former_plugin.archs import s2former_blocks as blocks
from s2former_plugin.archs.s2former_arch import S2Former


def _reference_grid(ssa, x, constraint):
    """The sampling grid as first written: two full-size cached grids, ``base + (local * scales + offsets)``."""
    b, h, w, _ = x.shape
    ws, heads = ssa.ws, ssa.num_heads
    nh, nw = h // ws, w // ws
    pooled = F.leaky_relu((x * constraint).view(b, nh, ws, nw, ws, -1).mean((2, 4)))
    offsets = blocks.pointwise(pooled, ssa.offset_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
    scales = blocks.pointwise(pooled, ssa.scale_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
    offsets = (offsets / torch.tensor([nw, nh], dtype=x.dtype)).reshape(b * heads, nh, 1, nw, 1, 2)
    scales = scales.reshape(b * heads, nh, 1, nw, 1, 2)
    ref = torch.stack(torch.meshgrid(torch.linspace(-1, 1, w), torch.linspace(-1, 1, h), indexing='ij'), 0)
    ref = ref.permute(0, 2, 1).unsqueeze(0)
    centres = F.avg_pool2d(ref, kernel_size=ws).reshape(1, 2, nh, 1, nw, 1)
    step_h = torch.arange(ws) * 2 * ws / ws / (h - 1)
    step_w = torch.arange(ws) * 2 * ws / ws / (w - 1)
    step_h, step_w = step_h - step_h.mean(), step_w - step_w.mean()
    local = torch.stack(torch.meshgrid(step_w.repeat(nw), step_h.repeat(nh), indexing='ij'), 0)
    local = local.permute(0, 2, 1).reshape(1, 2, nh, ws, nw, ws)
    base = centres + local
    base, local = (t.permute(0, 2, 3, 4, 5, 1).to(x.dtype) for t in (base, local))
    return (base + (local * scales + offsets)).reshape(b * heads, h, w, 2)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize(('h', 'w'), [(8, 8), (64, 192), (40, 24), (96, 64)])
def test_separable_sampling_grid_is_bitwise_the_full_grid(dtype, h, w):
    torch.manual_seed(0)
    ssa = blocks.SparseSamplingAttention(16, 2, 8).to(dtype)
    x = torch.randn(2, h, w, 16, dtype=dtype)
    constraint = blocks.SparseSamplingAttention.constraint(torch.randn(2, 16, h, w, dtype=dtype))
    assert torch.equal(ssa.sampling_grid(x, constraint), _reference_grid(ssa, x, constraint))


def test_sampling_grid_cache_holds_per_axis_vectors_only():
    cached = blocks._sampling_axes(1024, 2048, 8, torch.device('cpu'), torch.float32)
    # two full-size grids would be 2 x 1024 x 2048 x 2 x 4 bytes = 32 MiB; per axis it is a few KiB
    assert sum(t.numel() * t.element_size() for t in cached) < 4 * (2 * 1024 + 2 * 2048) + 64


class _HostToDevice(TorchFunctionMode):
    """Records tensors created from host data on, or copied from the host to, a non-CPU device."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, '__name__', str(func))
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name in ('tensor', 'as_tensor') and torch.device(kwargs.get('device') or 'cpu').type != 'cpu':
            self.calls.append(name)
        elif name in ('to', 'cuda') and src is not None and src.device.type == 'cpu':
            if isinstance(out, torch.Tensor) and out.device.type != 'cpu':
                self.calls.append(name)
        return out


@pytest.mark.parametrize('train', [False, True])
def test_warm_forward_copies_nothing_from_the_host(train):
    # The meta device stands in for CUDA: a tensor built from host data per call is a blocking copy there.
    net = S2Former('small').to('meta').train(train)
    x = torch.empty(1, 3, 64, 128, device='meta')
    with torch.set_grad_enabled(train):
        net(x, return_all=True)  # warm-up fills the per-size caches
        with _HostToDevice() as rec:
            net(x, return_all=True)
    assert rec.calls == []
