"""Verification of the LMDB converter's output: every stored pair decoded and compared with its source images.

Used by ``create_lmdb --verify`` (right after a conversion) and ``--verify-only OUT`` (a finished output, its
sources listed again from ``OUT/create_lmdb.json``); nothing is written.
"""

from __future__ import annotations

import json
import os

import cv2
import lmdb
import numpy as np

from .. import imageio
from .layouts import LayoutError, Pair, find_pairs
from .lmdb_report import ConvertError, ConvertReport
from .lmdb_workers import ordered_map, read_image, with_progress
from .lmdb_writer import STATE, error_reason

__all__ = ['verify', 'verify_existing']

_verify_envs: dict[str, lmdb.Environment] = {}


def _verify_pair(args: tuple[str, Pair]) -> str | None:
    out, pair = args
    for side, src in (('lq', pair.lq_path), ('gt', pair.gt_path)):
        path = os.path.join(out, f'{side}.lmdb')
        env = _verify_envs.get(path)
        if env is None:  # one read-only handle per process (lmdb handles must not cross a fork)
            env = _verify_envs[path] = lmdb.open(path, readonly=True, lock=False, readahead=False)
        with env.begin() as txn:
            value = txn.get(pair.key.encode('ascii'))
        if value is None:
            return f'{side}.lmdb: key {pair.key} missing ({src})'
        try:
            stored = imageio.decode(value, f'{side}.lmdb: key {pair.key}', cv2.IMREAD_COLOR)
            source = read_image(src)
        except ValueError as e:
            return str(e)
        if stored.shape != source.shape or not np.array_equal(stored, source):
            return f'{side}.lmdb: key {pair.key} differs from {src}'
    return None


def verify(output: str, pairs: list[Pair], workers: int = 0, progress: bool = True) -> list[str]:
    """Decode every stored pair and compare it pixel by pixel with its source images.

    Args:
        output: Folder holding ``lq.lmdb`` and ``gt.lmdb``.
        pairs: The pairs to check (keys and source paths).
        workers: Processes.
        progress: Show a tqdm bar.

    Returns:
        One line per pair that is missing or differs (empty when all match).
    """
    results = ordered_map(_verify_pair, [(output, p) for p in pairs], workers)
    errors = [r for r in with_progress(results, len(pairs), 'verify', progress) if r is not None]
    _verify_envs.clear()
    return errors


def verify_existing(output: str, workers: int = 0, progress: bool = True) -> ConvertReport:
    """Check a finished conversion in ``output`` against its sources (options from ``output/create_lmdb.json``).

    Every key of ``meta_info.txt`` must have its source pair, and every stored image must equal its source.

    Args:
        output: Folder of a finished conversion.
        workers: Processes.
        progress: Show a tqdm bar.

    Returns:
        A report with ``verified`` and ``verify_errors`` (one line per missing or differing pair).

    Raises:
        ConvertError: ``output`` is not a finished conversion of this tool, or its sources cannot be listed.
    """
    try:
        with open(os.path.join(output, STATE)) as f:
            state = json.load(f)
        with open(os.path.join(output, 'lq.lmdb', 'meta_info.txt'), encoding='ascii') as f:
            keys = [line.split(' ')[0].rsplit('.', 1)[0] for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise ConvertError(
            f'--verify-only: {output} is not a finished create_lmdb output ({error_reason(e)})'
        ) from None
    if state.get('status') not in ('done', 'verify_failed'):
        raise ConvertError(f'--verify-only: {output} holds an unfinished conversion; rerun it first')
    o = state.get('options', {})
    try:
        scan = find_pairs(
            o['layout'], o['input'], split=o['split'], subset=o['subset'], lq_dir=o['lq_dir'], gt_dir=o['gt_dir'],
            template=o['template'],
        )  # fmt: skip
    except (LayoutError, KeyError) as e:
        raise ConvertError(f'--verify-only: cannot list the sources of {output} ({e})') from None
    by_key = {p.key: p for p in scan.pairs}
    report = ConvertReport(output=output, pairs_found=len(scan.pairs), written=len(keys))
    report.verify_errors = [f'key {k}: its source pair is gone from {scan.root}' for k in keys if k not in by_key]
    report.verify_errors += verify(output, [by_key[k] for k in keys if k in by_key], workers, progress)
    report.verified = len(keys)
    return report
