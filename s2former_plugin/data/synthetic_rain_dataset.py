"""``SyntheticRainDataset``: clean photos made rainy on the fly (no dataset download needed)."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import torch
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data
from torchvision.transforms.functional import normalize

from .. import imageio
from ..options import check_switch
from .clean_sources import SKIMAGE_PHOTOS, load_skimage_photos
from .layouts import IMAGE_EXTENSIONS, natural_key
from .rain_synthesis import RainConfig, add_rain

__all__ = ['SyntheticRainDataset']

logger = logging.getLogger('basicsr')

_OWN_KEYS = {  # and derain_dataset.BASICSR_DATASET_KEYS
    'source', 'dataroot_gt', 'skimage_images', 'gt_size', 'num_samples', 'rain', 'seed', 'use_hflip', 'use_rot',
    'max_side', 'mean', 'std', 'return_rain_mask',
}  # fmt: skip


@DATASET_REGISTRY.register()
class SyntheticRainDataset(data.Dataset):
    """Pairs made from clean images by :func:`~s2former_plugin.data.rain_synthesis.add_rain`.

    Items match basicsr's ``PairedImageDataset``: ``lq`` (rainy) and ``gt`` (clean) RGB float32 tensors
    ``(3, h, w)`` in [0, 1], and ``lq_path`` / ``gt_path``. ``lq_path`` is a virtual name
    ``<image>_<index>.png`` (basicsr names saved validation images after it); ``gt_path`` is the clean file
    (``skimage:<name>`` for the bundled photos).

    Sample ``i`` uses clean image ``i % n_images``, a random ``gt_size`` crop, flips/rotations and new rain:

    * ``phase: train``: the generator is seeded with ``(seed, i, a draw from torch's RNG)``, so every access gets
      new rain and crops, reproducibly under basicsr's ``manual_seed`` (DataLoader workers get a fresh torch
      seed each epoch).
    * ``phase: val``: seeded with ``(seed, i)`` only: the same pairs every time, whatever the worker count.

    Args:
        opt: Options (the YAML ``datasets.<phase>`` block):

            * ``source``: ``skimage`` (the photos :data:`SKIMAGE_PHOTOS`) or ``folder`` (images in
              ``dataroot_gt``). Default: ``folder`` when ``dataroot_gt`` is given, else ``skimage``.
            * ``dataroot_gt``: folder of clean images (``source: folder``).
            * ``skimage_images``: list of ``skimage.data`` photo names (default: astronaut, coffee, chelsea, rocket).
            * ``gt_size``: crop size; required for ``train``; ``val`` without it returns whole images.
            * ``num_samples``: dataset length (default: 1000 for train, the number of images for val).
            * ``rain``: ``{mode: streak|drop|both, streak: {...}, drop: {...}}`` (see docs/data.md).
            * ``seed``: base seed (default 0).
            * ``use_hflip``, ``use_rot``: train augmentation (default false).
            * ``max_side``: downscale clean images whose longer side exceeds this (default: keep).
            * ``mean``, ``std``: optional normalisation, as in basicsr.
            * ``return_rain_mask``: also give ``rain_mask``, a ``(1, h, w)`` float32 tensor, 1 where streaks or
              drops were drawn (:func:`~s2former_plugin.data.rain_synthesis.add_rain`'s mask), aligned with
              ``lq`` (default false: the items are exactly basicsr's keys).
    """

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        from .derain_dataset import BASICSR_DATASET_KEYS, check_dataset_keys  # not at import: the two register together

        check_dataset_keys(opt, _OWN_KEYS | BASICSR_DATASET_KEYS, 'SyntheticRainDataset')
        self.phase = opt.get('phase', 'train')
        self.train = self.phase == 'train'
        self.gt_size = opt.get('gt_size')
        if self.train and not self.gt_size:
            raise ValueError('SyntheticRainDataset:gt_size: required for phase train')
        self.seed = int(opt.get('seed', 0))
        self.rain = RainConfig.from_dict(opt.get('rain'))
        self.mean, self.std = opt.get('mean'), opt.get('std')
        self.return_rain_mask = opt.get('return_rain_mask', False)
        check_switch(self.return_rain_mask, 'SyntheticRainDataset:return_rain_mask')
        source = opt.get('source', 'folder' if opt.get('dataroot_gt') else 'skimage')
        self.max_side = opt.get('max_side')
        self._cache: dict[int, np.ndarray] = {}
        if source == 'skimage':
            photos = load_skimage_photos(opt.get('skimage_images') or SKIMAGE_PHOTOS)
            self.names = [name for name, _ in photos]
            self.gt_paths = [f'skimage:{name}' for name in self.names]
            self._cache = {i: self._fit(img) for i, (_, img) in enumerate(photos)}
        elif source == 'folder':
            root = opt.get('dataroot_gt')
            if not root or not os.path.isdir(root):
                raise ValueError(f'SyntheticRainDataset:dataroot_gt: folder not found: {root}')
            files = sorted(
                (f for f in os.listdir(root) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS), key=natural_key
            )
            if not files:
                raise ValueError(f'SyntheticRainDataset:dataroot_gt: no images in {root}')
            self.names = [os.path.splitext(f)[0] for f in files]
            self.gt_paths = [os.path.join(root, f) for f in files]
        else:
            raise ValueError(f"SyntheticRainDataset:source: {source!r} is not 'skimage' or 'folder'")
        self.num_samples = int(opt.get('num_samples') or (1000 if self.train else len(self.names)))

    def _fit(self, img: np.ndarray) -> np.ndarray:
        """Apply ``max_side`` and make the image at least ``gt_size`` on both sides."""
        h, w = img.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        if self.gt_size and min(h, w) * scale < self.gt_size:
            scale = self.gt_size / min(h, w)
        if scale != 1.0:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            img = cv2.resize(img, (max(round(w * scale), 1), max(round(h * scale), 1)), interpolation=interp)
            if self.gt_size:  # rounding must not leave a side one pixel short
                img = cv2.resize(img, (max(img.shape[1], self.gt_size), max(img.shape[0], self.gt_size)))
        return img

    def _image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            try:
                img = imageio.read(self.gt_paths[i], cv2.IMREAD_COLOR)
            except imageio.ImageError as e:
                raise ValueError(f'SyntheticRainDataset: {e}') from None
            img = self._fit(img)
            if len(self._cache) < 64:  # small folders stay in memory; big ones are read per access
                self._cache[i] = img
            return img
        return self._cache[i]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.names)
        if self.train:
            fresh = int(torch.randint(0, 2**62, ()).item())
            rng = np.random.default_rng([self.seed, index, fresh])
        else:
            rng = np.random.default_rng([self.seed, index])
        gt = self._image(i)
        if self.gt_size:
            s = int(self.gt_size)
            top, left = int(rng.integers(0, gt.shape[0] - s + 1)), int(rng.integers(0, gt.shape[1] - s + 1))
            gt = gt[top : top + s, left : left + s]
        if self.train:
            if self.opt.get('use_hflip', False) and rng.random() < 0.5:
                gt = gt[:, ::-1]
            if self.opt.get('use_rot', False):
                if rng.random() < 0.5:
                    gt = gt[::-1]
                if rng.random() < 0.5:
                    gt = gt.transpose(1, 0, 2)  # with the flips: all 8 dihedral orientations
        gt = np.ascontiguousarray(gt, dtype=np.float32) / 255.0
        # Rain is added after the flips so streaks keep their fall direction (and the mask lines up with lq).
        lq, mask = add_rain(gt, rng, self.rain, return_mask=True)
        img_gt, img_lq = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        item = {'lq': img_lq, 'gt': img_gt, 'lq_path': f'{self.names[i]}_{index:05d}.png', 'gt_path': self.gt_paths[i]}
        if self.return_rain_mask:
            item['rain_mask'] = torch.from_numpy(mask.astype(np.float32))[None]
        return item
