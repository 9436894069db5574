"""The LMDB converter's per-pair work in worker processes: reading images, the ordered pool map, the progress bar.

Images are decoded by :mod:`s2former_plugin.imageio` (damaged and truncated files are refused by name); the pool
uses ``spawn`` processes, and the parent process alone writes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

from .. import imageio

__all__ = ['ordered_map', 'read_image', 'with_progress']


def read_image(path: str) -> np.ndarray:
    """Decode an image as 8-bit BGR, exactly as basicsr's ``imfrombytes`` does for the disk backend.

    Args:
        path: Image file.

    Returns:
        ``uint8`` array ``(h, w, 3)``.

    Raises:
        ValueError: Unreadable, empty, truncated, damaged or undecodable file (``imageio.ImageError``: the message
            names the file and the reason).
    """
    return imageio.read(path, cv2.IMREAD_COLOR)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one decode per process; cv2's own threads would oversubscribe the cores


def ordered_map(func: Callable, items: list, workers: int) -> Iterator:
    """Ordered map, in a process pool when ``workers > 1``.

    Args:
        func: A module-level function (the pool pickles it by name).
        items: Its arguments, one per call.
        workers: Processes (0 or 1: in this process).

    Yields:
        ``func(item)`` for each item, in order.
    """
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    # spawn, not fork: a forked child inherits cv2's/OpenMP's thread pools mid-state and can hang in its first call.
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(func, items, chunksize=max(1, min(16, len(items) // (workers * 8))))


def with_progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """``iterable`` behind a tqdm bar of ``total`` pairs labelled ``desc`` (unchanged when not ``enabled``)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit='pair', dynamic_ncols=True)
