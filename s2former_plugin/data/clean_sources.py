"""The clean images synthetic rain is drawn on: scikit-image's bundled photos, or the images of a folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import cv2
import numpy as np

from .. import imageio
from .layouts import IMAGE_EXTENSIONS, natural_key

__all__ = ['SKIMAGE_PHOTOS', 'load_clean_images', 'load_skimage_photos']

# Colour photographs bundled with scikit-image (no download needed): a person, a cup, a cat, a rocket launch.
SKIMAGE_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')


def load_skimage_photos(names: tuple[str, ...] | list[str] = SKIMAGE_PHOTOS) -> list[tuple[str, np.ndarray]]:
    """The named scikit-image sample photos as ``(name, BGR uint8 image)``.

    Raises:
        ValueError: A name that is not a bundled colour photo.
    """
    import skimage.data

    photos = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        try:
            rgb = loader() if callable(loader) else None
        except Exception as e:  # some skimage images need a download (pooch); no network here
            raise ValueError(f'skimage image {name!r} is not available offline ({type(e).__name__})') from None
        if rgb is None or rgb.ndim != 3 or rgb.shape[2] < 3:
            raise ValueError(f'skimage image {name!r} is not a colour photo; use some of {", ".join(SKIMAGE_PHOTOS)}')
        photos.append((name, np.ascontiguousarray(rgb[..., 2::-1])))
    return photos


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load_clean_images(source: str, log: Callable[[str], None] = _to_stderr) -> list[tuple[str, np.ndarray]]:
    """The clean images of ``source`` as ``(stem, BGR uint8 image)``, in natural file-name order.

    Args:
        source: A folder of images, or ``skimage`` for :data:`SKIMAGE_PHOTOS`.
        log: Where a ``skipped: <file>: <reason>`` line goes for each unreadable or damaged image.

    Returns:
        At least one image.

    Raises:
        ValueError: ``source`` is neither a folder nor ``skimage``, or holds no readable image.
    """
    if source == 'skimage':
        return load_skimage_photos()
    if not os.path.isdir(source):
        raise ValueError(f"--input: {source} is neither a folder nor 'skimage'")
    out = []
    for name in sorted(os.listdir(source), key=natural_key):
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            path = os.path.join(source, name)
            try:
                img = imageio.read(path, cv2.IMREAD_COLOR)
            except imageio.ImageError as e:
                log(f'skipped: {e}')
                continue
            out.append((os.path.splitext(name)[0], img))
    if not out:
        raise ValueError(f'--input: no images in {source}')
    return out
