"""Image helpers shared by validation, inference and reports."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def uncertainty_to_color(uncertainty: torch.Tensor | np.ndarray) -> np.ndarray:
    """Colour-map an uncertainty map (``C x H x W`` or ``H x W``) to a ``H x W x 3`` uint8 BGR image.

    Channels are averaged; values are min-max normalised per image (uncertainty is relative, its scale drifts
    during training), then mapped with the inferno colour map (dark = confident, bright = uncertain).
    """
    u = uncertainty.detach().float().cpu().numpy() if isinstance(uncertainty, torch.Tensor) else uncertainty
    u = np.asarray(u, dtype=np.float32)
    if u.ndim == 3:
        u = u.mean(axis=0)
    lo, hi = float(u.min()), float(u.max())
    scaled = np.zeros_like(u) if hi - lo < 1e-12 else (u - lo) / (hi - lo)
    return cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
