"""``SyntheticRainDataset`` on a damaged clean image: refused, naming the dataset, the file and the reason.

Each test is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest
from helpers import png_bytes, write_photos


def test_synthetic_dataset_names_a_bad_image(tmp_path):
    from basicsr.data import build_dataset

    write_photos(tmp_path / 'clean', n=1)
    (tmp_path / 'clean' / 'p9.png').write_bytes(png_bytes()[:100])
    opt = {'name': 'S', 'type': 'SyntheticRainDataset', 'dataroot_gt': str(tmp_path / 'clean'), 'phase': 'val',
           'scale': 1, 'io_backend': {'type': 'disk'}}  # fmt: skip
    ds = build_dataset(opt)
    with pytest.raises(ValueError, match=r'SyntheticRainDataset: .*p9\.png: truncated PNG'):
        [ds[i] for i in range(len(ds))]
