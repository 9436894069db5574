"""Synthetic rain, the mathematics: clean images made rainy (streaks, lens raindrops, or both), seeded and vectorised.

Streaks
    Each of ``layers`` layers scatters seeds over the image (``density`` = fraction of pixels) and smears them with
    an anti-aliased, tapered line kernel (``length``, ``width``, ``angle`` from vertical, jittered per layer by
    ``angle_jitter``): a motion-blurred drop. The layer is softened (``blur``), scaled by ``brightness`` and
    screen-blended onto the image, optionally with a rain veil (``haze``).
Drops
    Out-of-focus drops on the lens (``count`` per 100x100 pixels, at least one). Each is an ellipse (``radius``,
    ``aspect``, random rotation) with a smooth alpha edge (``edge``). Through it one sees a flipped, wider view of
    the scene around it (``zoom``: source offset per pixel offset, fish-eye growing to the rim), taken from a
    blurred copy of the image (``blur``), with a darker rim (``rim``) and a specular highlight (``highlight``).
    Overlapping drops: the more opaque one wins.

Every number in the configs is either a fixed value or a ``[low, high]`` range drawn per image (per layer / per
drop). All randomness comes from the ``numpy.random.Generator`` passed in: the same seed gives the same rain.
Streaks and drops are in pixels, so a 64x64 training crop and a full image get rain of the same scale.

Rain masks: :func:`add_rain` with ``return_mask=True`` also says where it drew streaks and drops (streak opacity or
drop alpha at least :data:`MASK_THRESHOLD`), for scoring uncertainty maps as rain detectors
(``metrics/uncertainty.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np

__all__ = [
    'MASK_THRESHOLD',
    'MODES',
    'DropConfig',
    'RainConfig',
    'StreakConfig',
    'add_rain',
    'raindrops',
    'rain_streaks',
]

MODES = ('streak', 'drop', 'both')

Range = float | tuple[float, float]
#: Streak opacity or drop alpha from which :func:`add_rain`'s mask counts a pixel as rain.
MASK_THRESHOLD = 0.05


@dataclass
class StreakConfig:
    """Rain-streak parameters (pixels and degrees; ``(low, high)`` ranges are drawn per image or per layer)."""

    layers: tuple[int, int] = (1, 3)
    density: Range = (0.002, 0.012)
    length: Range = (8.0, 36.0)
    width: Range = (1.0, 2.2)
    angle: Range = (-25.0, 25.0)
    angle_jitter: float = 6.0
    brightness: Range = (0.45, 0.95)
    blur: Range = (0.3, 1.0)
    haze: Range = (0.0, 0.12)


@dataclass
class DropConfig:
    """Lens-raindrop parameters (``count`` per 100x100 pixels; sizes in pixels)."""

    count: Range = (1.0, 4.0)
    radius: Range = (3.0, 18.0)
    aspect: Range = (0.75, 1.3)
    edge: Range = (0.15, 0.35)
    zoom: Range = (1.3, 3.0)
    blur: Range = (1.0, 2.5)
    rim: Range = (0.1, 0.35)
    highlight: Range = (0.15, 0.6)


@dataclass
class RainConfig:
    """What :func:`add_rain` draws: ``mode`` (``streak``, ``drop``, ``both``) and the two parameter sets."""

    mode: str = 'both'
    streak: StreakConfig = field(default_factory=StreakConfig)
    drop: DropConfig = field(default_factory=DropConfig)

    @classmethod
    def from_dict(cls, opt: dict[str, Any] | None) -> RainConfig:
        """Build from a YAML-style dict, e.g. ``{'mode': 'both', 'streak': {'length': [10, 30]}}``.

        Raises:
            ValueError: Unknown key or mode (the message names it).
        """
        opt = dict(opt or {})
        unknown = set(opt) - {'mode', 'streak', 'drop'}
        if unknown:
            raise ValueError(f'rain: unknown key {sorted(unknown)[0]!r}; use mode, streak, drop')
        mode = opt.get('mode', 'both')
        if mode not in MODES:
            raise ValueError(f'rain:mode: {mode!r} is not one of {", ".join(MODES)}')

        def sub(name: str, klass: type) -> Any:
            given = dict(opt.get(name) or {})
            names = {f.name for f in fields(klass)}
            for key, value in given.items():
                if key not in names:
                    raise ValueError(f'rain:{name}: unknown key {key!r}; use {", ".join(sorted(names))}')
                given[key] = tuple(value) if isinstance(value, list | tuple) else value
                if isinstance(given[key], tuple) and (len(given[key]) != 2 or given[key][0] > given[key][1]):
                    raise ValueError(f'rain:{name}:{key}: {value!r} must be a number or [low, high]')
            return klass(**given)

        return cls(mode=mode, streak=sub('streak', StreakConfig), drop=sub('drop', DropConfig))


def _draw(rng: np.random.Generator, value: Range) -> float:
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1])) if value[1] > value[0] else float(value[0])
    return float(value)


def _as_float(img: np.ndarray) -> tuple[np.ndarray, bool]:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, True
    return np.clip(img.astype(np.float32, copy=False), 0.0, 1.0), False


def _as_input_type(out: np.ndarray, was_uint8: bool) -> np.ndarray:
    out = np.clip(out, 0.0, 1.0)
    return (out * 255.0 + 0.5).astype(np.uint8) if was_uint8 else out.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Streaks
# ----------------------------------------------------------------------------------------------------------------
def _streak_kernel(length: float, width: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased line of ``length`` x ``width`` pixels tilted ``angle_deg`` from vertical, tapered at the ends."""
    half = int(np.ceil(length / 2 + width)) + 1
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    t = np.deg2rad(angle_deg)
    along = x * np.sin(t) + y * np.cos(t)
    across = x * np.cos(t) - y * np.sin(t)
    profile = np.clip(width / 2 + 0.5 - np.abs(across), 0.0, 1.0)
    taper = np.clip(1.0 - (2 * along / length) ** 2, 0.0, 1.0) ** 0.5  # bright middle, thin ends
    return (profile * taper).astype(np.float32)


def rain_streaks(
    img: np.ndarray, rng: np.random.Generator, cfg: StreakConfig | None = None, return_coverage: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Add rain streaks.

    Args:
        img: ``(h, w)`` or ``(h, w, c)`` image, ``uint8`` or float in [0, 1].
        rng: Source of all randomness.
        cfg: Parameters (defaults: :class:`StreakConfig`).
        return_coverage: Also return the streak layer: ``(h, w)`` float32 in [0, 1], the screen-blend opacity of
            the streaks at each pixel (the haze veil, spread over the whole image, is not in it). The same random
            draws are made either way, so the rainy image does not depend on this.

    Returns:
        The rainy image, same shape and dtype as ``img`` (and the coverage).
    """
    cfg = cfg or StreakConfig()
    x, was_uint8 = _as_float(img)
    h, w = x.shape[:2]
    lo, hi = cfg.layers if isinstance(cfg.layers, tuple) else (cfg.layers, cfg.layers)
    n_layers = int(rng.integers(int(lo), int(hi) + 1))
    base_angle = _draw(rng, cfg.angle)
    rain = np.zeros((h, w), np.float32)
    for _ in range(n_layers):
        density = _draw(rng, cfg.density)
        seeds = rng.random((h, w), dtype=np.float32)
        seeds = np.where(seeds < density, 0.6 + 0.4 * seeds / max(density, 1e-8), 0.0).astype(np.float32)
        angle = base_angle + rng.uniform(-cfg.angle_jitter, cfg.angle_jitter)
        kernel = _streak_kernel(_draw(rng, cfg.length), _draw(rng, cfg.width), angle)
        layer = cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_REFLECT101)
        sigma = _draw(rng, cfg.blur)
        if sigma > 0:
            layer = cv2.GaussianBlur(layer, (0, 0), sigma)
        rain += np.clip(layer, 0.0, 1.0) * _draw(rng, cfg.brightness)
    coverage = rain = np.clip(rain, 0.0, 1.0)
    if x.ndim == 3:
        rain = rain[..., None]
    out = 1.0 - (1.0 - x) * (1.0 - rain)  # screen blend: streaks brighten, never darken
    haze = _draw(rng, cfg.haze)
    if haze > 0:  # veil of unresolved drops: lower contrast towards a light grey
        out = out * (1.0 - haze) + 0.85 * haze
    out = _as_input_type(out, was_uint8)
    return (out, coverage) if return_coverage else out


# ----------------------------------------------------------------------------------------------------------------
# Drops
# ----------------------------------------------------------------------------------------------------------------
def raindrops(
    img: np.ndarray, rng: np.random.Generator, cfg: DropConfig | None = None, return_coverage: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Add refracting raindrops on the lens.

    Per drop only its bounding box is computed; one ``cv2.remap`` then renders all drops at once.

    Args:
        img: ``(h, w)`` or ``(h, w, c)`` image, ``uint8`` or float in [0, 1].
        rng: Source of all randomness.
        cfg: Parameters (defaults: :class:`DropConfig`).
        return_coverage: Also return the drops' alpha: ``(h, w)`` float32 in [0, 1], how much of each pixel is
            seen through a drop. The same random draws are made either way.

    Returns:
        The rainy image, same shape and dtype as ``img`` (and the coverage).
    """
    cfg = cfg or DropConfig()
    x, was_uint8 = _as_float(img)
    h, w = x.shape[:2]
    n = max(1, int(rng.poisson(_draw(rng, cfg.count) * h * w / 1e4)))
    map_x, map_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    alpha = np.zeros((h, w), np.float32)
    shade = np.ones((h, w), np.float32)
    light = np.zeros((h, w), np.float32)
    for _ in range(n):
        r = _draw(rng, cfg.radius)
        rx, ry = r, r * _draw(rng, cfg.aspect)
        cx, cy = rng.uniform(-0.3 * rx, w + 0.3 * rx), rng.uniform(-0.3 * ry, h + 0.3 * ry)
        theta = rng.uniform(0, np.pi)
        extent = max(rx, ry) + 1
        x0, x1 = max(int(cx - extent), 0), min(int(cx + extent) + 1, w)
        y0, y1 = max(int(cy - extent), 0), min(int(cy + extent) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        rho = np.sqrt(u * u + v * v)
        edge = _draw(rng, cfg.edge)
        a = np.clip((1.0 - rho) / edge, 0.0, 1.0)
        a = a * a * (3 - 2 * a)  # smoothstep: no hard rim
        # Lens: an inverted, wider view of the scene, increasingly compressed towards the rim (fish-eye).
        zoom = _draw(rng, cfg.zoom) * (1.0 + 0.6 * rho * rho)
        lift = rng.uniform(0.0, 1.0) * ry  # drops mostly show what lies above them
        src_x = cx - dx * zoom
        src_y = cy - lift - dy * zoom
        rim = _draw(rng, cfg.rim) * np.clip((rho - 0.55) / 0.45, 0.0, 1.0) ** 2
        spot = np.exp(-((u + 0.35) ** 2 + (v + 0.4) ** 2) / (2 * 0.14**2)) * _draw(rng, cfg.highlight)
        win = a > alpha[y0:y1, x0:x1]
        for full, part in ((map_x, src_x), (map_y, src_y), (alpha, a), (shade, 1.0 - rim), (light, spot)):
            view = full[y0:y1, x0:x1]
            view[win] = part[win]
    blurred = cv2.GaussianBlur(x, (0, 0), _draw(rng, cfg.blur))
    seen = cv2.remap(blurred, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    coverage = alpha
    if x.ndim == 3:
        alpha, shade, light = alpha[..., None], shade[..., None], light[..., None]
    drop = seen * shade + light * (1.0 - seen)  # highlight: screen-like, saturates at white
    out = _as_input_type(x * (1.0 - alpha) + drop * alpha, was_uint8)
    return (out, coverage) if return_coverage else out


# ----------------------------------------------------------------------------------------------------------------
def add_rain(
    img: np.ndarray,
    rng: np.random.Generator | int | None = None,
    config: RainConfig | dict | None = None,
    mode: str | None = None,
    return_mask: bool = False,
    mask_threshold: float = MASK_THRESHOLD,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Make a clean image rainy.

    Args:
        img: ``(h, w)`` or ``(h, w, c)``, ``uint8`` or float in [0, 1] (channel order does not matter: rain is
            grey).
        rng: A ``numpy.random.Generator``, or a seed for a new one.
        config: :class:`RainConfig` or its dict form (YAML ``rain:``).
        mode: Overrides ``config.mode``: ``streak``, ``drop`` or ``both`` (streaks, then drops on the lens).
        return_mask: Also return where the rain was drawn: an ``(h, w)`` bool mask, true where a streak's opacity
            or a drop's alpha is at least ``mask_threshold`` (the haze veil is not rain at a place). The rainy image
            is the same with or without it.
        mask_threshold: Coverage from which a pixel counts as rain.

    Returns:
        The rainy image, same shape and dtype as ``img`` (and the mask).
    """
    cfg = config if isinstance(config, RainConfig) else RainConfig.from_dict(config)
    mode = mode or cfg.mode
    if mode not in MODES:
        raise ValueError(f'mode: {mode!r} is not one of {", ".join(MODES)}')
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    out = img
    coverage = np.zeros(img.shape[:2], np.float32)
    if mode in ('streak', 'both'):
        out, streaks = rain_streaks(out, rng, cfg.streak, return_coverage=True)
        coverage = np.maximum(coverage, streaks)
    if mode in ('drop', 'both'):
        out, drops = raindrops(out, rng, cfg.drop, return_coverage=True)
        coverage = np.maximum(coverage, drops)
    return (out, coverage >= mask_threshold) if return_mask else out
