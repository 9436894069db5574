"""benchmarks/arch_speed.py's kernel split (``--profile``): which profiled time counts as multiply-add kernels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'arch_speed.py'


def _arch_speed():
    spec = importlib.util.spec_from_file_location('arch_speed', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gemm_share_counts_convolutions_matmuls_and_attention_only():
    arch_speed = _arch_speed()
    torch.manual_seed(0)
    a, x = torch.randn(256, 256), torch.randn(1, 8, 32, 32)
    weight, q = torch.randn(8, 8, 3, 3), torch.randn(1, 4, 256, 32)
    with torch.no_grad():
        assert arch_speed.gemm_share(lambda: [a @ a, torch.bmm(a[None], a[None]), F.linear(a, a)]) > 0.9
        assert arch_speed.gemm_share(lambda: [F.conv2d(x, weight, padding=1) for _ in range(3)]) > 0.9
        # channels-last and 16 channels: oneDNN's kernel instead of the generic one
        x, weight = torch.randn(1, 16, 64, 64).contiguous(memory_format=torch.channels_last), torch.randn(16, 16, 3, 3)
        assert arch_speed.gemm_share(lambda: [F.conv2d(x, weight, padding=1) for _ in range(3)]) > 0.9
        assert arch_speed.gemm_share(lambda: F.scaled_dot_product_attention(q, q, q)) > 0.8
        assert arch_speed.gemm_share(lambda: [F.gelu(a), a.softmax(-1), a.topk(5), a.t().contiguous()]) == 0
    x.requires_grad_(True)  # backward kernels count too
    assert arch_speed.gemm_share(lambda: F.conv2d(x, weight, padding=1).sum().backward()) > 0.5


def test_ceiling_is_the_official_time_over_ours_multiply_add_time(capsys):
    _arch_speed().print_gemm_split({'ours': 0.5, 'official': 0.4}, {'ours': 100.0, 'official': 300.0}, 'ours')
    out = capsys.readouterr().out
    assert 'ours             conv/matmul/attention  50% (    50 ms), rest  50%' in out
    assert 'ceiling' in out and '6.00x' in out
