"""The network under ``torch.compile``: the forward of all ten maps is one graph (no graph break), with the fast
ops and with the plain ones, in float32 and under bfloat16 autocast. ``torch._dynamo.explain`` traces without
generating code, so no compile runs here; the compiled training step is in ``tests/test_models``."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo

from s2former_plugin.archs import s2former_ops as ops
from s2former_plugin.archs.s2former_arch import S2Former


def _tiny_net() -> S2Former:
    torch.manual_seed(0)
    kwargs = dict(dims=(16,) * 5, num_conv_blocks=(1,) * 4, num_bottleneck_blocks=1, num_heads=(1, 1, 2, 2, 2))
    return S2Former(num_reconstruction_blocks=(2,) * 4, **kwargs).train()  # SSA and LR at every scale


@pytest.mark.parametrize(('fast', 'amp'), [(True, False), (False, True)])
def test_forward_of_all_maps_has_no_graph_break(fast, amp):
    net = _tiny_net()
    x = torch.rand(1, 3, 64, 48)  # padded inside: the padding is traced too
    torch._dynamo.reset()
    with ops.fast_ops(fast), torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp), warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # e.g. dynamo tracing through an lru_cache wrapper
        explained = torch._dynamo.explain(net)(x, return_all=True)
    reasons = [b.reason for b in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count, reasons) == (1, 0, [])
    assert explained.op_count > 500  # the whole network, not a stub of it
