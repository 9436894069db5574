"""Selecting the benchmark's train/test pairs from a dataset layout and linking them into a working folder."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from s2former_plugin.options import check_keys

from .options import DATA_KEYS, BenchmarkError


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def parse_pairs(spec: Any, count: int, where: str) -> list[int]:
    """0-based indices from a 1-based ``pairs:`` spec (``'1-60'``, ``7``, a list of those, or ``None``: all)."""
    if spec is None or spec == 'all':
        return list(range(count))
    items = spec if isinstance(spec, list) else [spec]
    out: list[int] = []
    for item in items:
        m = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', str(item))
        if not m:
            raise BenchmarkError(f'{where}: {item!r} is not N or N-M (1-based positions)')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= count:
            raise BenchmarkError(f'{where}: {item!r} is outside 1-{count} (the folder has {count} pairs)')
        out.extend(range(lo - 1, hi))
    return list(dict.fromkeys(out))


def select_pairs(data_opt: dict, side: str) -> list:
    """The pairs of ``data:<side>`` (``train`` or ``test``): ``find_pairs`` on the merged keys, then ``pairs:``."""
    from s2former_plugin.data.layouts import LayoutError, find_pairs

    spec = {k: v for k, v in data_opt.items() if k in DATA_KEYS}
    side_opt = data_opt.get(side)
    if not isinstance(side_opt, dict):
        raise BenchmarkError(f'data:{side}: a mapping is required (e.g. {{pairs: 1-60}} or {{split: {side}}})')
    check_keys(side_opt, DATA_KEYS, f'data:{side}', error=BenchmarkError)
    spec.update(side_opt)
    root = spec.get('dataroot')
    if not root:
        raise BenchmarkError(f'data:dataroot: required (or data:{side}:dataroot; --data-root on the CLI)')
    if not os.path.isdir(root):
        raise BenchmarkError(f'data:dataroot: folder not found: {root}')
    try:
        scan = find_pairs(
            spec.get('layout', 'paired'),
            root,
            split=spec.get('split'),
            subset=spec.get('subset'),
            lq_dir=spec.get('lq_dir'),
            gt_dir=spec.get('gt_dir'),
            template=spec.get('template'),
        )
    except LayoutError as err:
        raise BenchmarkError(f'data:{side}:{err}') from None
    if not scan.pairs:
        raise BenchmarkError(f'data:{side}: no image pairs in {scan.root} (layout {spec.get("layout", "paired")})')
    return [scan.pairs[i] for i in parse_pairs(spec.get('pairs'), len(scan.pairs), f'data:{side}:pairs')]


def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(train: list, test: list) -> dict:
    """Fingerprints of the selected train and test files (names, sizes, contents); refuses overlapping splits.

    Stored with every result, so a table never mixes results on different test sets and an arch finished on other
    data is not reused.

    Raises:
        BenchmarkError: A test pair shares a file, or a file's content, with a training pair.
    """
    digests: dict[str, str] = {}

    def side(pairs: list) -> tuple[str, list[tuple[str, str]]]:
        h, files = hashlib.sha1(), []
        for p in pairs:
            for path in (p.lq_path, p.gt_path):
                real = os.path.realpath(path)
                if real not in digests:
                    digests[real] = _file_digest(real)
                h.update(f'{p.key}\0{os.path.basename(path)}\0{os.path.getsize(real)}\0{digests[real]}\n'.encode())
                files.append((p.key, digests[real]))
        return h.hexdigest()[:16], files

    train_fp, train_files = side(train)
    test_fp, test_files = side(test)
    seen = {digest: key for key, digest in train_files}
    shared = [(key, seen[d]) for key, d in test_files if d in seen]
    if shared:
        keys = sorted({k for k, _ in shared})
        raise BenchmarkError(
            f'data: {len(keys)} test pair(s) share images with training pairs (first: test {shared[0][0]} = train '
            f'{shared[0][1]}); make data:train and data:test disjoint'
        )
    return {'train': train_fp, 'test': test_fp, 'train_pairs': len(train), 'test_pairs': len(test)}


def materialise(pairs: list, folder: str) -> str:
    """``folder/{lq,gt}/<key><ext>`` symlinks to the pairs (a ``paired`` layout); replaces what was there."""
    for sub in ('lq', 'gt'):
        path = os.path.join(folder, sub)
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            os.remove(os.path.join(path, name))
    for p in pairs:
        for sub, src in (('lq', p.lq_path), ('gt', p.gt_path)):
            dst = os.path.join(folder, sub, p.key + os.path.splitext(src)[1].lower())
            os.symlink(os.path.abspath(src), dst)
    return folder
