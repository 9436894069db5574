"""Synthetic rain generator, its datasets (SyntheticRainDataset, DerainFolderDataset) and its CLI."""

import os

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin.data.synthetic_rain import (
    MODES,
    RainConfig,
    add_rain,
    load_skimage_photos,
    main,
    rain_streaks,
    raindrops,
)


@pytest.fixture(scope='module')
def clean():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((48, 40, 3), dtype=np.float32), (0, 0), 3)
    return np.clip(base * 0.6 + 0.1, 0, 1).astype(np.float32)


@pytest.mark.parametrize('mode', MODES)
def test_reproducible_and_seed_dependent(clean, mode):
    a = add_rain(clean, 7, mode=mode)
    b = add_rain(clean, np.random.default_rng(7), mode=mode)
    c = add_rain(clean, 8, mode=mode)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == clean.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.abs(a - clean).mean() > 1e-3  # it did rain


def test_modes_differ_and_streaks_brighten(clean):
    streak = rain_streaks(clean, np.random.default_rng(1))
    drop = raindrops(clean, np.random.default_rng(1))
    both = add_rain(clean, 1, mode='both')
    assert not np.array_equal(streak, drop) and not np.array_equal(both, streak)
    no_haze = RainConfig.from_dict({'mode': 'streak', 'streak': {'haze': 0}})
    assert (add_rain(clean, 3, no_haze) >= clean - 1e-6).all()  # screen blend never darkens
    changed = np.abs(drop - clean).max(axis=2) > 1e-4
    assert 0 < changed.mean() < 0.9  # drops are local


def test_dtypes_and_shapes():
    u8 = np.random.default_rng(0).integers(0, 256, (32, 24, 3), dtype=np.uint8)
    out = add_rain(u8, 0)
    assert out.dtype == np.uint8 and out.shape == u8.shape
    gray = add_rain(u8[..., 0].astype(np.float32) / 255, 0)
    assert gray.shape == (32, 24) and gray.dtype == np.float32
    tiny = add_rain(np.zeros((5, 5, 3), np.float32), 0)  # smaller than any streak or drop
    assert tiny.shape == (5, 5, 3) and np.isfinite(tiny).all()


def test_config_validation():
    cfg = RainConfig.from_dict({'mode': 'drop', 'drop': {'radius': [2, 4], 'count': 1}})
    assert cfg.drop.radius == (2, 4) and cfg.drop.count == 1
    with pytest.raises(ValueError, match='rain:mode'):
        RainConfig.from_dict({'mode': 'snow'})
    with pytest.raises(ValueError, match="rain:streak: unknown key 'lenght'"):
        RainConfig.from_dict({'streak': {'lenght': 3}})
    with pytest.raises(ValueError, match='rain:drop:radius'):
        RainConfig.from_dict({'drop': {'radius': [5, 1]}})
    with pytest.raises(ValueError, match="unknown key 'strength'"):
        RainConfig.from_dict({'strength': 1})


def test_skimage_photos_are_bundled():
    photos = load_skimage_photos()
    assert [n for n, _ in photos] == ['astronaut', 'coffee', 'chelsea', 'rocket']
    assert all(img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 for _, img in photos)
    with pytest.raises(ValueError, match='camera'):
        load_skimage_photos(['camera'])  # grey


def _synth(**kw):
    from basicsr.data import build_dataset

    opt = {'name': 'S', 'type': 'SyntheticRainDataset', 'source': 'skimage', 'scale': 1, 'io_backend': {'type': 'disk'}}
    return build_dataset({**opt, **kw})


def test_train_dataset_items_and_fresh_rain():
    ds = _synth(phase='train', gt_size=32, num_samples=6, rain={'mode': 'both'}, use_hflip=True, use_rot=True)
    assert len(ds) == 6
    item = ds[1]
    assert item['lq'].shape == item['gt'].shape == (3, 32, 32) and item['lq'].dtype == torch.float32
    assert 0 <= item['lq'].min() and item['lq'].max() <= 1 and not torch.equal(item['lq'], item['gt'])
    assert item['lq_path'] == 'coffee_00001.png' and item['gt_path'] == 'skimage:coffee'
    assert not torch.equal(ds[1]['lq'], ds[1]['lq'])  # every access: new crop and rain
    torch.manual_seed(5)
    a = ds[2]['lq']
    torch.manual_seed(5)
    assert torch.equal(a, ds[2]['lq'])  # ...reproducible from torch's seed


def test_val_dataset_is_deterministic_and_matches_quickstart_yaml():
    opt = dict(phase='val', num_samples=4, gt_size=24, rain={'mode': 'both'})
    ds, again = _synth(**opt), _synth(**opt)
    for i in range(4):
        assert torch.equal(ds[i]['lq'], again[i]['lq']) and torch.equal(ds[i]['gt'], again[i]['gt'])
    assert ds[0]['lq'].shape == (3, 24, 24) and not torch.equal(ds[0]['lq'], ds[1]['lq'][:, :24, :24])
    whole = _synth(phase='val', skimage_images=['chelsea'], max_side=64)
    assert len(whole) == 1 and whole[0]['gt'].shape == (3, 43, 64)


def test_folder_source_and_dataloader(tmp_path):
    from basicsr.data import build_dataloader

    for i in range(3):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.full((20, 30, 3), 60 * i, np.uint8))
    ds = _synth(source='folder', dataroot_gt=str(tmp_path), phase='train', gt_size=24, num_samples=5)
    assert ds.gt_paths[2].endswith('2.png') and ds[2]['gt'].shape == (3, 24, 24)  # upscaled to fit the crop
    opt = {'phase': 'train', 'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0, 'use_shuffle': True}
    loader = build_dataloader(ds, {**opt, 'dataset_enlarge_ratio': 1}, num_gpu=0, dist=False, sampler=None, seed=0)
    batch = next(iter(loader))
    assert batch['lq'].shape == (2, 3, 24, 24)


def test_cli_writes_a_paired_folder(tmp_path):
    src = tmp_path / 'clean'
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f'p{i}.png'), np.full((40, 50, 3), 100 + 50 * i, np.uint8))
    out = tmp_path / 'out'
    assert main(['--input', str(src), '--output', str(out), '--per-image', '2', '--crop', '32', '--seed', '3']) == 0
    assert (
        sorted(os.listdir(out / 'lq'))
        == sorted(os.listdir(out / 'gt'))
        == [f'p{i}_{k}.png' for i in (0, 1) for k in (0, 1)]
    )
    assert cv2.imread(str(out / 'lq' / 'p0_0.png')).shape == (32, 32, 3)
    assert main(['--input', str(src), '--output', str(out)]) == 2  # not empty, no --overwrite

    from s2former_plugin.data.layouts import find_pairs

    assert len(find_pairs('paired', str(out))) == 4

    from basicsr.data import build_dataset

    ds = build_dataset({'name': 'F', 'type': 'DerainFolderDataset', 'layout': 'paired', 'dataroot': str(out),
                        'phase': 'train', 'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'scale': 1,
                        'io_backend': {'type': 'disk'}})  # fmt: skip
    assert len(ds) == 4 and ds[0]['lq'].shape == (3, 16, 16)


def test_derain_folder_dataset_layouts_and_errors(tmp_path):
    from basicsr.data import build_dataset

    base = tmp_path / 'RainDS' / 'train'
    for folder, name in (
        ('gt', 'norain'),
        ('raindrop', 'rd'),
        ('rainstreak', 'rain'),
        ('rainstreak_raindrop', 'rd-rain'),
    ):
        os.makedirs(base / folder)
        cv2.imwrite(str(base / folder / f'{name}-1.png'), np.full((10, 12, 3), (10, 20, 200), np.uint8))
    opt = {'name': 'R', 'type': 'DerainFolderDataset', 'layout': 'rainds', 'dataroot': str(tmp_path / 'RainDS'),
           'split': 'train', 'scale': 1, 'io_backend': {'type': 'disk'}}  # fmt: skip
    val = build_dataset({**opt, 'phase': 'val'})
    assert len(val) == 3
    item = val[0]
    assert item['gt'].shape == (3, 10, 12) and item['gt_path'].endswith('norain-1.png')
    assert torch.allclose(item['gt'][:, 0, 0], torch.tensor([200, 20, 10]) / 255.0)  # RGB, like PairedImageDataset
    train = build_dataset({**opt, 'phase': 'train', 'subset': 'rd', 'gt_size': 16})
    assert len(train) == 1 and train[0]['lq'].shape == (3, 16, 16)  # small images are padded for the crop
    with pytest.raises(ValueError, match='subset'):
        build_dataset({**opt, 'phase': 'val', 'subset': 'x'})
    with pytest.raises(ValueError, match='io_backend'):
        build_dataset({**opt, 'phase': 'val', 'io_backend': {'type': 'lmdb'}})
    with pytest.raises(ValueError, match='DerainFolderDataset:gt_size'):
        build_dataset({**opt, 'phase': 'train'})
    with pytest.raises(ValueError, match='DerainFolderDataset:mean/std'):
        build_dataset({**opt, 'phase': 'val', 'mean': [0.5, 0.5, 0.5]})
    (base / 'raindrop' / 'rd-2.png').write_bytes(b'')
    with pytest.raises(ValueError, match='strict: unmatched input .*rd-2.png'):
        build_dataset({**opt, 'phase': 'val', 'strict': True})


def test_speed_is_fine_for_on_the_fly_training():
    import time

    img = np.random.default_rng(0).random((128, 128, 3), dtype=np.float32)
    start = time.perf_counter()
    for seed in range(10):
        add_rain(img, seed)
    assert (time.perf_counter() - start) / 10 < 0.1  # ~3 ms on one core; generous for shared CI machines
