"""NIQE of one folder of images by several implementations, all offline (prints, never asserts).

Every implementation gets the same pristine-image model (BasicSR's ``niqe_pris_params.npz``, written to a ``.mat``
for pyiqa), so the differences come from the grey channel and the code alone::

    python benchmarks/niqe_implementations.py PATH/TO/rain100h_test80/rain/X2

Rows: BasicSR ``calculate_niqe(img, 0)`` (``convert_to='y'``: the project's ``niqe``), BasicSR with
``convert_to='gray'``, and pyiqa's NIQE code (``pretrained_model_path=``) with its default YIQ luma and with
``color_space='ycbcr'``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import cv2
import numpy as np
import scipy.io
import torch


def main() -> None:
    import basicsr.metrics
    import pyiqa
    from basicsr.metrics import calculate_niqe

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('folder', help='folder of images (PNG/JPEG)')
    args = p.parse_args()
    from s2former_plugin.imageio import list_images

    npz = np.load(os.path.join(os.path.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    with tempfile.TemporaryDirectory() as tmp:
        mat = os.path.join(tmp, 'pristine.mat')
        scipy.io.savemat(mat, {'mu_prisparam': npz['mu_pris_param'], 'cov_prisparam': npz['cov_pris_param']})
        yiq = pyiqa.create_metric('niqe', device='cpu', pretrained_model_path=mat)
        ycbcr = pyiqa.create_metric('niqe', device='cpu', pretrained_model_path=mat, color_space='ycbcr')
    rows = []
    for path in list_images(args.folder):
        img = cv2.imread(path)
        rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        rows.append(
            [calculate_niqe(img, 0), calculate_niqe(img, 0, convert_to='gray'), float(yiq(rgb)), float(ycbcr(rgb))]
        )
    r = np.array(rows)
    names = ['basicsr y (niqe)', 'basicsr gray', 'pyiqa code, YIQ luma', 'pyiqa code, YCbCr Y']
    print(f'{len(r)} images')
    for i, name in enumerate(names):
        d = r[:, i] - r[:, 0]
        gap = f'mean {d.mean():+.4f}, max |d| {np.abs(d).max():.4f}'
        print(f'{name:22s} mean {r[:, i].mean():.4f}  vs basicsr y: {gap}')


if __name__ == '__main__':
    main()
