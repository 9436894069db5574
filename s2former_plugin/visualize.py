"""Image helpers shared by validation, inference and reports."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def uncertainty_to_color(uncertainty: torch.Tensor | np.ndarray) -> np.ndarray:
    """Colour-map an uncertainty map to a ``H x W x 3`` uint8 BGR image (inferno: bright = uncertain).

    Args:
        uncertainty: A tensor ``C x H x W`` (network layout) or an array ``H x W x C`` / ``H x W`` (image layout).
            Channels are averaged. Values are scaled per image between their 1st and 99th percentiles:
            uncertainty is relative and its scale drifts during training, and a few extreme pixels should not
            wash out the rest.
    """
    if isinstance(uncertainty, torch.Tensor):
        u = uncertainty.detach().float().cpu().numpy()
        u = u.mean(axis=0) if u.ndim == 3 else u
    else:
        u = np.asarray(uncertainty, dtype=np.float32)
        u = u.mean(axis=2) if u.ndim == 3 else u
    lo, hi = np.percentile(u, [1, 99])
    scaled = np.clip((u - lo) / max(hi - lo, 1e-12), 0, 1)
    return cv2.applyColorMap(np.rint(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
