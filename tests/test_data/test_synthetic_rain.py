"""Synthetic rain generator, its datasets (SyntheticRainDataset, DerainFolderDataset) and its CLI."""

import os

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin.data.clean_sources import load_skimage_photos
from s2former_plugin.data.rain_synthesis import MODES, RainConfig, StreakConfig, add_rain, rain_streaks, raindrops
from s2former_plugin.data.synthetic_rain import main


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


@pytest.mark.parametrize('mode', MODES)
def test_rain_mask_marks_where_rain_was_drawn_and_changes_nothing_else(clean, mode):
    no_haze = RainConfig.from_dict({'mode': mode, 'streak': {'haze': 0}})
    rainy, mask = add_rain(clean, 4, no_haze, return_mask=True)
    assert np.array_equal(rainy, add_rain(clean, 4, no_haze))  # same draws with or without the mask
    assert mask.shape == clean.shape[:2] and mask.dtype == bool and 0 < mask.mean() < 1
    changed = np.abs(rainy - clean).max(axis=2)
    assert (changed[~mask] < 0.05).all()  # outside the mask the rain is below the threshold's coverage
    assert changed[mask].mean() > 5 * changed[~mask].mean()
    _, loose = add_rain(clean, 4, no_haze, return_mask=True, mask_threshold=0.01)
    assert (loose >= mask).all() and loose.sum() > mask.sum()


def test_rain_coverage_of_the_two_kinds():
    img = np.zeros((40, 40, 3), np.float32)
    out, cover = rain_streaks(img, np.random.default_rng(2), StreakConfig(haze=0), True)
    np.testing.assert_allclose(out, np.repeat(cover[..., None], 3, axis=2), atol=1e-6)  # screen blend on black
    grey = np.full((40, 40, 3), 0.5, np.float32)
    out, alpha = raindrops(grey, np.random.default_rng(2), return_coverage=True)
    assert alpha.shape == (40, 40) and alpha.max() > 0.9 and (np.abs(out - grey).max(axis=2)[alpha == 0] == 0).all()


def test_dataset_hands_on_the_mask_only_when_asked():
    opt = dict(phase='val', num_samples=2, gt_size=32, rain={'mode': 'both', 'streak': {'haze': 0}})
    plain, masked = _synth(**opt), _synth(**opt, return_rain_mask=True)
    assert set(plain[0]) == {'lq', 'gt', 'lq_path', 'gt_path'}
    item = masked[0]
    assert torch.equal(item['lq'], plain[0]['lq'])
    m = item['rain_mask']
    assert m.shape == (1, 32, 32) and m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
    diff = (item['lq'] - item['gt']).abs().amax(0)
    assert diff[m[0] > 0].mean() > 3 * diff[m[0] == 0].mean()
    with pytest.raises(ValueError, match='return_rain_mask'):
        _synth(**opt, return_rain_mask='yes')


def test_cli_writes_masks_beside_the_pairs(tmp_path):
    src = tmp_path / 'clean'
    src.mkdir()
    cv2.imwrite(str(src / 'p.png'), np.full((40, 50, 3), 90, np.uint8))
    out = tmp_path / 'out'
    assert main(['--input', str(src), '--output', str(out), '--seed', '1']) == 0
    assert not (out / 'mask').exists()
    assert main(['--input', str(src), '--output', str(out), '--seed', '1', '--masks', '--overwrite']) == 0
    mask = cv2.imread(str(out / 'mask' / 'p.png'), cv2.IMREAD_UNCHANGED)
    lq = cv2.imread(str(out / 'lq' / 'p.png')).astype(np.float32)
    gt = cv2.imread(str(out / 'gt' / 'p.png')).astype(np.float32)
    _, expected = add_rain(gt.astype(np.uint8), np.random.default_rng([1, 0, 0]), return_mask=True)
    assert mask.shape == (40, 50) and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask > 0, expected)
    assert np.abs(lq - gt).max(axis=2)[mask > 0].mean() > np.abs(lq - gt).max(axis=2)[mask == 0].mean()
    assert main(['--input', str(src), '--output', str(out), '--seed', '2']) == 2  # an earlier run's masks: refused


def test_the_imports_docs_data_shows_resolve():
    # docs/data.md shows how its pictures were made; the package's imports it names must exist
    from helpers import REPO

    lines = [
        line.strip()
        for line in (REPO / 'docs' / 'data.md').read_text(encoding='utf-8').splitlines()
        if line.strip().startswith('from s2former_plugin')
    ]
    assert any('rain_synthesis import' in line for line in lines)
    for line in lines:
        exec(line, {})
