"""Synthetic rain written as a paired folder: ``OUT/lq`` (rainy), ``OUT/gt`` (clean) and ``OUT/mask`` (where).

The folder is what the ``paired`` layout reads. No run may write into its input, and an earlier run's images are
replaced only on request (``overwrite``), all of them, so no stale pair lingers beside the new ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import numpy as np

from .. import imageio
from .layouts import IMAGE_EXTENSIONS
from .rain_synthesis import add_rain

__all__ = ['SUBFOLDERS', 'output_problem', 'prepare_output', 'render_pairs', 'write_pair']

SUBFOLDERS = ('lq', 'gt', 'mask')


def output_problem(source: str, output: str, overwrite: bool) -> str | None:
    """Why ``output`` may not be written for ``source``.

    Args:
        source: The ``--input`` folder, or ``skimage``.
        output: The output folder.
        overwrite: An earlier run's images may be replaced.

    Returns:
        One line naming the folder and what to do, or ``None``: it may be written.
    """
    if os.path.exists(output) and not os.path.isdir(output):
        return f'--output: {output} exists and is not a folder'
    if source != 'skimage':
        src = os.path.realpath(source)
        for sub in ('lq', 'gt'):
            out = os.path.realpath(os.path.join(output, sub))
            if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
                return f'--output: {os.path.join(output, sub)} would overlap the input folder {source}; choose another'
    for sub in SUBFOLDERS:  # an earlier run's masks too: beside new pairs they would describe other rain
        folder = os.path.join(output, sub)
        if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
            return f'--output: {folder} is not empty; pass --overwrite to replace its images'
    return None


def _clear_previous(folder: str) -> int:
    removed = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(path):
            os.remove(path)
            removed += 1
    return removed


def prepare_output(output: str, masks: bool) -> int:
    """Delete the images an earlier run left in ``output``'s subfolders and create the ones this run writes.

    Args:
        output: A folder :func:`output_problem` accepted.
        masks: ``OUT/mask`` is written too.

    Returns:
        The number of images removed.

    Raises:
        OSError: A folder cannot be cleared or created.
    """
    removed = sum(_clear_previous(os.path.join(output, sub)) for sub in SUBFOLDERS)
    for sub in SUBFOLDERS if masks else SUBFOLDERS[:2]:
        os.makedirs(os.path.join(output, sub), exist_ok=True)
    return removed


def render_pairs(
    sources: list[tuple[str, np.ndarray]], *, mode: str, seed: int, per_image: int, crop: int, max_side: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Make ``per_image`` rainy versions of every clean image, one at a time.

    Each version has its own generator, seeded with ``[seed, image index, version]``: the same arguments give the
    same pairs, and one image's rain does not depend on the others.

    Args:
        sources: ``(name, clean image)`` pairs.
        mode: ``streak``, ``drop`` or ``both``.
        seed: Base seed.
        per_image: Rainy versions per clean image (their stems get ``_<k>`` when more than one).
        crop: Random square crop of this size (0: the whole image).
        max_side: Downscale so the longer side is at most this first (0: keep the size).

    Yields:
        ``(stem, clean, rainy, mask)``; the mask is ``(h, w)`` bool, true where rain was drawn.
    """
    for i, (name, clean) in enumerate(sources):
        if max_side and max(clean.shape[:2]) > max_side:
            s = max_side / max(clean.shape[:2])
            clean = cv2.resize(clean, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        for k in range(per_image):
            rng = np.random.default_rng([seed, i, k])
            gt = clean
            if crop:
                c = min(crop, *clean.shape[:2])
                top, left = rng.integers(0, clean.shape[0] - c + 1), rng.integers(0, clean.shape[1] - c + 1)
                gt = clean[top : top + c, left : left + c]
            lq, mask = add_rain(gt, rng, mode=mode, return_mask=True)
            yield (name if per_image == 1 else f'{name}_{k}'), gt, lq, mask


def write_pair(output: str, stem: str, gt: np.ndarray, lq: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write ``OUT/gt/<stem>.png``, ``OUT/lq/<stem>.png`` and, given a mask, ``OUT/mask/<stem>.png`` (255: rain).

    Raises:
        OSError: A file cannot be written (the message names it and the reason, e.g. disk full).
    """
    imageio.write(os.path.join(output, 'gt', f'{stem}.png'), gt)
    imageio.write(os.path.join(output, 'lq', f'{stem}.png'), lq)
    if mask is not None:
        imageio.write(os.path.join(output, 'mask', f'{stem}.png'), mask.astype(np.uint8) * 255)
