"""Start-up checks of basicsr's PairedImageDataset options (s2former_plugin.data.checks): each problem is one line
naming the option and the file or key, found before basicsr builds a loader."""

from __future__ import annotations

from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from s2former_plugin.data.checks import DatasetError, check_datasets, min_image_size


def _lmdb(folder: Path, entries: dict[str, tuple[int, int]], stored: list[str] | None = None, meta: bool = True):
    """An LMDB as create_lmdb writes it: PNG values, ``meta_info.txt`` lines ``<key>.png (h,w,3) 1``."""
    folder.mkdir(parents=True)
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key in entries if stored is None else stored:
            h, w = entries[key]
            txn.put(key.encode(), cv2.imencode('.png', np.zeros((h, w, 3), np.uint8))[1].tobytes())
    env.close()
    if meta:
        lines = [f'{k}.png ({h},{w},3) 1\n' for k, (h, w) in entries.items()]
        (folder / 'meta_info.txt').write_text(''.join(lines))
    return folder


def _opt(lq: Path, gt: Path, backend: str = 'lmdb', phase: str = 'train', metrics: dict | None = None) -> dict:
    ds = {'type': 'PairedImageDataset', 'dataroot_lq': str(lq), 'dataroot_gt': str(gt), 'io_backend': {'type': backend}}
    return {'scale': 1, 'datasets': {phase: ds}, 'val': {'metrics': metrics or {}}}


def test_a_sound_lmdb_passes(tmp_path):
    entries = {'a': (20, 24), 'b': (30, 16)}
    check_datasets(_opt(_lmdb(tmp_path / 'lq.lmdb', entries), _lmdb(tmp_path / 'gt.lmdb', entries)))


def test_an_lmdb_left_by_a_killed_conversion(tmp_path):
    entries = {'a': (20, 24)}
    lq, gt = _lmdb(tmp_path / 'lq.lmdb', entries, meta=False), _lmdb(tmp_path / 'gt.lmdb', entries, meta=False)
    (tmp_path / '.create_lmdb.ledger').write_text('a\n')
    with pytest.raises(DatasetError, match=r'^datasets:train:dataroot_lq: .*lq\.lmdb has no meta_info\.txt \(a '):
        check_datasets(_opt(lq, gt))


def test_a_meta_info_key_missing_from_the_database(tmp_path):
    entries = {'a': (20, 24), 'b': (20, 24)}
    lq = _lmdb(tmp_path / 'lq.lmdb', entries)
    gt = _lmdb(tmp_path / 'gt.lmdb', entries, stored=['a'])
    with pytest.raises(
        DatasetError, match=r'dataroot_gt: 1 key\(s\) of .*meta_info.txt are not in the database \(e.g. b\)'
    ):
        check_datasets(_opt(lq, gt))


def test_keys_in_only_one_side(tmp_path):
    lq = _lmdb(tmp_path / 'lq.lmdb', {'a': (8, 8), 'b': (8, 8)})
    gt = _lmdb(tmp_path / 'gt.lmdb', {'a': (8, 8)})
    with pytest.raises(DatasetError, match=r'1 key\(s\) are in only one of .* \(e.g. b\)'):
        check_datasets(_opt(lq, gt))


def test_lq_and_gt_of_different_sizes(tmp_path):
    lq = _lmdb(tmp_path / 'lq.lmdb', {'a': (20, 24), 'b': (20, 24)})
    gt = _lmdb(tmp_path / 'gt.lmdb', {'a': (20, 24), 'b': (21, 24)})
    with pytest.raises(DatasetError, match=r'^datasets:train: b: LQ 24x20 and GT 24x21 differ \(scale 1\)'):
        check_datasets(_opt(lq, gt))


@pytest.mark.parametrize('backend', ['lmdb', 'disk'])
def test_an_empty_dataset(tmp_path, backend):
    if backend == 'lmdb':
        lq, gt = _lmdb(tmp_path / 'lq.lmdb', {}), _lmdb(tmp_path / 'gt.lmdb', {})
    else:
        lq, gt = tmp_path / 'lq', tmp_path / 'gt'
        lq.mkdir()
        gt.mkdir()
    with pytest.raises(DatasetError, match=r'\(an empty dataset\)$'):
        check_datasets(_opt(lq, gt, backend))


def test_a_folder_pair_without_its_lq_twin(tmp_path):
    for sub, names in (('lq', ['a.png']), ('gt', ['b.png'])):
        (tmp_path / sub).mkdir()
        for n in names:
            cv2.imwrite(str(tmp_path / sub / n), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"b.png of .* has no b.png in .*lq \(filename_tmpl '\{\}'\)"):
        check_datasets(_opt(tmp_path / 'lq', tmp_path / 'gt', 'disk', 'val'))


@pytest.mark.parametrize('backend', ['lmdb', 'disk'])
def test_validation_images_smaller_than_the_ssim_window_fail_at_start_up(tmp_path, backend):
    sizes = {'a': (32, 32), 'b': (9, 40)}
    if backend == 'lmdb':
        lq, gt = _lmdb(tmp_path / 'lq.lmdb', sizes), _lmdb(tmp_path / 'gt.lmdb', sizes)
    else:
        lq, gt = tmp_path / 'lq', tmp_path / 'gt'
        for d in (lq, gt):
            d.mkdir()
            for k, (h, w) in sizes.items():
                cv2.imwrite(str(d / f'{k}.png'), np.zeros((h, w, 3), np.uint8))
    metrics = {'psnr': {'type': 'pyiqa', 'metric': 'psnr'}, 'ssim': {'type': 'pyiqa', 'metric': 'ssim'}}
    name = 'b' if backend == 'lmdb' else 'b.png'
    with pytest.raises(
        DatasetError, match=rf'datasets:val: {name} is 40x9, smaller than the 11 pixels val:metrics:ssim'
    ):
        check_datasets(_opt(lq, gt, backend, 'val', metrics))
    check_datasets(_opt(lq, gt, backend, 'train', metrics))  # training crops are not scored


def test_min_image_size_by_metric():
    assert min_image_size({'p': {'type': 'calculate_psnr', 'crop_border': 4}}) == (9, 'val:metrics:p')
    assert min_image_size({'s': {'type': 'pyiqa', 'metric': 'ssim', 'crop_border': 2}})[0] == 15
    assert min_image_size({}) is None
