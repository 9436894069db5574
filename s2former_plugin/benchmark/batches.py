"""The same training batches for every arch: seeded crops that depend on nothing but the seed and the position.

``BenchmarkCrops`` (a basicsr dataset, registered when this module is imported: the training subprocess does) is one
epoch as long as the whole training (``total_iter x batch_size`` items). Item ``i`` is a pure function of
``(seed, i)``: which pair (passes over the pairs, each in a seeded order), where the crop lies and which flips and
transposition apply are drawn from ``numpy.random.default_rng([seed, ...])``, never from a global generator that
building a network or a loss could consume. basicsr's sampler orders one epoch by a permutation seeded with the
epoch number alone, so batch ``t`` holds the same items for every arch trained under one seed.

The training subprocess also records a digest of every batch it trains on (:func:`batch_digest`, one
``iteration digest`` line per step in ``batches.txt``), and on resuming skips the items already consumed, so that
an interrupted training continues with the batches it would have seen. The driver compares the records of all archs
of a seed (:func:`compare_records`) and says so in the results when they differ.
"""

from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from s2former_plugin import imageio
from s2former_plugin.data.derain_dataset import pad_to
from s2former_plugin.data.layouts import find_pairs

#: The keys of the dataset block (basicsr adds ``phase`` and ``scale``; its loader reads the others).
_KEYS = frozenset({
    'name', 'type', 'phase', 'scale', 'dataroot', 'gt_size', 'use_hflip', 'use_rot', 'seed', 'num_samples',
    'io_backend', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
    'use_shuffle', 'pin_memory', 'persistent_workers',
})  # fmt: skip


def pair_order(seed: int, n_pairs: int, pass_index: int) -> np.ndarray:
    """The order of the pairs in pass ``pass_index`` over them: a permutation seeded by ``(seed, pass)``."""
    return np.random.default_rng([seed, 1, pass_index]).permutation(n_pairs)


def crop_plan(seed: int, index: int, height: int, width: int, crop: int, hflip: bool, rot: bool) -> dict:
    """Where item ``index`` crops an ``height x width`` image (already padded to at least ``crop``) and how it
    flips: ``{'top', 'left', 'hflip', 'vflip', 'transpose'}``, drawn from ``default_rng([seed, 2, index])``.

    The flips follow basicsr's ``augment``: a horizontal flip (``use_hflip``), and with ``use_rot`` a vertical
    flip and a transposition, each with probability 1/2.
    """
    rng = np.random.default_rng([seed, 2, index])
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    coin = rng.random(3) < 0.5
    return {
        'top': top,
        'left': left,
        'hflip': bool(hflip and coin[0]),
        'vflip': bool(rot and coin[1]),
        'transpose': bool(rot and coin[2]),
    }


def _apply(img: np.ndarray, plan: dict, crop: int) -> np.ndarray:
    img = img[plan['top'] : plan['top'] + crop, plan['left'] : plan['left'] + crop]
    if plan['hflip']:
        img = img[:, ::-1]
    if plan['vflip']:
        img = img[::-1]
    if plan['transpose']:
        img = img.transpose(1, 0, 2)
    return img


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC BGR float32 -> CHW RGB tensor (basicsr's ``img2tensor(bgr2rgb=True)``)."""
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))


@DATASET_REGISTRY.register()
class BenchmarkCrops(data.Dataset):
    """Training crops of a ``paired`` folder (``dataroot/{lq,gt}``), item ``i`` a pure function of ``(seed, i)``.

    Items as basicsr's ``PairedImageDataset``: ``lq``/``gt`` RGB float32 ``(3, crop, crop)`` in [0, 1], ``lq_path``,
    ``gt_path``. Images smaller than the crop are reflect-padded first (as ``DerainFolderDataset``).

    Args:
        opt: ``dataroot``, ``gt_size`` (the crop), ``use_hflip``, ``use_rot``, ``seed``, ``num_samples`` (the
            epoch's length: ``total_iter x batch_size``), and basicsr's loader keys.
    """

    def __init__(self, opt: dict):
        super().__init__()
        from s2former_plugin.options import check_keys

        check_keys(opt, _KEYS, 'BenchmarkCrops')
        self.opt = opt
        self.crop, self.seed = int(opt['gt_size']), int(opt['seed'])
        self.num_samples = int(opt['num_samples'])
        self.pairs = find_pairs('paired', opt['dataroot']).pairs
        if not self.pairs:
            raise ValueError(f'BenchmarkCrops:dataroot: no image pairs in {opt["dataroot"]}')
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_samples

    def pair_index(self, index: int) -> int:
        """Which pair item ``index`` crops (pass ``index // n`` over the ``n`` pairs, in its seeded order)."""
        n = len(self.pairs)
        p = index // n
        if p not in self._orders:
            self._orders[p] = pair_order(self.seed, n, p)
        return int(self._orders[p][index % n])

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[self.pair_index(index)]
        gt = imageio.read(pair.gt_path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0
        lq = imageio.read(pair.lq_path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0
        if gt.shape != lq.shape:
            raise ValueError(f'{pair.lq_path}: size {lq.shape[:2]} differs from clean image {pair.gt_path}')
        gt, lq = pad_to(gt, self.crop), pad_to(lq, self.crop)
        plan = crop_plan(self.seed, index, *gt.shape[:2], self.crop, self.opt['use_hflip'], self.opt['use_rot'])
        return {
            'lq': _to_tensor(_apply(lq, plan, self.crop)),
            'gt': _to_tensor(_apply(gt, plan, self.crop)),
            'lq_path': pair.lq_path,
            'gt_path': pair.gt_path,
        }


def batch_digest(batch: dict) -> str:
    """A 16-hex-digit digest of a training batch's ``lq`` and ``gt`` tensors (values, shapes, order)."""
    h = hashlib.blake2b(digest_size=8)
    for key in ('lq', 'gt'):
        t = batch[key].detach().to('cpu', torch.float32).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def read_record(path: str) -> dict[int, str]:
    """``{iteration: digest}`` from a ``batches.txt`` (a resumed run's later lines replace earlier ones)."""
    record: dict[int, str] = {}
    if os.path.isfile(path):
        with open(path, encoding='ascii') as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit():
                    record[int(parts[0])] = parts[1]
    return record


def compare_records(records: dict[str, dict[int, str]]) -> dict:
    """Whether the archs of one seed trained on the same batches.

    Args:
        records: ``{arch: {iteration: digest}}``.

    Returns:
        ``{'same': bool, 'iterations': int, 'first_difference': None | {'iteration', 'archs'}}``: the archs agree
        when all records hold the same iterations with the same digests.
    """
    if not records:
        return {'same': True, 'iterations': 0, 'first_difference': None}
    names = sorted(records)
    its = sorted(set().union(*(records[n] for n in names)))
    for it in its:
        seen = {records[n].get(it) for n in names}
        if len(seen) > 1:
            odd = [n for n in names if records[n].get(it) != records[names[0]].get(it)]
            return {'same': False, 'iterations': len(its), 'first_difference': {'iteration': it, 'archs': odd}}
    return {'same': True, 'iterations': len(its), 'first_difference': None}
