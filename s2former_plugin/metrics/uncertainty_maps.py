"""The files of the uncertainty measures: raw uncertainty maps (written, read, brought to the image's size) and
rain masks.

Raw maps are what ``python -m s2former_plugin.infer --save-uncertainty`` writes beside the colour PNGs:
``<name>.npz`` with float32 arrays ``final``, ``full``, ``half``, ``quarter``, ``eighth`` (:data:`.uncertainty.SCALES`),
each ``C x h x w`` (``C = 3``: one map per RGB channel; scale ``1/s`` is ``ceil(H/s) x ceil(W/s)``). A ``.npy`` file
holding one ``H x W`` or ``C x H x W`` map is accepted too. Colour-mapped PNGs are refused: their 8-bit,
per-image-stretched values are not the network's.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import first_line
from .uncertainty import DEFAULT_SCALE, SCALES, UncertaintyError

__all__ = [
    'MAP_EXTENSIONS',
    'SCALE_FACTORS',
    'load_raw_maps',
    'map_at_image_size',
    'raw_map_name',
    'read_map',
    'read_mask',
    'save_raw_maps',
]

#: Raw map files (``.npz``: the five named scales; ``.npy``: one map).
MAP_EXTENSIONS = ('.npz', '.npy')
#: Downscale factor of each scale.
SCALE_FACTORS = {'final': 1, 'full': 1, 'half': 2, 'quarter': 4, 'eighth': 8}


def raw_map_name(image_name: str) -> str:
    """The raw map file of an output image: ``a.png`` -> ``a.npz`` (``a.png.png`` -> ``a.png.npz``)."""
    return os.path.splitext(image_name)[0] + '.npz'


def save_raw_maps(path: str, maps: dict[str, np.ndarray]) -> None:
    """Write ``{scale: C x h x w}`` maps as float32 arrays into ``path`` (``.npz``; written whole, then renamed).

    Raises:
        ValueError: a scale name that is not one of :data:`SCALES`.
    """
    unknown = sorted(set(maps) - set(SCALES))
    if unknown:
        raise ValueError(f'unknown uncertainty scale {unknown[0]!r}; expected {", ".join(SCALES)}')
    tmp = f'{path}.part'
    with open(tmp, 'wb') as f:
        np.savez(f, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in maps.items()})
    os.replace(tmp, path)


def load_raw_maps(path: str) -> dict[str, np.ndarray]:
    """``{scale: float32 array}`` of a ``.npz`` raw map file (``allow_pickle=False``).

    Raises:
        UncertaintyError: missing, unreadable or not a file of named float arrays (the message names it).
    """
    if not os.path.isfile(path):
        raise UncertaintyError(f'{path}: uncertainty map not found')
    try:
        with np.load(path, allow_pickle=False) as z:
            maps = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip, pickle and format errors come in many types
        first = first_line(exc, 160)
        raise UncertaintyError(f'{path}: cannot read uncertainty maps ({type(exc).__name__}: {first})') from None
    for k, v in maps.items():
        if v.dtype.kind != 'f':
            raise UncertaintyError(f'{path}: map {k!r} is {v.dtype}, not float (raw maps are float32)')
    return maps


def read_map(path: str, scale: str = DEFAULT_SCALE) -> np.ndarray:
    """One raw map: the ``scale`` array of a ``.npz`` file, or the array of a ``.npy`` file (one map, any scale).

    Raises:
        UncertaintyError: an image file (a colour map is not a measurement), an unknown or absent scale, or an
            unreadable file.
    """
    if scale not in SCALES:
        raise UncertaintyError(f'scale: {scale!r} is not one of {", ".join(SCALES)}')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.npz':
        maps = load_raw_maps(path)
        if scale not in maps:
            raise UncertaintyError(f'{path}: no {scale!r} map (holds {", ".join(sorted(maps)) or "nothing"})')
        return maps[scale]
    if ext == '.npy':
        if not os.path.isfile(path):
            raise UncertaintyError(f'{path}: uncertainty map not found')
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise UncertaintyError(f'{path}: cannot read uncertainty map ({type(exc).__name__})') from None
        if arr.dtype.kind != 'f':
            raise UncertaintyError(f'{path}: map is {arr.dtype}, not float')
        return arr
    raise UncertaintyError(
        f'{path}: not a raw uncertainty map (.npz/.npy); colour-mapped pictures are not measured: '
        'infer --save-uncertainty writes <name>.npz beside them'
    )


def map_at_image_size(u: np.ndarray, scale: str, size: tuple[int, int], name: str = '') -> np.ndarray:
    """``u`` (``C x h x w`` or ``h x w``) at the image's ``size = (H, W)``: a ``1/s`` scale map must be
    ``ceil(H/s) x ceil(W/s)`` and is repeated ``s x s`` (nearest), each of its pixels standing for its block.

    Raises:
        UncertaintyError: the map's size does not fit the image at that scale (naming ``name``).
    """
    s = SCALE_FACTORS[scale]
    h, w = size
    want = (-(-h // s), -(-w // s))
    if u.ndim not in (2, 3) or u.shape[-2:] != want:
        got = f'{u.shape[-1]}x{u.shape[-2]}' if u.ndim in (2, 3) else f'of shape {u.shape}'
        raise UncertaintyError(
            f'{name}: {scale} uncertainty map is {got}, expected {want[1]}x{want[0]} for a {w}x{h} image'
        )
    if s > 1:
        u = np.repeat(np.repeat(u, s, axis=-2), s, axis=-1)[..., :h, :w]
    return u


def read_mask(path: str) -> np.ndarray:
    """A rain mask image as ``H x W`` bool (any non-zero pixel, in any channel, is rain).

    Raises:
        UncertaintyError: unreadable (the message names the file).
    """
    from .. import imageio

    try:
        m = imageio.read(path)
    except ValueError as exc:
        raise UncertaintyError(f'rain mask: {exc}') from None
    return (m.max(axis=2) if m.ndim == 3 else m) > 0
