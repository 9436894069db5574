"""NaN never becomes a score (or "identical to the ground truth"): a non-finite prediction is refused by the
protocols (``metrics.protocols.compute``, arrays and tensors) and by the validation metrics' bridge to them.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import smooth_image


@pytest.mark.parametrize('protocol', ['official', 'standard'])
@pytest.mark.parametrize('metric', ['psnr', 'ssim'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')], ids=['nan', 'inf'])
def test_non_finite_prediction_is_not_scored(protocol, metric, bad):
    from s2former_plugin.metrics import protocols

    gt = smooth_image().astype(np.float32) / 255
    pred = gt.copy()
    pred[3, 4, 1] = bad
    with pytest.raises(protocols.NonFiniteImage, match='1 NaN/inf values'):
        protocols.compute(metric, pred, gt, protocol)
    tensor = torch.from_numpy(pred[..., ::-1].copy()).permute(2, 0, 1)[None]
    with pytest.raises(protocols.NonFiniteImage):
        protocols.compute(metric, tensor, gt, protocol)


def test_validation_metric_bridge_refuses_nan_prediction():
    from basicsr.metrics import calculate_metric

    gt = smooth_image().astype(np.float32) / 255
    pred = np.full_like(gt, np.nan)
    with pytest.raises(ValueError, match='NaN/inf'):
        calculate_metric({'img': pred, 'img2': gt}, {'type': 'official_psnr'})
