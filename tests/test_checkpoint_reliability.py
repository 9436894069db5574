"""The weights loader (``checkpoint.load_state_dict_any``) on non-finite weights: refused, naming the tensors, in the
plain state dict as in ``params_ema``.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest

from s2former_plugin.checkpoint import load_state_dict_any


@pytest.mark.parametrize('name', ['nan.pth', 'inf_ema.pth'])
def test_non_finite_weights_refused_naming_keys(tiny_weights, name):
    d, key = tiny_weights
    with pytest.raises(ValueError, match=rf'non-finite \(NaN/inf\) weights in 1 tensor\(s\): {key}'):
        load_state_dict_any(str(d / name), 'params_ema')
