"""The training datasets on bad inputs: ``DerainFolderDataset`` names a damaged image on either side, and a typo'd
(or unknown) key in a dataset block is refused, for the folder and the synthetic dataset alike.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest
from helpers import jpeg_bytes, overwrite_bytes, truncate_file

from s2former_plugin import imageio


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'damaged-jpeg'])
@pytest.mark.parametrize('side', ['lq', 'gt'])
def test_folder_dataset_names_a_bad_image(tmp_path, damage, side):
    from basicsr.data import build_dataset
    from helpers import write_paired_folder

    root = write_paired_folder(tmp_path / 'd', n=2, size=(24, 24))
    bad = root / side / '001.png'
    if damage == 'empty':
        bad.write_bytes(b'')
    elif damage == 'truncated':
        truncate_file(bad)
    else:
        bad.unlink()
        bad = root / side / '001.jpg'
        bad.write_bytes(overwrite_bytes(jpeg_bytes(), 0.3, b'\x00' * 2000))
    opt = {'name': 'F', 'type': 'DerainFolderDataset', 'layout': 'paired', 'dataroot': str(root), 'phase': 'val',
           'scale': 1, 'io_backend': {'type': 'disk'}}  # fmt: skip
    ds = build_dataset(opt)
    assert ds[0]['lq'].shape == (3, 24, 24)
    with pytest.raises(imageio.ImageError, match=str(bad)):
        ds[1]


@pytest.mark.parametrize(
    ('dataset', 'typo', 'known'),
    [
        ('DerainFolderDataset', 'use_hfilp', 'use_hflip'),
        ('DerainFolderDataset', 'gt_szie', 'gt_size'),
        ('DerainFolderDataset', 'filename_tmpel', 'filename_tmpl'),
        ('SyntheticRainDataset', 'num_sample', 'num_samples'),
        ('SyntheticRainDataset', 'use_rott', 'use_rot'),
    ],
)
def test_dataset_key_typos_are_refused(tmp_path, dataset, typo, known):
    from basicsr.data import build_dataset
    from helpers import write_paired_folder

    root = write_paired_folder(tmp_path / 'd', n=1, size=(16, 16))
    where = {'dataroot': str(root)} if dataset == 'DerainFolderDataset' else {'dataroot_gt': str(root / 'gt')}
    opt = {'name': 'x', 'type': dataset, 'phase': 'val', 'scale': 1, **where}
    build_dataset(opt)
    with pytest.raises(ValueError, match=f'{dataset}:comment: unknown key; the keys are '):  # one policy: refused
        build_dataset(dict(opt, comment='copied from elsewhere'))
    with pytest.raises(ValueError, match=f"{dataset}:{typo}: unknown key; did you mean '{known}'"):
        build_dataset(dict(opt, **{typo: 1}))
