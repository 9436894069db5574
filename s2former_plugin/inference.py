"""Running a trained S2Former on images: loading it from any checkpoint, one image in and out, device choice.

The library side of ``python -m s2former_plugin.infer`` (and of ``export`` and the benchmark's evaluation): images
as OpenCV reads them (``uint8``/``uint16``/float, gray, BGR or BGRA) go through the network as RGB floats in [0, 1]
and come back in their own size, depth and colour mode; an out-of-memory image on a GPU is retried with smaller
tiles.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from .errors import CommandError, S2FormerError, first_line

__all__ = [
    'InferError',
    'LoadedNetwork',
    'MIN_RETRY_TILE',
    'NonFiniteOutput',
    'OutOfMemorySkip',
    'derain_array',
    'load_network',
    'open_network',
    'pick_device',
    'retry_out_of_memory',
    'stack_uncertainties',
    'unstack_uncertainties',
]


class InferError(CommandError):
    """A problem with the command's arguments; reported as one line, exit status 2."""


class NonFiniteOutput(S2FormerError, ValueError):
    """The network produced NaN or inf for an image (no output is written for it)."""

    exit_status = 1  # the image is skipped, the others written


def _read_config(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise InferError(f'--config: file not found: {path}')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        if path.lower().endswith('.json'):
            cfg = json.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - yaml/json raise various types
        # YAML errors span several lines (context, caret): one line, as every infer error.
        raise InferError(f'--config: cannot parse {path}: {" ".join(str(exc).split())[:300]}') from None
    if not isinstance(cfg, dict):
        raise InferError(f'--config: {path} does not hold a mapping')
    if isinstance(cfg.get('network_g'), dict):  # a BasicSR options file
        cfg = cfg['network_g']
    cfg = dict(cfg)
    arch = cfg.pop('type', 'S2Former')
    if arch != 'S2Former':
        raise InferError(f'--config: network type {arch!r} is not S2Former')
    return cfg


@dataclass
class LoadedNetwork:
    """A network built from a weights file, and where its configuration came from.

    Attributes:
        net: The network, in eval mode.
        used: What was loaded (``params_ema``, ``official state dict``, ``safetensors``, ...).
        config_source: ``'--config'`` (given), ``'recorded'`` (the checkpoint's metadata) or ``'inferred'``
            (from the state dict's keys and shapes).
        assumed: Constructor arguments the weights leave no trace of and no record or ``--config`` gave, with the
            value taken (e.g. ``{'num_heads[4]': 16}``); empty when the configuration is known.
    """

    net: torch.nn.Module
    used: str
    config_source: str
    assumed: dict[str, Any] = field(default_factory=dict)


def open_network(
    weights: str, config: str | dict | None = None, *, allow_assumed: bool = True, option: str = '--weights'
) -> LoadedNetwork:
    """Build an S2Former and load ``weights`` into it (strictly; ``.pth`` with ``weights_only=True``, or
    ``.safetensors``), with the configuration from ``config``, else the checkpoint's record, else the weights.

    Where both ``config`` and a recorded configuration exist they must agree; a recorded configuration must agree
    with the weights' shapes.

    Args:
        weights: Checkpoint path (BasicSR ``params_ema``/``params``, official, plain state dict or safetensors).
        config: S2Former kwargs, a YAML/JSON file holding them, or ``None``.
        allow_assumed: Whether a configuration with untraced entries (the bottleneck head count of weights that
            do not record it) may be built with their assumed values; ``False`` refuses instead.
        option: The command-line option naming ``weights`` in messages.

    Raises:
        InferError: missing or unreadable weights, a bad config, a config the weights or their record contradict,
            or (``allow_assumed=False``) a configuration that cannot be known; one line.
    """
    from .archs.s2former_arch import S2Former
    from .checkpoint import check_recorded_config, read_checkpoint, recorded_config
    from .official import UNTRACED, config_from_weights

    if not os.path.isfile(weights):
        raise InferError(f'{option}: file not found: {weights}')
    try:
        ckpt = read_checkpoint(weights, param_key='params_ema')
        arch = ckpt.metadata.get('arch', 'S2Former')
        if arch != 'S2Former':
            raise ValueError(f'{weights} holds a {arch} network, not S2Former')
        recorded = recorded_config(ckpt.metadata, weights)
    except ValueError as exc:
        raise InferError(f'{option}: {exc}') from None
    assumed: dict[str, Any] = {}
    if config is not None:
        cfg, source = _read_config(config) if isinstance(config, str) else dict(config), '--config'
    else:
        try:
            cfg, untraced = config_from_weights(ckpt.state, recorded, weights)
        except ValueError as exc:
            raise InferError(f'{option}: {exc}; pass --config') from None  # names the file: one line
        source = 'recorded' if recorded is not None else 'inferred'
        assumed = {k: UNTRACED[k] for k in untraced}
        if assumed and not allow_assumed:
            raise InferError(
                f'{option}: {weights} does not record the bottleneck head count (num_heads[4]), which leaves no trace '
                'in the weights; pass --config (the training options file), or convert the weights with '
                '`python -m s2former_plugin.convert IN OUT.safetensors --config OPTIONS` to record it'
            )
    try:
        net = S2Former(**cfg)
        net.load_state_dict(ckpt.state, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = first_line(exc, 300)
        raise InferError(f'{option}: {weights} does not fit the network configuration: {first}') from None
    if source == '--config':
        try:
            check_recorded_config(ckpt.metadata, net.config, weights)
        except ValueError as exc:
            raise InferError(f'--config: {exc}') from None
    return LoadedNetwork(net.eval(), ckpt.used, source, assumed)


def load_network(weights: str, config: str | dict | None = None) -> tuple[torch.nn.Module, str]:
    """Build an S2Former and load ``weights`` into it: :func:`open_network` with assumed values allowed.

    Args:
        weights: Checkpoint path (BasicSR ``params_ema``/``params``, official, plain state dict or safetensors).
        config: S2Former kwargs, a YAML/JSON file holding them, or ``None`` to take them from the checkpoint's
            recorded configuration or infer them from the weights.

    Returns:
        The network in eval mode and a short description of what was loaded.

    Raises:
        InferError: missing or unreadable weights, a bad config, or weights that do not fit the config.
    """
    loaded = open_network(weights, config)
    return loaded.net, loaded.used


def pick_device(name: str, option: str = '--device') -> torch.device:
    """The one device picker: ``auto`` is CUDA when available, else the CPU.

    Raises:
        ValueError: ``cuda`` without CUDA, or an unknown name; one line naming ``option``.
    """
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name not in ('cpu', 'cuda'):
        raise ValueError(f'{option}: expected auto, cpu or cuda, got {name!r}')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'{option}: cuda requested but CUDA is not available')
    return torch.device(name)


def _scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype in (np.float32, np.float64):
        return 1.0
    raise ValueError(f'unsupported pixel type {dtype}')


def _from_float(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    scale = _scale(dtype)
    x = np.clip(x, 0.0, 1.0)
    if scale == 1.0:
        return x.astype(dtype)
    return np.rint(x * scale).astype(dtype)


def derain_array(
    img: np.ndarray,
    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Derain one image as read by ``cv2.imread(..., IMREAD_UNCHANGED)``; same shape and dtype out.

    Args:
        img: ``H x W`` (gray), ``H x W x 3`` (BGR) or ``H x W x 4`` (BGRA), uint8/uint16/float.
        run: Maps a ``1 x 3 x H x W`` RGB float tensor in [0, 1] to ``(image, uncertainty or None)``; the
            uncertainty is ``1 x K x H x W`` (e.g. the five scales of :func:`stack_uncertainties`, ``K = 15``).

    Returns:
        The derained image (alpha copied from the input) and the uncertainty (``H x W x K`` float) or ``None``.

    Raises:
        NonFiniteOutput: The network produced NaN or inf.
    """
    scale = _scale(img.dtype)
    gray = img.ndim == 2 or img.shape[2] == 1
    alpha = img[..., 3:] if img.ndim == 3 and img.shape[2] == 4 else None
    if gray:
        bgr = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    else:
        bgr = img[..., :3]
    rgb = np.ascontiguousarray(bgr[..., ::-1]).astype(np.float32) / scale
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    out, unc = run(x)
    if not torch.isfinite(out).all():  # would be cast to black or white pixels without a word
        raise NonFiniteOutput(f'network output holds {int((~torch.isfinite(out)).sum())} NaN/inf values')
    out_rgb = out[0].permute(1, 2, 0).float().numpy()
    out_bgr = np.ascontiguousarray(out_rgb[..., ::-1])
    if gray:
        # Clip and quantise the colour output first, then convert: the grey output is exactly the grey conversion
        # of the colour output (converting first would let out-of-range channels cancel). OpenCV has no float64
        # conversion, float32 is exact enough for it.
        colour = _from_float(out_bgr, np.float32 if img.dtype == np.float64 else img.dtype)
        res = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(img.dtype).reshape(img.shape)
    else:
        res = _from_float(out_bgr, img.dtype)
        if alpha is not None:
            res = np.concatenate([res, alpha], axis=2)
    unc_np = None if unc is None else unc[0].permute(1, 2, 0).float().numpy()
    return np.ascontiguousarray(res), unc_np


#: Scale names of ``S2Former(x, return_all=True)``'s uncertainty list, in its order, and each one's downscale factor.
UNCERTAINTY_SCALES = (('final', 1), ('full', 1), ('half', 2), ('quarter', 4), ('eighth', 8))


def stack_uncertainties(uncertainties: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The five uncertainty maps as one ``B x 5C x H x W`` float32 tensor at the image's size, for tiling.

    A 1/s-scale map (``ceil(H/s) x ceil(W/s)``) is repeated ``s x s`` (nearest) and cropped to ``H x W``:
    :func:`unstack_uncertainties` takes every ``s``-th pixel back, exactly the network's map for a whole image
    (with tiles, the blended tiles' maps sampled on the scale's grid).
    """
    if len(uncertainties) != len(UNCERTAINTY_SCALES):
        raise ValueError(f'expected {len(UNCERTAINTY_SCALES)} uncertainty maps, got {len(uncertainties)}')
    h, w = size
    full = []
    for u, (_, s) in zip(uncertainties, UNCERTAINTY_SCALES):
        u = u.float()
        if s > 1:
            u = u.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
        full.append(u[..., :h, :w])
    return torch.cat(full, dim=1)


def unstack_uncertainties(stacked: np.ndarray) -> dict[str, np.ndarray]:
    """``{scale: C x h_s x w_s float32}`` from the ``H x W x 5C`` array :func:`derain_array` returns for a
    :func:`stack_uncertainties` tensor (scales ``final``, ``full``, ``half``, ``quarter``, ``eighth``)."""
    k = stacked.shape[2] // len(UNCERTAINTY_SCALES) if stacked.ndim == 3 else 0
    if k == 0 or k * len(UNCERTAINTY_SCALES) != stacked.shape[2]:
        raise ValueError(f'expected H x W x {len(UNCERTAINTY_SCALES)}C stacked maps, got shape {stacked.shape}')
    out = {}
    for i, (name, s) in enumerate(UNCERTAINTY_SCALES):
        part = stacked[::s, ::s, i * k : (i + 1) * k]
        out[name] = np.ascontiguousarray(part.transpose(2, 0, 1), dtype=np.float32)
    return out


#: Smallest tile an out-of-memory retry goes down to (the paper network pads tiles to multiples of 64).
MIN_RETRY_TILE = 64


class OutOfMemorySkip(Exception):
    """An image for which no tile size down to :data:`MIN_RETRY_TILE` fits in GPU memory."""


def retry_out_of_memory(run_tiled: Callable[[int], Any], tile: int, overlap: int, size: tuple[int, int]) -> Any:
    """``run_tiled(tile)``; after an out-of-memory error (CUDA, or the CPU allocator's), free the cache and retry
    with half the tile (the whole image, ``tile`` 0: half its longer side), down to :data:`MIN_RETRY_TILE`. Each
    retry is reported on stderr, one line.

    Args:
        run_tiled: Runs the image with the given tile size (0: whole image).
        tile: The first tile size.
        overlap: Tile overlap: a retry tile must stay larger.
        size: The image's ``(H, W)``.

    Raises:
        OutOfMemorySkip: even the smallest tile does not fit.
    """
    from tqdm import tqdm

    while True:
        try:
            return run_tiled(tile)
        except torch.OutOfMemoryError:
            where = 'GPU'  # leave the except block first: its traceback holds the failed pass's tensors
        except RuntimeError as exc:
            if 'DefaultCPUAllocator' not in str(exc):  # the CPU's out-of-memory error is a plain RuntimeError
                raise
            where = 'CPU'
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        smaller = (tile or max(size)) // 2
        if smaller < MIN_RETRY_TILE or smaller <= overlap:
            raise OutOfMemorySkip(f'out of {where} memory even with tile {tile or "off"}')
        tqdm.write(
            f'infer: out of {where} memory with tile {tile or "off"} on a {size[1]}x{size[0]} image: '
            f'{"cache freed, " if where == "GPU" else ""}retrying with tile {smaller}',
            file=sys.stderr,
        )
        tile = smaller
