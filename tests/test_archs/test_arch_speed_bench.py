"""benchmarks/arch_speed.py's kernel split (``--profile``): which profiled time counts as multiply-add kernels."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'arch_speed.py'


def _arch_speed():
    spec = importlib.util.spec_from_file_location('arch_speed', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _profiled_ops(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_multiply_add_kernels_are_convolutions_matmuls_and_attention_only():
    """By op name, not by measured time (which the machine's load would make flaky): the kernels that do the
    multiply-adds of each case count, element-wise ops, copies, softmax and top-k do not."""
    arch_speed = _arch_speed()
    torch.manual_seed(0)
    a, x = torch.randn(256, 256), torch.randn(1, 8, 32, 32)
    weight, q = torch.randn(8, 8, 3, 3), torch.randn(1, 4, 256, 32)
    # channels-last and 16 channels: oneDNN's kernel instead of the generic one
    x16, w16 = torch.randn(1, 16, 64, 64).contiguous(memory_format=torch.channels_last), torch.randn(16, 16, 3, 3)
    cases = {
        'matmul': (lambda: [a @ a, torch.bmm(a[None], a[None]), F.linear(a, a)], {'aten::mm', 'aten::bmm'}),
        'generic conv': (lambda: F.conv2d(x, weight, padding=1), {'aten::_slow_conv2d_forward'}),
        'oneDNN conv': (lambda: F.conv2d(x16, w16, padding=1), {'aten::mkldnn_convolution'}),
        'attention': (lambda: F.scaled_dot_product_attention(q, q, q), {'aten::scaled_dot_product_attention'}),
    }
    with torch.no_grad():
        for name, (fn, kernels) in cases.items():
            ops = _profiled_ops(fn)
            assert kernels <= ops, name  # the case ran the kernel it is about
            assert all(arch_speed.is_gemm_kernel(k) for k in kernels), name
        rest = _profiled_ops(lambda: [F.gelu(a), a.softmax(-1), a.topk(5), a.t().contiguous()])
    assert {'aten::gelu', 'aten::_softmax', 'aten::topk', 'aten::copy_'} <= rest
    assert not any(arch_speed.is_gemm_kernel(k) for k in rest)
    x16.requires_grad_(True)  # backward kernels count too
    backward = _profiled_ops(lambda: F.conv2d(x16, w16, padding=1).sum().backward())
    assert arch_speed.is_gemm_kernel('aten::convolution_backward') and 'aten::convolution_backward' in backward
    assert not arch_speed.is_gemm_kernel('aten::sum') and not arch_speed.is_gemm_kernel('aten::fill_')


def test_share_is_the_multiply_add_part_of_the_self_time():
    events = [
        SimpleNamespace(key='aten::mm', self_cpu_time_total=30.0),
        SimpleNamespace(key='aten::mkldnn_convolution', self_cpu_time_total=10.0),
        SimpleNamespace(key='aten::gelu', self_cpu_time_total=40.0),
        SimpleNamespace(key='aten::copy_', self_cpu_time_total=20.0),
    ]
    assert _arch_speed().self_time_share(events) == 0.4


def test_ceiling_is_the_official_time_over_ours_multiply_add_time(capsys):
    _arch_speed().print_gemm_split({'ours': 0.5, 'official': 0.4}, {'ours': 100.0, 'official': 300.0}, 'ours')
    out = capsys.readouterr().out
    assert 'ours             conv/matmul/attention  50% (    50 ms), rest  50%' in out
    assert 'ceiling' in out and '6.00x' in out
