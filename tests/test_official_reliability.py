"""The official checkpoint loader (``official.load_official_checkpoint``) on non-finite weights: refused, naming
the file and the tensor.

Each test is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest
import torch


def test_official_checkpoint_loader_refuses_non_finite_weights(tmp_path):
    from s2former_plugin.official import load_official_checkpoint

    torch.save({'module.conv.weight': torch.tensor([1.0, float('inf')]), 'step': torch.tensor(3)}, tmp_path / 'o.pth')
    expected = r'o\.pth( \(state dict\))?: non-finite \(NaN/inf\) weights in 1 tensor\(s\): conv\.weight'
    with pytest.raises(ValueError, match=expected):
        load_official_checkpoint(tmp_path / 'o.pth')
