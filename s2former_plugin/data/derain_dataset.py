"""``DerainFolderDataset``: the public deraining datasets read straight from their unpacked folders.

For LMDBs made by ``datasets_prep/create_lmdb.py`` use basicsr's own ``PairedImageDataset`` with
``io_backend: {type: lmdb}`` instead (docs/data.md).
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data
from torchvision.transforms.functional import normalize

from .. import imageio
from ..options import check_keys
from .layouts import LAYOUTS, LayoutError, _list_images, find_pairs

__all__ = ['DerainFolderDataset', 'pad_to']

logger = logging.getLogger('basicsr')


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad ``img`` (HWC) so both sides are at least ``size`` (no-op for big enough images)."""
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not (ph or pw):
        return img
    return cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)


#: Keys basicsr sets on, or its dataloader builder reads from, every dataset block.
BASICSR_DATASET_KEYS = frozenset({
    'name', 'type', 'phase', 'scale', 'io_backend', 'batch_size_per_gpu', 'num_worker_per_gpu', 'use_shuffle',
    'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue',
})  # fmt: skip
_FOLDER_KEYS = frozenset({
    'layout', 'dataroot', 'dataroot_lq', 'dataroot_gt', 'split', 'subset', 'lq_dir', 'gt_dir', 'filename_tmpl',
    'template', 'strict', 'gt_size', 'use_hflip', 'use_rot', 'mean', 'std',
})  # fmt: skip


def check_dataset_keys(opt: dict, known: frozenset | set, where: str) -> None:
    """Refuse an unknown key (``use_hfilp``) with the closest known one: :func:`s2former_plugin.options.check_keys`.

    Raises:
        OptionError: ``'<where>:<key>: unknown key; did you mean <known>?'`` (a ``ValueError``).
    """
    check_keys(opt, known, where)


@DATASET_REGISTRY.register()
class DerainFolderDataset(data.Dataset):
    """Input/clean pairs of any layout in :mod:`s2former_plugin.data.layouts`, read from disk.

    Items match basicsr's ``PairedImageDataset``: ``lq`` and ``gt`` are RGB float32 tensors ``(3, h, w)`` in
    [0, 1], plus ``lq_path`` and ``gt_path``. Training crops ``gt_size`` patches at the same place in both images
    (basicsr's ``paired_random_crop``; smaller images are reflect-padded first) and applies basicsr's ``augment``
    (``use_hflip``, ``use_rot``). Validation returns whole images of any size.

    ``layout: single`` reads a folder of rainy photos without clean images (real rain: ``dataroot`` or
    ``dataroot_lq``); its items have no ``gt``/``gt_path``, so it serves validation with no-reference metrics only.

    Args:
        opt: Options (the YAML ``datasets.<phase>`` block):

            * ``layout``: ``rainds``, ``rain200``, ``agan``, ``paired`` (default) or ``single`` (no ground truth).
            * ``dataroot``: dataset folder. For ``paired`` you may give ``dataroot_lq`` and ``dataroot_gt``
              instead (as for ``PairedImageDataset``).
            * ``split``: ``train`` / ``test`` folder inside ``dataroot`` (``agan``: ``test_a``, ``test_b``).
            * ``subset``: ``rainds`` only: ``rs``, ``rd``, ``rsrd``, ``all`` (default).
            * ``lq_dir``, ``gt_dir``, ``filename_tmpl``: ``paired`` only (folders, input stem template).
            * ``strict``: raise on unmatched files instead of logging them (default false).
            * ``phase``, ``gt_size``, ``use_hflip``, ``use_rot``, ``mean``, ``std``, ``io_backend`` (``disk``):
              as in basicsr.
    """

    def __init__(self, opt: dict):
        super().__init__()
        check_dataset_keys(opt, _FOLDER_KEYS | BASICSR_DATASET_KEYS, 'DerainFolderDataset')
        self.opt = opt
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        if self.io_backend_opt.get('type', 'disk') != 'disk':
            raise ValueError(
                'DerainFolderDataset:io_backend: only disk; for LMDBs use type: PairedImageDataset with '
                'io_backend: {type: lmdb} (docs/data.md)'
            )
        self.file_client = None
        self.mean, self.std = opt.get('mean'), opt.get('std')
        if (self.mean is None) != (self.std is None):
            raise ValueError('DerainFolderDataset:mean/std: give both or neither')
        if opt.get('phase') == 'train' and not opt.get('gt_size'):
            raise ValueError('DerainFolderDataset:gt_size: required for phase train (the crop size)')
        layout = opt.get('layout', 'paired')
        if layout == 'single':
            self.paths = self._scan_single(opt)
            return
        if layout not in LAYOUTS:
            raise ValueError(f'DerainFolderDataset:layout: {layout!r} is not one of {", ".join(LAYOUTS)}, single')
        root, lq_dir, gt_dir = opt.get('dataroot'), opt.get('lq_dir'), opt.get('gt_dir')
        if layout == 'paired' and root is None and opt.get('dataroot_lq') and opt.get('dataroot_gt'):
            lq_dir, gt_dir = os.path.abspath(opt['dataroot_lq']), os.path.abspath(opt['dataroot_gt'])
            root = os.path.dirname(gt_dir)
        if root is None:
            raise ValueError('DerainFolderDataset:dataroot: required (the dataset folder)')
        try:
            self.scan = find_pairs(
                layout,
                root,
                split=opt.get('split'),
                subset=opt.get('subset'),
                lq_dir=lq_dir,
                gt_dir=gt_dir,
                template=opt.get('filename_tmpl', opt.get('template')),
            )
        except LayoutError as e:
            raise ValueError(f'DerainFolderDataset:{e}') from None
        problems = self.scan.problems
        if problems and opt.get('strict', False):
            raise ValueError(f'DerainFolderDataset:strict: {problems[0]} ({len(problems)} files unmatched)')
        for line in problems:
            logger.warning(f'DerainFolderDataset: {line}')
        if not self.scan.pairs:
            raise ValueError(f'DerainFolderDataset:dataroot: no image pairs in {self.scan.root} (layout {layout})')
        self.paths = [{'lq_path': p.lq_path, 'gt_path': p.gt_path} for p in self.scan.pairs]

    @staticmethod
    def _scan_single(opt: dict) -> list[dict]:
        """``[{'lq_path': ...}]`` of the images in ``dataroot_lq`` (or ``dataroot``), natural order."""
        if opt.get('phase') == 'train':
            raise ValueError('DerainFolderDataset:layout: single has no clean images; it can only be validated on')
        folder = opt.get('dataroot_lq') or opt.get('dataroot')
        if folder is None:
            raise ValueError('DerainFolderDataset:dataroot: required (the folder of rainy photos)')
        if not os.path.isdir(folder):
            raise ValueError(f'DerainFolderDataset:dataroot: folder not found: {folder}')
        ignored: list[str] = []
        ambiguous: list[str] = []
        images = _list_images(folder, ignored, ambiguous)
        for path in ignored:
            logger.warning(f'DerainFolderDataset: not an image, ignored: {path}')
        if ambiguous:
            raise ValueError(f'DerainFolderDataset:dataroot: two images share a name: {", ".join(ambiguous[:2])}')
        if not images:
            raise ValueError(f'DerainFolderDataset:dataroot: no images in {folder}')
        return [{'lq_path': p} for p in images.values()]

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str, client_key: str) -> np.ndarray:
        """As basicsr's ``imfrombytes(..., float32=True)``, but a damaged or missing file raises naming it."""
        try:
            data = self.file_client.get(path, client_key)
        except OSError as e:
            raise imageio.ImageError(f'{path}: cannot read ({e.strerror})') from None
        return imageio.decode(data, path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0

    def __getitem__(self, index: int) -> dict:
        if self.file_client is None:
            opt = dict(self.io_backend_opt)
            self.file_client = FileClient(opt.pop('type', 'disk'), **opt)
        if 'gt_path' not in self.paths[index]:  # layout: single, no ground truth
            lq_path = self.paths[index]['lq_path']
            img_lq = img2tensor(self._read(lq_path, 'lq'), bgr2rgb=True)
            if self.mean is not None:
                normalize(img_lq, self.mean, self.std, inplace=True)
            return {'lq': img_lq, 'lq_path': lq_path}
        lq_path, gt_path = self.paths[index]['lq_path'], self.paths[index]['gt_path']
        img_gt, img_lq = self._read(gt_path, 'gt'), self._read(lq_path, 'lq')
        if img_gt.shape != img_lq.shape:
            raise ValueError(
                f'{lq_path}: size {img_lq.shape[:2]} differs from clean image {gt_path} {img_gt.shape[:2]}'
            )
        if self.opt.get('phase') == 'train':
            gt_size = int(self.opt['gt_size'])
            img_gt, img_lq = pad_to(img_gt, gt_size), pad_to(img_lq, gt_size)
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, gt_size, 1, gt_path)
            img_gt, img_lq = augment([img_gt, img_lq], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
