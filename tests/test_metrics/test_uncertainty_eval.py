"""Folder evaluation of raw uncertainty maps (metrics/uncertainty_eval.py): the raw map files infer writes
(metrics/uncertainty_maps.py), pairing by stem, per-image rows equal to the measures, honest set means, the CSV and
the curves' plot (reporting/uncertainty.py)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import infer
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.inference import stack_uncertainties, unstack_uncertainties
from s2former_plugin.metrics import uncertainty as U
from s2former_plugin.metrics import uncertainty_eval as E
from s2former_plugin.metrics import uncertainty_maps as M
from s2former_plugin.metrics.uncertainty import UncertaintyError
from s2former_plugin.reporting.uncertainty import plot_curves, write_csv


def _image(seed: int, shape=(20, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (0, 0), 1)


@pytest.fixture
def folders(tmp_path):
    """Three predictions with ground truth, five-scale raw maps (final = the Y error plus noise) and rain masks."""
    dirs = {k: tmp_path / k for k in ('pred', 'gt', 'unc', 'mask')}
    for d in dirs.values():
        d.mkdir()
    for i in range(3):
        pred, gt = _image(i), _image(10 + i)
        cv2.imwrite(str(dirs['pred'] / f'im{i}.png'), pred)
        cv2.imwrite(str(dirs['gt'] / f'im{i}.png'), gt)
        err = U.error_map(pred, gt)
        noisy = err + 0.05 * np.random.default_rng(i).random(err.shape)
        maps = {'final': np.stack([noisy] * 3), 'full': np.stack([err] * 3)}
        for name, s in (('half', 2), ('quarter', 4), ('eighth', 8)):
            maps[name] = np.stack([err[::s, ::s]] * 3)
        M.save_raw_maps(str(dirs['unc'] / f'im{i}.npz'), maps)
        cv2.imwrite(str(dirs['mask'] / f'im{i}.png'), np.uint8(err > np.median(err)) * 255)
    return {k: str(v) for k, v in dirs.items()}


def test_raw_map_files(tmp_path):
    maps = {'final': np.random.rand(3, 5, 4), 'half': np.random.rand(3, 3, 2)}
    M.save_raw_maps(str(tmp_path / 'a.npz'), maps)
    back = M.load_raw_maps(str(tmp_path / 'a.npz'))
    assert sorted(back) == ['final', 'half'] and back['final'].dtype == np.float32
    np.testing.assert_array_equal(back['half'], maps['half'].astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ['a.npz']  # no temporary file left
    assert M.raw_map_name('a.png') == 'a.npz' and M.raw_map_name('a.png.png') == 'a.png.npz'
    np.save(tmp_path / 'b.npy', np.ones((4, 4), np.float32))
    assert M.read_map(str(tmp_path / 'b.npy')).shape == (4, 4)
    cv2.imwrite(str(tmp_path / 'c.png'), np.zeros((4, 4, 3), np.uint8))
    np.savez(tmp_path / 'd.npz', final=np.zeros((2, 2), np.uint8))
    (tmp_path / 'e.npz').write_bytes(b'not a zip')
    for path, scale, message in (
        ('c.png', 'final', r'c\.png: not a raw uncertainty map .*colour-mapped pictures are not measured'),
        ('a.npz', 'full', r"a\.npz: no 'full' map \(holds final, half\)"),
        ('a.npz', 'tiny', "scale: 'tiny' is not one of final"),
        ('d.npz', 'final', r"d\.npz: map 'final' is uint8, not float"),
        ('e.npz', 'final', r'e\.npz: cannot read uncertainty maps'),
        ('gone.npz', 'final', r'gone\.npz: uncertainty map not found'),
    ):
        with pytest.raises(UncertaintyError, match=message):
            M.read_map(str(tmp_path / path), scale)
    with pytest.raises(ValueError, match="unknown uncertainty scale 'x'"):
        M.save_raw_maps(str(tmp_path / 'f.npz'), {'x': np.zeros((1, 1))})


def test_map_at_image_size_repeats_coarse_scales():
    u = np.arange(6, dtype=np.float32).reshape(3, 2)  # the 1/2 scale of a 5 x 4 image
    np.testing.assert_array_equal(M.map_at_image_size(u, 'half', (5, 4)), np.repeat(np.repeat(u, 2, 0), 2, 1)[:5])
    assert M.map_at_image_size(np.zeros((3, 5, 4)), 'final', (5, 4)).shape == (3, 5, 4)
    with pytest.raises(UncertaintyError, match=r'^a\.npz: final uncertainty map is 2x3, expected 4x5 for a 4x5 image'):
        M.map_at_image_size(u, 'final', (5, 4), 'a.npz')


def test_stacked_scales_round_trip_exactly():
    sizes = [(7, 5), (7, 5), (4, 3), (2, 2), (1, 1)]  # a 7 x 5 image's five maps
    maps = [torch.rand(1, 3, h, w) for h, w in sizes]
    stacked = stack_uncertainties(maps, (7, 5))
    assert stacked.shape == (1, 15, 7, 5) and stacked.dtype == torch.float32
    back = unstack_uncertainties(stacked[0].permute(1, 2, 0).numpy())
    assert list(back) == list(U.SCALES)
    for m, name in zip(maps, U.SCALES):
        np.testing.assert_array_equal(back[name], m[0].numpy())


def test_folder_evaluation_equals_the_measures(folders):
    ev = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], folders['mask'], steps=10)
    assert ev.complete and ev.n_images == 3 and list(ev.per_image) == ['im0', 'im1', 'im2']
    pred, gt = cv2.imread(f'{folders["pred"]}/im1.png'), cv2.imread(f'{folders["gt"]}/im1.png')
    u = M.read_map(f'{folders["unc"]}/im1.npz')
    mask = cv2.imread(f'{folders["mask"]}/im1.png', cv2.IMREAD_GRAYSCALE) > 0
    direct = U.score_uncertainty(u, U.error_map(pred, gt), mask, steps=10)
    assert ev.per_image['im1'] == direct.row()
    assert ev.curves['im1']['ours'] == direct.curves['ours']
    means = ev.mean()
    assert means['spearman'] == pytest.approx(np.mean([r['spearman'] for r in ev.per_image.values()]))
    assert 0.8 < means['spearman'] < 1 and means['auroc'] > 0.8
    # The mean AUSE is the area between the mean curves.
    mc = ev.mean_curves()
    assert means['ause'] == pytest.approx(
        U.ause(np.array(mc['ours']), np.array(mc['oracle']), np.array(mc['fractions']))
    )
    summary = json.loads(json.dumps(ev.summary()))  # JSON-ready
    assert summary['complete'] and summary['scale'] == 'final' and 'mean' in summary and 'mean_of_scored' not in summary
    assert ev.line().startswith('uncertainty (final, mean of 3 images): spearman ')
    # The full-scale map is the error itself: perfect (up to the float32 rounding of the stored map).
    full = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], scale='full')
    assert full.mean()['spearman'] == pytest.approx(1.0, abs=1e-6) and full.mean()['ause'] < 1e-9
    assert 'auroc' not in full.mean()
    coarse = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], scale='eighth')
    assert coarse.complete and coarse.mean()['spearman'] < full.mean()['spearman']


def test_bad_or_missing_maps_are_named_and_the_mean_is_labelled(folders, tmp_path):
    import os

    os.remove(f'{folders["unc"]}/im0.npz')
    M.save_raw_maps(f'{folders["unc"]}/im1.npz', {'final': np.ones((3, 20, 24))})  # constant
    os.remove(f'{folders["mask"]}/im2.png')
    ev = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'])
    assert not ev.complete and list(ev.per_image) == ['im2'] and sorted(ev.errors) == ['im0', 'im1']
    assert ev.errors['im0'].endswith(f'im0.png: no uncertainty map (im0.npz) in {folders["unc"]}')
    assert (
        ev.errors['im1'] == f'{folders["unc"]}/im1.npz: the uncertainty map is constant: rank correlation is undefined'
    )
    summary = ev.summary()
    assert 'mean' not in summary and summary['scored'] == 1 and summary['images'] == 3 and 'mean_of_scored' in summary
    assert 'the 1 scored of 3 images (2 refused)' in ev.line()
    write_csv(ev, str(tmp_path / 'u.csv'))
    rows = list(csv.reader(open(tmp_path / 'u.csv', encoding='utf-8')))
    assert rows[0] == ['image', 'spearman', 'ause', 'aurg', 'mean_error', 'spread', 'note']
    assert [r[0] for r in rows[1:]] == ['im2', 'mean of 1 scored of 3', 'im0', 'im1']
    assert rows[3][-1].startswith('refused: ')
    with_masks = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], folders['mask'])
    assert with_masks.errors['im2'].endswith(f'im2.png: no rain mask (im2.png) in {folders["mask"]}')
    with pytest.raises(UncertaintyError, match=r'im0\.png: no uncertainty map'):  # strict: the first bad image
        E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], strict=True)
    M.save_raw_maps(f'{folders["unc"]}/im0.npz', {'final': np.ones((3, 20, 24))})
    with pytest.raises(UncertaintyError, match=r'im0\.npz: the uncertainty map is constant'):
        E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], strict=True)
    for i in (0, 1):
        M.save_raw_maps(f'{folders["unc"]}/im{i}.npz', {'final': np.random.rand(3, 20, 24)})
    M.save_raw_maps(f'{folders["unc"]}/im2.npz', {'final': np.ones((3, 10, 12))})
    with pytest.raises(UncertaintyError, match=r'im2\.npz: final uncertainty map is 12x10, expected 24x20'):
        E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'], strict=True)


def test_shared_ground_truth_is_refused_unless_allowed_as_in_the_report(tmp_path):
    # two predictions (norain-1x2, norain-1) of one clean image: one test set per run unless --allow-shared-gt
    from s2former_plugin.metrics.pairing import PairingError

    for d in ('pred', 'gt', 'unc'):
        (tmp_path / d).mkdir()
    gt = _image(0)
    cv2.imwrite(str(tmp_path / 'gt' / 'norain-1.png'), gt)
    for i, stem in enumerate(('norain-1x2', 'norain-1')):
        pred = _image(1 + i)
        cv2.imwrite(str(tmp_path / 'pred' / f'{stem}.png'), pred)
        M.save_raw_maps(str(tmp_path / 'unc' / f'{stem}.npz'), {'final': np.stack([U.error_map(pred, gt)] * 3)})
    args = (str(tmp_path / 'unc'), str(tmp_path / 'pred'), str(tmp_path / 'gt'))
    with pytest.raises(PairingError, match='allow-shared-gt'):
        E.evaluate_uncertainty(*args)
    result = E.evaluate_uncertainty(*args, allow_shared_gt=True)
    assert sorted(result.per_image) == ['norain-1', 'norain-1x2'] and result.errors == {}


def test_accumulator_refuses_a_set_with_masks_for_part_of_it():
    acc = E.UncertaintyAccumulator()
    gt = _image(1)
    for i, mask in enumerate((np.eye(20, 24), None)):
        pred = _image(20 + i)
        acc.add(f'x{i}', U.error_map(pred, gt), pred, gt, mask)
    with pytest.raises(UncertaintyError, match='auroc: 1 of 2 scored images have it'):
        acc.result.mean()
    with pytest.raises(UncertaintyError, match='x0: given twice'):
        acc.add('x0', np.zeros((20, 24)), gt, gt)


def test_plot_curves_writes_a_png(folders, tmp_path):
    ev = E.evaluate_uncertainty(folders['unc'], folders['pred'], folders['gt'])
    plot_curves({'net': ev, 'again': ev}, str(tmp_path / 'curves.png'))
    img = cv2.imread(str(tmp_path / 'curves.png'))
    assert img is not None and img.shape[0] > 200 and img.std() > 10


def test_infer_writes_the_five_raw_maps(tmp_path):
    torch.manual_seed(4)
    net = S2Former(preset='small').eval()
    torch.save(net.state_dict(), tmp_path / 'w.pth')
    (tmp_path / 'in').mkdir()
    img = _image(0, (21, 26))
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), img)
    argv = ['--weights', str(tmp_path / 'w.pth'), '--input', str(tmp_path / 'in'), '--device', 'cpu', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'out'), '--tile', '0', '--save-uncertainty']) == 0
    maps = M.load_raw_maps(str(tmp_path / 'out' / 'uncertainty' / 'a.npz'))
    x = torch.from_numpy(img[..., ::-1] / 255.0).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        _, expected = net(x, return_all=True)
    assert list(maps) == list(U.SCALES)
    for name, e in zip(U.SCALES, expected):  # whole image: exactly the network's maps
        assert maps[name].dtype == np.float32 and maps[name].shape == e.shape[1:]
        np.testing.assert_allclose(maps[name], e[0].numpy(), atol=1e-6)
    assert (tmp_path / 'out' / 'uncertainty' / 'a.png').is_file()
    assert (
        infer.main(
            [*argv, '--output', str(tmp_path / 'tiled'), '--tile', '16', '--tile-overlap', '4', '--save-uncertainty']
        )
        == 0
    )
    tiled = M.load_raw_maps(str(tmp_path / 'tiled' / 'uncertainty' / 'a.npz'))
    assert {k: v.shape for k, v in tiled.items()} == {k: v.shape for k, v in maps.items()}
    assert '<name>.npz' in infer.build_parser().format_help()
