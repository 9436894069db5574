"""The benchmark's shared training batches: items as pure functions of (seed, index), records, resuming."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_BASICSR_ARCH, run, write_paired_folder

from s2former_plugin.benchmark import batches


def _dataset(root: Path, seed: int, **extra) -> batches.BenchmarkCrops:
    opt = {'dataroot': str(root), 'gt_size': 8, 'use_hflip': True, 'use_rot': True, 'seed': seed, 'num_samples': 12}
    return batches.BenchmarkCrops({**opt, **extra})


def test_items_depend_on_seed_and_index_only(tmp_path):
    root = write_paired_folder(tmp_path / 'd', n=3, size=(12, 20))
    a, b = _dataset(root, 5), _dataset(root, 5)
    forward = [a[i] for i in range(12)]
    backward = [b[i] for i in reversed(range(12))][::-1]  # another order, another instance: the same items
    for x, y in zip(forward, backward, strict=True):
        assert torch.equal(x['lq'], y['lq']) and torch.equal(x['gt'], y['gt']) and x['gt_path'] == y['gt_path']
    assert forward[0]['lq'].shape == (3, 8, 8) and forward[0]['lq'].dtype == torch.float32
    other = _dataset(root, 6)
    assert any(not torch.equal(forward[i]['gt'], other[i]['gt']) for i in range(12))
    # each pass over the 3 pairs holds every pair once, in a seeded order
    for p in range(4):
        assert sorted(a.pair_index(3 * p + j) for j in range(3)) == [0, 1, 2]
    assert [a.pair_index(i) for i in range(3)] == batches.pair_order(5, 3, 0).tolist()


def test_crop_plan_stays_inside_and_follows_the_switches():
    for i in range(50):
        plan = batches.crop_plan(0, i, 12, 20, 8, hflip=False, rot=False)
        assert 0 <= plan['top'] <= 4 and 0 <= plan['left'] <= 12
        assert not (plan['hflip'] or plan['vflip'] or plan['transpose'])
    flips = [batches.crop_plan(0, i, 12, 20, 8, hflip=True, rot=True) for i in range(200)]
    for key in ('hflip', 'vflip', 'transpose'):
        assert 50 < sum(p[key] for p in flips) < 150
    assert batches.crop_plan(3, 7, 12, 20, 8, True, True) == batches.crop_plan(3, 7, 12, 20, 8, True, True)


def test_crops_are_the_same_place_in_both_images(tmp_path):
    root = write_paired_folder(tmp_path / 'd', n=1, size=(12, 20))
    item = _dataset(root, 0, use_hflip=False, use_rot=False)[0]
    plan = batches.crop_plan(0, 0, 12, 20, 8, False, False)
    import cv2

    gt = cv2.imread(item['gt_path'])[..., ::-1].astype(np.float32) / 255
    want = gt[plan['top'] : plan['top'] + 8, plan['left'] : plan['left'] + 8].transpose(2, 0, 1)
    assert torch.equal(item['gt'], torch.from_numpy(np.ascontiguousarray(want)))


def test_digests_records_and_comparison(tmp_path):
    x = {'lq': torch.zeros(2, 3, 4, 4), 'gt': torch.ones(2, 3, 4, 4)}
    y = {'lq': torch.zeros(2, 3, 4, 4), 'gt': torch.ones(2, 3, 4, 4) * 0.5}
    assert batches.batch_digest(x) == batches.batch_digest({k: v.clone() for k, v in x.items()})
    assert batches.batch_digest(x) != batches.batch_digest(y)
    path = tmp_path / 'batches.txt'
    path.write_text('1 aa\n2 bb\n2 cc\n')  # a resumed run's later line wins
    assert batches.read_record(str(path)) == {1: 'aa', 2: 'cc'}
    same = batches.compare_records({'a': {1: 'x', 2: 'y'}, 'b': {1: 'x', 2: 'y'}})
    assert same == {'same': True, 'iterations': 2, 'first_difference': None}
    diff = batches.compare_records({'a': {1: 'x', 2: 'y'}, 'b': {1: 'x', 2: 'z'}, 'c': {1: 'x'}})
    assert diff['same'] is False and diff['first_difference'] == {'iteration': 2, 'archs': ['b', 'c']}


@pytest.mark.slow
def test_a_resumed_training_continues_with_the_batches_it_would_have_had(tmp_path):
    """Train 4 steps, forget the last 2 (final weights, last state), resume: the record is unchanged."""
    from s2former_plugin.benchmark.options import DEFAULTS
    from s2former_plugin.benchmark.train_child import build_train_options

    data = write_paired_folder(tmp_path / 'data', n=3, size=(20, 20))
    opt = {**DEFAULTS, 'train': {**DEFAULTS['train'], 'batch_size': 2, 'crop': 8, 'save_checkpoint_freq': 2}}
    topt = build_train_options(opt, {'name': 'vgg', 'network_g': dict(TINY_BASICSR_ARCH)}, str(data), 'cpu', 3, 4)
    rdir = tmp_path / 'run'
    rdir.mkdir()
    (rdir / 'options.yml').write_text(yaml.safe_dump(topt))
    args = ['-m', 's2former_plugin.benchmark.train_child', '-opt', str(rdir / 'options.yml'), '--auto_resume']
    proc = run(args, cwd=rdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = batches.read_record(str(rdir / 'batches.txt'))
    assert sorted(first) == [1, 2, 3, 4] and len(set(first.values())) == 4
    exp = rdir / 'experiments' / 'vgg'
    (exp / 'models' / 'net_g_latest.pth').unlink()
    (exp / 'training_states' / '4.state').unlink()
    shutil.copy(rdir / 'batches.txt', tmp_path / 'first.txt')
    proc = run(args, cwd=rdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((rdir / 'batches.txt').read_text().splitlines()) == 6  # steps 3 and 4 trained again
    assert batches.read_record(str(rdir / 'batches.txt')) == first
