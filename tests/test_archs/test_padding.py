"""``pad_to_multiple`` (S2Former and the rivals) against numpy's padding, at the reflection/replication boundary
of each axis, eager and traced (the ONNX export's index-gathering version)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2former_plugin.archs.padding import _traced_pad_to_multiple, pad_to_multiple

# (H, W, multiple): reflection needs a padding shorter than its side on both axes, else both replicate.
SIZES = [
    (4, 12, 8),  # H's padding (4) equals H: replicate
    (12, 4, 8),  # W's padding equals W: replicate
    (5, 12, 8),  # both shorter: reflect
    (12, 5, 8),
    (3, 3, 8),
    (1, 1, 8),
    (16, 9, 8),  # no H padding, W reflected
    (16, 2, 8),  # no H padding, W replicated
    (9, 16, 8),
    (2, 6, 4),
    (7, 1, 4),
]


def _expected(x: torch.Tensor, multiple: int) -> np.ndarray:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    mode = 'reflect' if ph < h and pw < w else 'edge'
    return np.pad(x.numpy(), ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


@pytest.mark.parametrize(('h', 'w', 'multiple'), SIZES)
def test_pad_to_multiple_equals_numpy(h, w, multiple):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    expected = _expected(x, multiple)
    assert expected.shape[-2] % multiple == 0 and expected.shape[-1] % multiple == 0
    np.testing.assert_array_equal(pad_to_multiple(x, multiple).numpy(), expected)
    np.testing.assert_array_equal(_traced_pad_to_multiple(x, multiple).numpy(), expected)


def test_fitting_sizes_are_left_alone():
    x = torch.rand(1, 3, 16, 24)
    assert pad_to_multiple(x, 8) is x
    assert torch.equal(_traced_pad_to_multiple(x, 8), x)
    assert pad_to_multiple(x, 1) is x


@pytest.mark.parametrize(('h', 'w', 'multiple'), [(4, 12, 8), (12, 5, 8), (16, 2, 8)])
def test_a_traced_graph_pads_other_sizes_as_eager_does(h, w, multiple):
    class Pad(torch.nn.Module):
        def forward(self, x):
            return pad_to_multiple(x, multiple)

    traced = torch.jit.trace(Pad(), torch.rand(1, 3, 13, 21), check_trace=False)
    x = torch.rand(1, 3, h, w)
    np.testing.assert_array_equal(traced(x).numpy(), _expected(x, multiple))
