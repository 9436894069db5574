"""Helpers shared by the tests: tiny image folders, tiny YAML options, models built from them, the basicsr log,
subprocess runs of the real CLIs, and the bad inputs of the reliability cases (damaged image files, full disks)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


#: A basicsr arch of a few hundred parameters, for plumbing tests.
TINY_BASICSR_ARCH = {
    'type': 'SRVGGNetCompact',
    'num_in_ch': 3,
    'num_out_ch': 3,
    'num_feat': 4,
    'num_conv': 1,
    'upscale': 1,
    'act_type': 'prelu',
}


def write_paired_folder(root: Path, n: int = 4, size: tuple[int, int] = (24, 24), seed: int = 0) -> Path:
    """Write ``root/lq/*.png`` and ``root/gt/*.png``: smooth images with and without bright streaks."""
    rng = np.random.default_rng(seed)
    (root / 'lq').mkdir(parents=True, exist_ok=True)
    (root / 'gt').mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = np.stack([(xx * (i + 1) + yy * c * 3) % 256 for c in range(3)], -1).astype(np.float32)
        gt = cv2.GaussianBlur(base, (5, 5), 2).astype(np.uint8)
        lq = gt.astype(np.int32)
        cols = rng.integers(0, w, size=3)
        lq[:, cols] += 90
        cv2.imwrite(str(root / 'gt' / f'{i:03d}.png'), gt)
        cv2.imwrite(str(root / 'lq' / f'{i:03d}.png'), np.clip(lq, 0, 255).astype(np.uint8))
    return root


def tiny_basicsr_options(data_root: Path, name: str = 'tiny', total_iter: int = 6, save_freq: int = 3) -> dict:
    """Options for BasicSR's own SRModel with a few-hundred-parameter basicsr arch on a tiny paired folder."""
    folder = {
        'type': 'PairedImageDataset',
        'dataroot_gt': str(data_root / 'gt'),
        'dataroot_lq': str(data_root / 'lq'),
        'filename_tmpl': '{}',
        'io_backend': {'type': 'disk'},
    }
    return {
        'name': name,
        'model_type': 'SRModel',
        'scale': 1,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                **folder,
                'name': 'tiny_train',
                'gt_size': 16,
                'use_hflip': True,
                'use_rot': False,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
            },
            'val': {**folder, 'name': 'tiny_val'},
        },
        'network_g': dict(TINY_BASICSR_ARCH),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CyclicLR', 'base_lr': 1e-3, 'max_lr': 2e-3, 'step_size_up': 4},
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': save_freq,
            'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


def write_yaml(path: Path, opt: dict) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def clean_env(**extra: str) -> dict:
    """Environment for CLI subprocesses: CPU only, few threads, no stray PYTHONPATH (discovery must not need it)
    except the checkout itself, so that subprocesses run the code under test (the installed ``.pth`` hook still
    does the discovery)."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'S2FORMER_PLUGIN_DISABLE')}
    env['PYTHONPATH'] = str(REPO)
    env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **extra)
    return env


def run(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``python <args>`` in ``cwd`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )


def tiny_s2former_options(
    data_root: Path, vgg19: Path | None, name: str = 's2f', total_iter: int = 4, save_freq: int = 2
) -> dict:
    """The S2Former training options at test size: small preset, 32x32 crops, all three losses when ``vgg19``."""
    opt = tiny_basicsr_options(data_root, name=name, total_iter=total_iter, save_freq=save_freq)
    opt['model_type'] = 'S2FormerModel'
    opt['network_g'] = {'type': 'S2Former', 'preset': 'small'}
    opt['datasets']['train']['gt_size'] = 16
    train = opt['train']
    del train['pixel_opt']
    train['psnr_opt'] = {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0}
    train['udl_opt'] = {'type': 'UncertaintyDrivenLoss', 'loss_weight': 1.0}
    if vgg19 is not None:
        train['perceptual_opt'] = {'type': 'S2FormerPerceptualLoss', 'loss_weight': 0.2, 'vgg_weights': str(vgg19)}
    opt['val'].update(tile=32, tile_overlap=8)
    return opt


def build_seeded_model(opt: dict, **train):
    """``build_model`` of ``opt`` with ``train:`` updated, its net initialised from seed 0 (same weights every call)."""
    import torch
    from basicsr.models import build_model

    opt = copy.deepcopy(opt)
    opt['train'].update(train)
    torch.manual_seed(0)
    return build_model(opt)


@contextlib.contextmanager
def basicsr_log(level: int = logging.INFO):
    """The records logged to basicsr's logger inside the block (the logger's level lowered to ``level`` meanwhile)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger('basicsr')
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def parsed_options(opt: dict, root: Path) -> dict:
    """What ``basicsr.utils.options.parse_options`` adds for a non-distributed CPU training run rooted at ``root``."""
    opt = copy.deepcopy(opt)
    exp = root / 'experiments' / opt['name']
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False, root_path=str(root))
    opt['path'].update(
        experiments_root=str(exp),
        models=str(exp / 'models'),
        log=str(exp),
        training_states=str(exp / 'training_states'),
        visualization=str(exp / 'visualization'),
    )
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        dataset['scale'] = opt.get('scale', 1)
    for key in ('models', 'training_states', 'visualization'):
        Path(opt['path'][key]).mkdir(parents=True, exist_ok=True)
    return opt


#: basicsr's own Y-channel PSNR and SSIM, no crop: the validation metrics of the distributed tests.
Y_METRICS = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
    'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True},
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for process groups; parallel test runs don't collide)."""
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 400) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=<nproc> <args>`` on a free local port (parallel test runs don't collide)."""
    port = free_port()
    cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--master_port={port}', *args]
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def photo(seed: int, shape: tuple[int, int] = (112, 200)) -> np.ndarray:
    """A smooth, textured ``uint8`` BGR image: big enough for NIQE (two 96x96 blocks), natural-looking statistics."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (*shape, 3)), (0, 0), 1.5 + seed % 3)
    ramp = np.linspace(40, 200, shape[1])[None, :, None] * np.ones((shape[0], 1, 3))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def write_mixed_images(folder: Path) -> dict[str, np.ndarray]:
    """Images of the kinds infer must keep: odd size, grey, RGBA and 16 bit; written into the new ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    imgs = {
        'odd.png': rng.integers(0, 256, (37, 45, 3), dtype=np.uint8),
        'gray.png': rng.integers(0, 256, (23, 31), dtype=np.uint8),
        'rgba.png': rng.integers(0, 256, (26, 19, 4), dtype=np.uint8),
        'deep.png': rng.integers(0, 65536, (21, 30, 3), dtype=np.uint16),
    }
    for name, img in imgs.items():
        cv2.imwrite(str(folder / name), img)
    return imgs


# Bad inputs (the reliability cases): sound images, damaged bytes, folders checked for changes, full disks.
def smooth_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth ``uint8`` BGR image (blurred ramps): small, sound, the same every call for the same arguments."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3 + yy + seed) % 256, (xx * 2) % 256, (yy * 4 + seed) % 256], -1).astype(np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 2)


def folder_digest(folder) -> dict[str, str]:
    """The sha256 of every file under ``folder``, by relative path: equal before and after when nothing changed."""
    return {
        os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), 'rb').read()).hexdigest()
        for d, _, files in os.walk(folder)
        for f in files
    }


def write_photos(folder, n: int = 2) -> None:
    """Write ``n`` smooth images ``p0.png``, ``p1.png``, ... into ``folder`` (created if missing)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f'p{i}.png'), smooth_image(seed=i))


def png_bytes() -> bytes:
    """A sound 64x80 PNG file's bytes."""
    return cv2.imencode('.png', smooth_image(64, 80))[1].tobytes()


def jpeg_bytes(**params) -> bytes:
    """A sound 96x128 JPEG file's bytes; ``params``: ``cv2.IMWRITE_*`` flags by name (``IMWRITE_JPEG_QUALITY=90``)."""
    flags = []
    for key, value in params.items():
        flags += [getattr(cv2, key), value]
    return cv2.imencode('.jpg', smooth_image(96, 128), flags)[1].tobytes()


def overwrite_bytes(data: bytes, at: float, junk: bytes) -> bytes:
    """``data`` with ``junk`` written over it from the fraction ``at`` of its length on (the length kept)."""
    b = bytearray(data)
    i = int(len(b) * at)
    b[i : i + len(junk)] = junk
    return bytes(b)


def truncate_file(path, keep: float = 0.5) -> None:
    """Cut the file at ``path`` to the fraction ``keep`` of its bytes (0: an empty file)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def raise_disk_full(path, img, params=None):
    """A stand-in for ``imageio.write`` on a full disk."""
    raise OSError(f'{path}: cannot write (disk full)')


def rename_option(opt: dict, dotted: str, new: str) -> dict:
    """``opt`` with the key at ``dotted`` (``train.ema_decay``) renamed to ``new`` in place (a typo'd key)."""
    *path, last = dotted.split('.')
    node = opt
    for key in path:
        node = node[key]
    node[new] = node.pop(last)
    return opt


def _junk(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 200, np.uint8).tobytes()


def _png_without_iend(data: bytes) -> bytes:
    return data[: data.rindex(b'IEND') - 4]


def _png_short_idat(data: bytes) -> bytes:
    """A PNG whose zlib stream stops early but whose chunks (and CRCs) are intact: a writer killed mid-image."""
    start = data.index(b'IDAT') - 4
    (length,) = struct.unpack('>I', data[start : start + 4])
    body = data[start + 8 : start + 8 + length][: length // 2]
    chunk = struct.pack('>I', len(body)) + b'IDAT' + body + struct.pack('>I', zlib.crc32(b'IDAT' + body))
    return data[:start] + chunk + data[start + 12 + length :]


def _rst_swapped(data: bytes) -> bytes:
    b = bytearray(data)
    i = b.index(b'\xff\xd0')
    j = b.index(b'\xff\xd1')
    b[i + 1], b[j + 1] = 0xD1, 0xD0
    return bytes(b)


#: Damaged image files by case name: (a function making the file's bytes, what the reader's refusal says). A name
#: starting with ``jpeg`` is a ``.jpg`` file, any other a ``.png``.
DAMAGED_IMAGES = {
    'empty-png': (lambda: b'', 'empty file'),
    'png-cut-at-10pc': (lambda: png_bytes()[: len(png_bytes()) // 10], 'truncated PNG'),
    'png-cut-at-half': (lambda: png_bytes()[: len(png_bytes()) // 2], 'truncated PNG'),
    'png-cut-before-iend': (lambda: _png_without_iend(png_bytes()), 'truncated PNG (no IEND chunk)'),
    'png-short-zlib-stream': (
        lambda: _png_short_idat(png_bytes()),
        'damaged image (decoder: libpng error: Not enough image',
    ),
    'png-flipped-byte': (lambda: overwrite_bytes(png_bytes(), 0.5, b'\x00\x00\x00'), 'damaged PNG (CRC mismatch'),
    'png-signature-only': (lambda: b'\x89PNG\r\n\x1a\n', 'truncated PNG'),
    'text-named-png': (lambda: b'this is not an image', 'cannot read (not a decodable image)'),
    'jpeg-cut-at-half': (lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2], 'truncated JPEG'),
    'jpeg-cut-at-90pc': (lambda: jpeg_bytes()[: len(jpeg_bytes()) * 9 // 10], 'truncated JPEG'),
    'jpeg-cut-2-bytes': (lambda: jpeg_bytes()[:-2], 'truncated JPEG'),
    'jpeg-header-only': (lambda: jpeg_bytes()[:200], 'truncated JPEG'),
    'jpeg-random-middle': (lambda: overwrite_bytes(jpeg_bytes(), 0.5, _junk(3)), 'damaged JPEG (invalid marker'),
    'jpeg-random-middle-2': (lambda: overwrite_bytes(jpeg_bytes(), 0.5, _junk(4)), 'extraneous bytes before marker'),
    'jpeg-zeroed-middle': (lambda: overwrite_bytes(jpeg_bytes(), 0.3, b'\x00' * 2000), 'Corrupt JPEG data'),
    'jpeg-bad-segment-length': (lambda: jpeg_bytes()[:4] + b'\xff\xff' + jpeg_bytes()[6:], 'damaged JPEG'),
    'jpeg-restart-out-of-order': (
        lambda: _rst_swapped(jpeg_bytes(IMWRITE_JPEG_RST_INTERVAL=2)),
        'restart marker out of sequence',
    ),
}


def parse_training_options(path: str | os.PathLike, tmp_path: Path, monkeypatch) -> dict:
    """An options file as ``python -m basicsr.train -opt PATH`` parses it, every type it names registered.

    basicsr's ``parse_options`` seeds every random generator; their states are restored, so the calling test
    leaves them as it found them. Asserts that the model, dataset and validation metric types are in basicsr's
    registries (the losses differ per model: the caller checks them).
    """
    import random

    import basicsr  # noqa: F401 - registers the plugin
    import torch
    from basicsr.utils.options import parse_options
    from basicsr.utils.registry import DATASET_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(path)])
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        opt, _ = parse_options(str(tmp_path), is_train=True)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    assert opt['model_type'] in MODEL_REGISTRY
    assert all(d['type'] in DATASET_REGISTRY for d in opt['datasets'].values())
    assert all(m['type'] in METRIC_REGISTRY for m in opt['val']['metrics'].values())
    return opt
