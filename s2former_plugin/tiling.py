"""Tiled inference with blended overlaps: the one mechanism used by validation, ``infer`` and the benchmarks.

A network is applied to overlapping tiles of an image; the tile outputs are accumulated with a smooth weight
window (raised-cosine ramps across each overlap, flat elsewhere) and normalised by the accumulated weight. The
window is separable; each ramp starts with a few zero-weight pixels (the tile border, where a network sees
padding), chosen so that every pixel still gets positive total weight. A network that returns its input (or a
constant) is reproduced exactly (accumulation runs in float64), and a network whose receptive-field radius is at
most ``blend_margin(tile, overlap)`` (``overlap // 4`` for usual settings) matches its whole-image output up to
float rounding.

Memory stays bounded by one tile batch on the compute device plus the output accumulators (which may live on
another device, e.g. the CPU while tiles run on a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ['BLENDS', 'check_tiling', 'tile_starts', 'ramp_window', 'blend_margin', 'tiled_forward']

BLENDS = ('cosine', 'official')

TileFn = Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]]


def check_tiling(
    tile: int | None,
    overlap: int,
    blend: str = 'cosine',
    tile_batch: int = 1,
    names: tuple[str, str, str, str] = ('tile', 'tile_overlap', 'blend', 'tile_batch'),
) -> None:
    """The one check of tiling arguments (infer's flags, ``val:`` options, the benchmark's ``eval:`` block).

    Args:
        tile: Tile size; 0 or ``None``: whole images.
        overlap: Overlap of neighbouring tiles; smaller than ``tile``.
        blend: One of :data:`BLENDS`.
        tile_batch: Tiles per forward pass, at least 1.
        names: How the caller calls the four arguments, for the message (``--tile``, ``val:tile``, ...).

    Raises:
        ValueError: One line naming the option.
    """
    n_tile, n_overlap, n_blend, n_batch = names

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if tile is not None and (not is_int(tile) or tile < 0):
        raise ValueError(f'{n_tile}: expected an integer >= 0 (0 or ~: whole images), got {tile!r}')
    if not is_int(overlap) or overlap < 0:
        raise ValueError(f'{n_overlap}: expected an integer >= 0, got {overlap!r}')
    if tile and overlap >= tile:
        raise ValueError(f'{n_overlap}: ({overlap}) must be smaller than {n_tile} ({tile})')
    if not is_int(tile_batch) or tile_batch < 1:
        raise ValueError(f'{n_batch}: expected an integer >= 1, got {tile_batch!r}')
    if blend not in BLENDS:
        raise ValueError(f'{n_blend}: {blend!r} is not one of {", ".join(BLENDS)}')


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis; the last tile is aligned to the border.

    Args:
        size: Length of the axis.
        tile: Tile length (clamped to ``size``).
        overlap: Overlap between neighbouring tiles (``0 <= overlap < tile``).

    Returns:
        Sorted, distinct start offsets; ``[0]`` when one tile covers the axis.
    """
    tile = min(tile, size)
    if tile >= size:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f'tile overlap ({overlap}) must be smaller than the tile size ({tile})')
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def ramp_window(
    length: int, ramp: int, left: bool, right: bool, margin: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """1-D blending window: 1 in the middle, ramps of ``ramp`` samples on the requested sides.

    A ramp is ``margin`` zeros (the tile's outermost pixels, where a network sees zero padding instead of the
    neighbouring content) followed by a raised cosine ``0.5 - 0.5 cos(pi i / (n + 1))``, ``i = 1..n``, that rises
    towards 1 without reaching 0 or 1. Sides on the image border get no ramp.

    Args:
        length: Window length (the tile length).
        ramp: Ramp length in samples (clamped to ``length``).
        left: Ramp up at the start.
        right: Ramp down at the end.
        margin: Leading zero samples of each ramp (clamped to ``ramp - 1``).
        dtype: Window dtype.

    Returns:
        Tensor of shape ``(length,)``.
    """
    w = torch.ones(length, dtype=dtype)
    ramp = min(ramp, length)
    if ramp > 0:
        margin = max(0, min(margin, ramp - 1))
        n = ramp - margin
        up = torch.zeros(ramp, dtype=dtype)
        up[margin:] = 0.5 - 0.5 * torch.cos(math.pi * torch.arange(1, n + 1, dtype=dtype) / (n + 1))
        if left:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if right:
            w[length - ramp :] = torch.minimum(w[length - ramp :], up.flip(0))
    return w


def blend_margin(tile: int, overlap: int) -> int:
    """Zero-weight margin used inside each ramp: ``min(overlap // 4, tile - overlap)``.

    With this bound a pixel in one tile's margin always lies in a neighbouring tile's positive-weight part, so
    the normalising weight is positive everywhere while the outermost pixels of every inner tile edge (the ones
    a network with receptive-field radius ``<= margin`` computes from padding) are ignored.
    """
    return max(0, min(overlap // 4, tile - overlap))


def _as_tuple(out) -> tuple[tuple[torch.Tensor, ...], bool]:
    if isinstance(out, torch.Tensor):
        return (out,), True
    if isinstance(out, (list, tuple)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out), False
    raise TypeError(f'tile function must return a tensor or a tuple of tensors, got {type(out).__name__}')


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def tiled_forward(
    fn: TileFn,
    x: torch.Tensor,
    tile: int | None,
    overlap: int = 32,
    *,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    tile_batch: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    blend: str = 'cosine',
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Apply ``fn`` to ``x`` tile by tile and blend the tiles back into whole-image outputs.

    Args:
        fn: Maps a ``B x C x h x w`` tile to a tensor, or a tuple/list of tensors, each ``B' x C' x h x w`` (the
            tile's spatial size; channels may differ, e.g. ``(image, uncertainty)``). With ``tile_batch > 1``,
            ``B'`` is ``k * B`` for ``k`` stacked tiles.
        x: ``B x C x H x W`` (or ``C x H x W``) input.
        tile: Tile edge in pixels; ``None`` or ``0`` (or an image no larger than one tile) runs the whole image.
            Tiles are clamped per axis to the image size, so thin images get thin tiles.
        overlap: Overlap of neighbouring tiles in pixels (``< tile``), blended with raised-cosine ramps.
        device: Device the tiles are sent to before ``fn`` (default: ``x.device``).
        out_device: Device of the accumulators and the results (default: ``x.device``).
        tile_batch: Number of tiles stacked into one ``fn`` call.
        on_tile: Called as ``on_tile(done, total)`` after each ``fn`` call.
        blend: ``cosine`` (default: the raised-cosine ramps above) or ``official``: what the official UDR-S2Former
            test script does, square tiles of ``min(tile, H, W)`` averaged with equal weights, for reproducing its
            numbers exactly.

    Returns:
        Whatever ``fn`` returns (a tensor or a tuple of tensors) for the whole image, float32 (float64 if ``fn``
        returns float64), on ``out_device``; ``C x H x W`` outputs for a ``C x H x W`` input.
    """
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f'expected a B x C x H x W tensor, got shape {tuple(x.shape)}')
    if overlap < 0:
        raise ValueError(f'tile overlap must be >= 0, got {overlap}')
    if tile_batch < 1:
        raise ValueError(f'tile_batch must be >= 1, got {tile_batch}')
    if blend not in BLENDS:
        raise ValueError(f'tile blend must be one of {", ".join(BLENDS)}, got {blend!r}')
    device = torch.device(device) if device is not None else x.device
    out_device = torch.device(out_device) if out_device is not None else x.device
    b, _, h, w = x.shape

    def finish(outs: tuple[torch.Tensor, ...], single: bool):
        outs = tuple(o.to(out_device, _result_dtype(o.dtype)) for o in outs)
        if squeeze:
            outs = tuple(o.squeeze(0) for o in outs)
        return outs[0] if single else outs

    # One tile covers the image: run it whole. The official script tiles with square tiles of min(tile, h, w),
    # so in its mode only square images no larger than a tile are whole.
    if not tile or (h == w <= tile if blend == 'official' else (h <= tile and w <= tile)):
        outs, single = _as_tuple(fn(x.to(device)))
        for o in outs:
            if o.shape[-2:] != (h, w):
                raise ValueError(f'tile function changed the spatial size: {tuple(x.shape)} -> {tuple(o.shape)}')
        if on_tile is not None:
            on_tile(1, 1)
        return finish(outs, single)

    th, tw = (min(tile, h, w),) * 2 if blend == 'official' else (min(tile, h), min(tile, w))
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    boxes = [(y, x0) for y in ys for x0 in xs]
    total = math.ceil(len(boxes) / tile_batch)
    weight = torch.zeros(h, w, dtype=torch.float64, device=out_device)
    acc: list[torch.Tensor] | None = None
    single = True
    for k in range(total):
        chunk = boxes[k * tile_batch : (k + 1) * tile_batch]
        tiles = torch.cat([x[..., y : y + th, x0 : x0 + tw] for y, x0 in chunk], 0).to(device)
        outs, single = _as_tuple(fn(tiles))
        if acc is None:
            acc = []
            for o in outs:
                if o.shape[0] != tiles.shape[0] or o.shape[-2:] != (th, tw):
                    raise ValueError(
                        f'tile function must keep the batch and spatial size: {tuple(tiles.shape)} -> {tuple(o.shape)}'
                    )
                acc.append(torch.zeros(b, *o.shape[1:-2], h, w, dtype=torch.float64, device=out_device))
        for j, (y, x0) in enumerate(chunk):
            ramp = 0 if blend == 'official' else overlap  # no ramps: equal weights
            wy = ramp_window(th, ramp, y > 0, y + th < h, blend_margin(th, overlap)).to(out_device)
            wx = ramp_window(tw, ramp, x0 > 0, x0 + tw < w, blend_margin(tw, overlap)).to(out_device)
            win = wy[:, None] * wx[None, :]
            weight[y : y + th, x0 : x0 + tw] += win
            for a, o in zip(acc, outs):
                part = o[j * b : (j + 1) * b].to(out_device, torch.float64)
                a[..., y : y + th, x0 : x0 + tw] += part * win
        if on_tile is not None:
            on_tile(k + 1, total)
    if not bool((weight > 0).all()):  # guaranteed by blend_margin; cheap to check
        raise RuntimeError('tiled_forward: some pixels got no positive blending weight')
    dtypes = [_result_dtype(o.dtype) for o in outs]
    results = tuple(a.div_(weight).to(dt) for a, dt in zip(acc, dtypes))
    if squeeze:
        results = tuple(r.squeeze(0) for r in results)
    return results[0] if single else results
