"""Start-up checks of the datasets a training run will read, before basicsr builds a loader.

basicsr's ``PairedImageDataset`` fails late and loudly on data it cannot use: a missing ``meta_info.txt`` (an LMDB
left by a killed conversion) is a ``FileNotFoundError`` traceback, a key missing from the database a ``TypeError``
inside a DataLoader worker hours into a run, LQ and GT of different sizes a crop error, an empty folder a
``ZeroDivisionError``; validation images smaller than SSIM's window fail at the first validation. :func:`check_datasets`
finds each of these at start-up and raises :class:`DatasetError`, one line naming the option and the file or key.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import OptionError
from ..imageio import IMAGE_EXTENSIONS

__all__ = ['DatasetError', 'check_datasets', 'lmdb_entries', 'min_image_size']

LEDGER = '.create_lmdb.ledger'  # left beside lq.lmdb/gt.lmdb by an interrupted create_lmdb (data/lmdb_writer.py)
_META = re.compile(r'^(\S+?)\.\S*\s+\((\d+),\s*(\d+)(?:,\s*(\d+))?\)')


class DatasetError(OptionError):
    """A dataset a run will read is missing, unfinished, inconsistent or unusable (one line)."""


def lmdb_entries(folder: str, where: str) -> dict[str, tuple[int, int]]:
    """``{key: (h, w)}`` of an LMDB written for basicsr, checked against the database's own keys.

    Raises:
        DatasetError: Not an LMDB folder, no ``meta_info.txt`` (an unfinished conversion), a key listed there but
            absent from the database, or no entry at all.
    """
    import lmdb

    if not os.path.isdir(folder):
        raise DatasetError(f'{where}: {folder} does not exist')
    if not os.path.isfile(os.path.join(folder, 'data.mdb')):
        raise DatasetError(f'{where}: {folder} is not an LMDB (no data.mdb)')
    meta = os.path.join(folder, 'meta_info.txt')
    if not os.path.isfile(meta):
        unfinished = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(folder)), LEDGER))
        why = (
            'a conversion that was interrupted: run the same create_lmdb command again to finish it'
            if unfinished
            else 'not written by create_lmdb?'
        )
        raise DatasetError(f'{where}: {folder} has no meta_info.txt ({why})')
    entries: dict[str, tuple[int, int]] = {}
    with open(meta, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _META.match(line)
            if m is None:
                raise DatasetError(f'{where}: {meta} line {n} is not "<key>.<ext> (h,w,c) <level>": {line.strip()!r}')
            entries[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    if not entries:
        raise DatasetError(f'{where}: {meta} lists no image (an empty dataset)')
    env = lmdb.open(folder, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            stored = {bytes(k).decode('ascii', 'replace') for k in txn.cursor().iternext(keys=True, values=False)}
    finally:
        env.close()
    absent = [k for k in entries if k not in stored]
    if absent:
        raise DatasetError(
            f'{where}: {len(absent)} key(s) of {meta} are not in the database (e.g. {absent[0]}); convert it again'
        )
    return entries


def _folder_sizes(folder: str, where: str, need_sizes: bool) -> dict[str, tuple[int, int] | None]:
    """``{file name: (h, w) or None}`` of the images in a folder (sizes read from the headers when asked)."""
    if not os.path.isdir(folder):
        raise DatasetError(f'{where}: {folder} does not exist')
    names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    if not names:
        raise DatasetError(f'{where}: {folder} holds no image (an empty dataset)')
    if not need_sizes:
        return dict.fromkeys(names)
    from PIL import Image

    sizes: dict[str, tuple[int, int] | None] = {}
    for n in names:
        try:
            with Image.open(os.path.join(folder, n)) as im:
                sizes[n] = (im.height, im.width)
        except Exception:  # noqa: BLE001 - unreadable here; imageio names it when the image is read
            sizes[n] = None
    return sizes


def min_image_size(metrics: dict[str, Any] | None) -> tuple[int, str] | None:
    """The smallest side validation images need for ``val:metrics`` and the metric that needs it."""
    need: tuple[int, str] | None = None
    for name, mopt in (metrics or {}).items():
        if not isinstance(mopt, dict):
            continue
        metric = str(mopt.get('metric', mopt.get('type', name))).lower()
        crop = int(mopt.get('crop_border', 0) or 0)
        side = 11 + 2 * crop if 'ssim' in metric else 96 if 'niqe' in metric else 1 + 2 * crop
        if need is None or side > need[0]:
            need = (side, f'val:metrics:{name}')
    return need


def _check_paired(where: str, dopt: dict, scale: int, min_side: tuple[int, str] | None, is_val: bool) -> None:
    lq, gt = dopt.get('dataroot_lq'), dopt.get('dataroot_gt')
    if not lq or not gt:
        return  # basicsr's own message names the missing key
    backend = (dopt.get('io_backend') or {}).get('type', 'disk')
    if backend == 'lmdb':
        lq_e, gt_e = lmdb_entries(lq, f'{where}:dataroot_lq'), lmdb_entries(gt, f'{where}:dataroot_gt')
        only = sorted(set(lq_e) ^ set(gt_e))
        if only:
            raise DatasetError(f'{where}: {len(only)} key(s) are in only one of {lq} and {gt} (e.g. {only[0]})')
        sizes = {k: (lq_e[k], gt_e[k]) for k in gt_e}
    elif backend == 'disk' and not dopt.get('meta_info_file'):
        lq_s, gt_s = (
            _folder_sizes(lq, f'{where}:dataroot_lq', is_val),
            _folder_sizes(gt, f'{where}:dataroot_gt', is_val),
        )
        tmpl = dopt.get('filename_tmpl', '{}')
        sizes = {}
        for name, b in gt_s.items():
            base, ext = os.path.splitext(name)
            lq_name = f'{tmpl.format(base)}{ext}'
            if lq_name not in lq_s:
                raise DatasetError(f'{where}: {name} of {gt} has no {lq_name} in {lq} (filename_tmpl {tmpl!r})')
            sizes[name] = (lq_s[lq_name], b)
    else:
        return
    for key, (a, b) in sizes.items():
        if a is not None and b is not None and (a[0] * scale, a[1] * scale) != b:
            raise DatasetError(
                f'{where}: {key}: LQ {a[1]}x{a[0]} and GT {b[1]}x{b[0]} differ (scale {scale}); every pair must match'
            )
        if min_side is not None and b is not None and min(b) < min_side[0]:
            raise DatasetError(
                f'{where}: {key} is {b[1]}x{b[0]}, smaller than the {min_side[0]} pixels {min_side[1]} needs '
                '(it would fail at the first validation)'
            )


def check_datasets(opt: dict) -> None:
    """Check every ``datasets:`` entry a run will read (basicsr's ``PairedImageDataset``; the plugin's own datasets
    check themselves when built).

    Raises:
        DatasetError: The first problem found, naming ``datasets:<name>`` and the file or key.
    """
    scale = int(opt.get('scale', 1) or 1)
    min_side = min_image_size((opt.get('val') or {}).get('metrics'))
    for name, dopt in (opt.get('datasets') or {}).items():
        if not isinstance(dopt, dict) or dopt.get('type') != 'PairedImageDataset':
            continue
        is_val = name.split('_')[0] == 'val' or dopt.get('phase') == 'val'
        _check_paired(f'datasets:{name}', dopt, scale, min_side if is_val else None, is_val)
