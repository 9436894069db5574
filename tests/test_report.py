"""Report CLI on a tiny synthetic set: files, JSON schema, pairing rules, offline-unavailable metrics, errors."""

import csv
import json
import math

import cv2
import numpy as np
import pytest

from s2former_plugin import report
from s2former_plugin.metrics import protocols


@pytest.fixture()
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ('pred', 'gt', 'input', 'unc')}
    for d in dirs.values():
        d.mkdir()
    for i in (1, 2, 3):
        gt = rng.integers(30, 220, (20, 28, 3), dtype=np.uint8)
        noise = rng.integers(-3 * i, 3 * i + 1, gt.shape)
        pred = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(dirs['gt'] / f'norain-{i}.png'), gt)
        cv2.imwrite(str(dirs['pred'] / f'norain-{i}x2.png'), pred)  # Rain100 naming: pred keeps the input name
        cv2.imwrite(str(dirs['input'] / f'norain-{i}x2.png'), np.clip(gt.astype(int) + 60, 0, 255).astype(np.uint8))
        cv2.imwrite(str(dirs['unc'] / f'norain-{i}x2.png'), rng.integers(0, 255, gt.shape, dtype=np.uint8))
    cv2.imwrite(str(dirs['pred'] / 'orphan.png'), gt)
    return tmp_path, dirs


def test_gt_stem_candidates_follow_dataset_naming():
    assert 'norain-12' in report.gt_stem_candidates('norain-12x2')
    assert '7_clean' in report.gt_stem_candidates('7_rain')
    assert 'pie-norain-3' in report.gt_stem_candidates('pie-rd-rain-3')
    assert 'norain-5' in report.gt_stem_candidates('rd-5')
    assert report.gt_stem_candidates('train-1') == ['train-1']  # 'rain' only as a whole word


def test_report_writes_all_files(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_cache'))  # lpips weights cannot be found: no download
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    root, d = dataset
    out = root / 'out'
    argv = ['--pred', str(d['pred']), '--gt', str(d['gt']), '--out', str(out), '--metrics', 'psnr,ssim,lpips']
    argv += ['--input', str(d['input']), '--uncertainty', str(d['unc']), '--workers', '2', '--no-progress']
    assert report.main(argv) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert set(doc) >= {'mean', 'per_image', 'unavailable'}
    assert sorted(doc['per_image']) == ['norain-1x2', 'norain-2x2', 'norain-3x2']
    assert set(doc['mean']) == {'psnr', 'ssim'}
    assert 'lpips' in doc['unavailable'] and 'offline' in doc['unavailable']['lpips']
    assert doc['unmatched'][0].endswith('orphan.png')
    psnrs = [doc['per_image'][n]['psnr'] for n in sorted(doc['per_image'])]
    assert psnrs[0] > psnrs[1] > psnrs[2]  # more noise, lower PSNR
    assert doc['mean']['psnr'] == pytest.approx(np.mean(psnrs))
    rows = list(csv.reader((out / 'metrics.csv').open()))
    assert rows[0] == ['image', 'psnr', 'ssim'] and rows[-1][0] == 'mean' and len(rows) == 5
    md = (out / 'report.md').read_text()
    assert '| psnr |' in md and 'lpips' in md and 'unavailable' in md
    page = (out / 'report.html').read_text()
    assert page.count('data:image/png;base64,') == 1 + 2 * 4  # plot + best/worst x input/output/GT/uncertainty
    assert 'Worst: norain-3x2' in page and 'Best: norain-1x2' in page
    assert 'lpips unavailable' in capsys.readouterr().out
    assert not any(p.is_file() for p in (tmp_path / 'empty_cache').rglob('*'))


def test_official_protocol_and_identical_images(dataset):
    root, d = dataset
    out = root / 'out_official'
    argv = ['--pred', str(d['gt']), '--gt', str(d['gt']), '--out', str(out), '--protocol', 'official']
    assert report.main([*argv, '--metrics', 'psnr,ssim,lpips', '--no-progress']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert doc['mean'] == {'psnr': 'inf', 'ssim': pytest.approx(1.0)}  # inf is written as a string (JSON)
    assert doc['infinite'] == {'psnr': 3}
    assert 'official protocol' in doc['unavailable']['lpips']


def test_one_identical_image_does_not_make_the_mean_infinite(dataset):
    root, d = dataset
    cv2.imwrite(str(d['pred'] / 'norain-2x2.png'), cv2.imread(str(d['gt'] / 'norain-2.png')))
    out = root / 'out_inf'
    argv = ['--pred', str(d['pred']), '--gt', str(d['gt']), '--out', str(out), '--protocol', 'official']
    assert report.main([*argv, '--no-progress']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert doc['per_image']['norain-2x2']['psnr'] == 'inf'
    finite = [doc['per_image'][n]['psnr'] for n in ('norain-1x2', 'norain-3x2')]
    assert doc['mean']['psnr'] == pytest.approx(np.mean(finite)) and doc['infinite'] == {'psnr': 1}
    assert doc['mean']['ssim'] == pytest.approx(np.mean([v['ssim'] for v in doc['per_image'].values()]))
    assert '`psnr`: 1 non-finite value(s)' in (out / 'report.md').read_text()
    assert report.finite_mean([1.0, math.inf, 3.0]) == (2.0, 1)


def test_one_line_errors(dataset, capsys):
    root, d = dataset
    assert report.main(['--pred', str(root / 'nope'), '--gt', str(d['gt']), '--out', str(root / 'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'folder not found' in err and 'nope' in err
    (root / 'other').mkdir()
    cv2.imwrite(str(root / 'other' / 'x.png'), np.zeros((4, 4, 3), np.uint8))
    assert report.main(['--pred', str(root / 'other'), '--gt', str(d['gt']), '--out', str(root / 'o')]) == 2
    assert 'no prediction' in capsys.readouterr().err


def test_unreadable_and_mismatched_images_are_skipped(dataset, capsys):
    root, d = dataset
    (d['pred'] / 'norain-2x2.png').write_bytes(b'not a png')
    cv2.imwrite(str(d['pred'] / 'norain-3x2.png'), np.zeros((10, 10, 3), np.uint8))
    out = root / 'out_bad'
    argv = ['--pred', str(d['pred']), '--gt', str(d['gt']), '--out', str(out), '--no-progress']
    assert report.main(argv) == 1
    doc = json.loads((out / 'metrics.json').read_text())
    assert list(doc['per_image']) == ['norain-1x2'] and set(doc['errors']) == {'norain-2x2', 'norain-3x2'}
    assert math.isfinite(doc['mean']['psnr'])
    assert 'cannot read' in capsys.readouterr().err


def test_float_tiff_and_infer_double_extension_names_are_scored(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'pred').mkdir()
    gt = rng.integers(30, 220, (20, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'gt' / 'a.png'), gt)
    cv2.imwrite(str(tmp_path / 'gt' / 'b.png'), gt)
    # infer writes float images as float TIFF, and '<name>.png' where two inputs share a stem (a.png + a.jpg).
    pred = np.clip(gt / 255.0 + rng.normal(0, 0.01, gt.shape), 0, 1).astype(np.float32)
    cv2.imwrite(str(tmp_path / 'pred' / 'a.png.tiff'), pred)
    cv2.imwrite(str(tmp_path / 'pred' / 'a.jpg.png'), gt)
    cv2.imwrite(str(tmp_path / 'pred' / 'b.png'), np.rint(pred * 255).astype(np.uint8))
    assert report.read_image(str(tmp_path / 'pred' / 'a.png.tiff')).dtype == np.float32
    pairs, unmatched = report.pair_images(str(tmp_path / 'pred'), str(tmp_path / 'gt'))
    assert unmatched == []
    assert {p.name: p.gt.rsplit('/', 1)[-1] for p in pairs} == {'a.png': 'a.png', 'a.jpg': 'a.png', 'b': 'b.png'}
    ev = report.evaluate(pairs, ['psnr', 'ssim'], workers=1, progress=False)
    assert not ev.errors
    # The float prediction scores (close to) what its 8-bit rounding scores: the same pixels on another scale.
    assert ev.per_image['a.png']['psnr'] == pytest.approx(ev.per_image['b']['psnr'], abs=0.2)
    assert ev.per_image['a.jpg']['psnr'] > 60  # identical pixels
