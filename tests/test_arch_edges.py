"""Edge cases of the uncertainty ranking mask (found by mutation testing: the network tests never reach them)."""

from __future__ import annotations

import pytest
import torch

from s2former_plugin.archs.s2former_ranking import topk_mask


def _reference(scores: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    k = int(keep_ratio * scores.shape[-1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, scores.topk(k, dim=-1).indices, True) if k > 0 else mask


@pytest.mark.parametrize('n', [1, 2, 3, 5, 64])
@pytest.mark.parametrize('keep_ratio', [0.0, 0.3, 0.8, 1.0])
def test_topk_mask_small_maps_and_extreme_ratios(n, keep_ratio):
    scores = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(n))
    mask = topk_mask(scores, keep_ratio)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert torch.equal(mask, _reference(scores, keep_ratio))
