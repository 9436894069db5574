"""Report CLI on a tiny synthetic set: files, JSON schema, pairing rules, offline-unavailable metrics, errors."""

import csv
import json
import math
import os
import socket
from html.parser import HTMLParser
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from helpers import photo

from s2former_plugin import report
from s2former_plugin.metrics import evaluation, pairing, protocols, scoring


class _Gallery(HTMLParser):
    """Rows of the report's gallery table: ``[(links, thumbnail count)]``."""

    def __init__(self):
        super().__init__()
        self.inside, self.rows = False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'table':
            self.inside = attrs.get('class') == 'gallery'
        elif self.inside and tag == 'tr':
            self.rows.append(([], 0))
        elif self.inside and self.rows and tag == 'a':
            self.rows[-1][0].append(unquote(attrs['href']))
        elif self.inside and self.rows and tag == 'img' and attrs.get('class') == 'thumb':
            self.rows[-1] = (self.rows[-1][0], self.rows[-1][1] + 1)

    def handle_endtag(self, tag):
        if tag == 'table':
            self.inside = False


def _check_gallery(out, names, per_row):
    """One gallery row per image, ``per_row`` thumbnails each, every link a readable image beside the page."""
    page = (out / 'report.html').read_text()
    parser = _Gallery()
    parser.feed(page)
    rows = parser.rows[1:]  # the first row holds the headings
    assert len(rows) == len(names)
    for name, (links, thumbs) in zip(names, rows):
        assert thumbs == per_row and len(links) == per_row, name
        for link in links:
            assert not os.path.isabs(link) and cv2.imread(str(out / link)) is not None, link
    return rows


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
    assert 'norain-12' in pairing.gt_stem_candidates('norain-12x2')
    assert '7_clean' in pairing.gt_stem_candidates('7_rain')
    assert 'pie-norain-3' in pairing.gt_stem_candidates('pie-rd-rain-3')
    assert 'norain-5' in pairing.gt_stem_candidates('rd-5')
    assert pairing.gt_stem_candidates('train-1') == ['train-1']  # 'rain' only as a whole word


def test_report_writes_all_files(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_cache'))  # lpips weights cannot be found: no download
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    root, d = dataset
    out = root / 'out'
    argv = ['--pred', str(d['pred']), '--gt', str(d['gt']), '--out', str(out), '--metrics', 'psnr,ssim,lpips']
    argv += ['--input', str(d['input']), '--uncertainty', str(d['unc']), '--workers', '2', '--no-progress']
    assert report.main(argv) == 1  # orphan.png has no ground truth: an error, but the report is written
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and '1 prediction(s) without ground truth' in err
    assert json.loads((out / 'metrics.json').read_text())['missing_count']['no_ground_truth'] == 1
    assert report.main([*argv, '--allow-missing']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert set(doc) >= {'mean', 'per_image', 'unavailable'}
    assert sorted(doc['per_image']) == ['norain-1x2', 'norain-2x2', 'norain-3x2']
    assert set(doc['mean']) == {'psnr', 'ssim'}
    assert 'lpips' in doc['unavailable'] and 'offline' in doc['unavailable']['lpips']
    assert doc['missing']['no_ground_truth'][0].endswith('orphan.png')
    assert doc['missing_count'] == {
        'no_ground_truth': 1,
        'no_prediction_for_ground_truth': 0,
        'no_input': 0,
        'no_prediction_for_input': 0,
    }
    assert doc['lower_better'] == {'psnr': False, 'ssim': False}
    psnrs = [doc['per_image'][n]['psnr'] for n in sorted(doc['per_image'])]
    assert psnrs[0] > psnrs[1] > psnrs[2]  # more noise, lower PSNR
    assert doc['mean']['psnr'] == pytest.approx(np.mean(psnrs))
    rows = list(csv.reader((out / 'metrics.csv').open()))
    assert rows[0] == ['image', 'psnr', 'ssim'] and rows[-1][0] == 'mean' and len(rows) == 5
    md = (out / 'report.md').read_text()
    assert '| psnr |' in md and 'lpips' in md and 'unavailable' in md and '1 prediction(s) without ground truth' in md
    page = (out / 'report.html').read_text()
    assert page.count('data:image/png;base64,') == 1 + 2 * 4  # plot + best/worst x input/output/GT/uncertainty
    assert 'Worst: norain-3x2' in page and 'Best: norain-1x2' in page
    _check_gallery(out, ['norain-1x2', 'norain-2x2', 'norain-3x2'], 4)  # input | output | ground truth | uncertainty
    assert 'lpips unavailable' in capsys.readouterr().out
    assert not (tmp_path / 'empty_cache').exists()


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
    assert report.main([*argv, '--no-progress', '--allow-missing']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert doc['per_image']['norain-2x2']['psnr'] == 'inf'
    finite = [doc['per_image'][n]['psnr'] for n in ('norain-1x2', 'norain-3x2')]
    assert doc['mean']['psnr'] == pytest.approx(np.mean(finite)) and doc['infinite'] == {'psnr': 1}
    assert doc['mean']['ssim'] == pytest.approx(np.mean([v['ssim'] for v in doc['per_image'].values()]))
    assert '`psnr`: 1 non-finite value(s)' in (out / 'report.md').read_text()
    assert scoring.finite_mean([1.0, math.inf, 3.0]) == (2.0, 1)
    assert scoring.finite_mean([math.inf, math.inf]) == (math.inf, 2)
    for bad in (math.nan, -math.inf):  # a failed score is never averaged around
        with pytest.raises(ValueError, match='NaN or -inf'):
            scoring.finite_mean([1.0, bad])


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
    argv = ['--pred', str(d['pred']), '--gt', str(d['gt']), '--out', str(out), '--no-progress', '--allow-missing']
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
    assert scoring.read_image(str(tmp_path / 'pred' / 'a.png.tiff')).dtype == np.float32
    # Two predictions of one ground truth are refused by default (two test sets in one mean), paired when allowed.
    with pytest.raises(pairing.PairingError, match=r'a\.png: a\.jpg, a\.png\); score one test set per run'):
        pairing.pair_images(str(tmp_path / 'pred'), str(tmp_path / 'gt'))
    pairs, missing = pairing.collect_pairs(str(tmp_path / 'pred'), str(tmp_path / 'gt'), allow_shared_gt=True)
    assert missing['no_ground_truth'] == []
    assert {p.name: p.gt.rsplit('/', 1)[-1] for p in pairs} == {'a.png': 'a.png', 'a.jpg': 'a.png', 'b': 'b.png'}
    ev = evaluation.evaluate(pairs, ['psnr', 'ssim'], workers=1, progress=False)
    assert not ev.errors
    # The float prediction scores (close to) what its 8-bit rounding scores: the same pixels on another scale.
    assert ev.per_image['a.png']['psnr'] == pytest.approx(ev.per_image['b']['psnr'], abs=0.2)
    assert ev.per_image['a.jpg']['psnr'] > 60  # identical pixels


# ----------------------------------------------------------------------------------------------------------------
# No ground truth: no-reference metrics, inputs, gallery
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def real_rain(tmp_path):
    """Rainy photos, their derained versions (infer's layout, with uncertainty maps) and no clean images."""
    dirs = {k: tmp_path / k for k in ('rainy', 'derained', 'derained/uncertainty')}
    for d in dirs.values():
        d.mkdir()
    for i, name in enumerate(('street', 'car_2', 'IMG 7')):
        clean = photo(i)
        rng = np.random.default_rng(10 + i)
        streaks = np.zeros(clean.shape[:2], np.float32)  # vertical rain streaks of random brightness
        cols = rng.choice(clean.shape[1], clean.shape[1] // 8, replace=False)
        streaks[:, cols] = rng.uniform(40, 110, len(cols))
        streaks = cv2.GaussianBlur(streaks, (0, 0), 0.8)
        rainy = np.clip(clean + streaks[..., None], 0, 255).astype(np.uint8)
        cv2.imwrite(str(dirs['rainy'] / f'{name}.jpg'), rainy)
        cv2.imwrite(str(dirs['derained'] / f'{name}.png'), clean)
        cv2.imwrite(str(dirs['derained/uncertainty'] / f'{name}.png'), cv2.applyColorMap(clean[..., 1], 2))
    return tmp_path, dirs


def test_no_reference_report_offline_with_empty_cache(real_rain, monkeypatch, capsys):
    from basicsr.metrics import calculate_niqe

    root, d = real_rain
    cache = root / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(cache))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise OSError('network disabled in this test')

    monkeypatch.setattr(socket.socket, 'connect', no_network)
    out = root / 'report'
    argv = ['--pred', str(d['derained']), '--input', str(d['rainy']), '--out', str(out), '--no-progress']
    assert report.main([*argv, '--workers', '2']) == 0, capsys.readouterr().err
    doc = json.loads((out / 'metrics.json').read_text())
    names = ['car_2', 'IMG 7', 'street']  # natural order
    assert list(doc['per_image']) == names and doc['unavailable'] == {} and doc['reference'].startswith('none')
    cols = ['niqe', 'niqe_input', 'niqe_change', 'piqe', 'piqe_input', 'piqe_change']
    assert list(doc['mean']) == cols and doc['lower_better'] == dict.fromkeys(cols, True)
    assert 'calculate_niqe' in doc['implementation']['niqe'] and doc['implementation']['piqe'] == 'pyiqa piqe'
    for name, vals in doc['per_image'].items():
        assert vals['niqe'] == calculate_niqe(cv2.imread(str(d['derained'] / f'{name}.png')), 0)
        assert vals['niqe_input'] == calculate_niqe(cv2.imread(str(d['rainy'] / f'{name}.jpg')), 0)
        assert vals['niqe_change'] == pytest.approx(vals['niqe'] - vals['niqe_input'])
    for c in cols:
        assert doc['mean'][c] == pytest.approx(np.mean([v[c] for v in doc['per_image'].values()]))
    assert doc['missing_count'] == {'no_input': 0, 'no_prediction_for_input': 0}
    md = (out / 'report.md').read_text()
    assert '| niqe | lower |' in md and 'calculate_niqe' in md
    rows = _check_gallery(out, names, 3)  # rainy | derained | uncertainty (found in infer's layout)
    assert rows[0][0] == ['images/car_2_input.jpg', 'images/car_2_pred.png', 'images/car_2_uncertainty.png']
    assert not cache.exists()  # nothing created in the torch hub cache


def test_no_reference_and_full_reference_in_one_report(real_rain):
    root, d = real_rain
    out = root / 'both'
    argv = ['--pred', str(d['derained']), '--gt', str(d['derained']), '--input', str(d['rainy']), '--out', str(out)]
    assert report.main([*argv, '--metrics', 'psnr,niqe', '--no-progress']) == 0
    doc = json.loads((out / 'metrics.json').read_text())
    assert list(doc['mean']) == ['psnr', 'niqe', 'niqe_input', 'niqe_change'] and doc['reference'] == 'ground truth'
    assert doc['lower_better'] == {'psnr': False, 'niqe': True, 'niqe_input': True, 'niqe_change': True}
    _check_gallery(out, ['car_2', 'IMG 7', 'street'], 4)  # rainy | derained | ground truth | uncertainty


def test_no_reference_bad_inputs_still_write_the_report(real_rain, capsys):
    root, d = real_rain
    (d['derained'] / 'car_2.png').write_bytes(b'\x89PNG\r\n not an image')
    (d['rainy'] / 'extra.jpg').write_bytes((d['rainy'] / 'street.jpg').read_bytes())  # no prediction for it
    out = root / 'bad'
    argv = ['--pred', str(d['derained']), '--input', str(d['rainy']), '--out', str(out), '--no-progress']
    assert report.main([*argv, '--metrics', 'niqe,nique']) == 1
    err = capsys.readouterr().err.strip().split('\n')
    assert len(err) == 3  # one line per problem
    assert (
        "unknown metric 'nique'" in err[0] and 'car_2' in err[1] and '1 input image(s) without a prediction' in err[2]
    )
    doc = json.loads((out / 'metrics.json').read_text())
    assert list(doc['per_image']) == ['IMG 7', 'street'] and 'car_2' in doc['errors']
    assert 'unknown metric' in doc['unavailable']['nique'] and list(doc['mean']) == [
        'niqe',
        'niqe_input',
        'niqe_change',
    ]
    assert doc['missing_count'] == {'no_input': 0, 'no_prediction_for_input': 1}
    page = (out / 'report.html').read_text()
    assert 'skipped: ' in page and page.count('class="thumb"') == 3 * 3 - 1  # the unreadable one: an error cell
    assert report.main([*argv, '--allow-missing']) == 1  # the unreadable image is still an error
    assert report.main([*argv, '--metrics', 'psnr']) == 1  # full-reference without --gt
    assert 'give --gt' in capsys.readouterr().err
    assert report.main([*argv, '--metrics', 'niqe,lpips']) == 1  # even when its weights are missing too
    assert 'lpips compares with ground truth' in capsys.readouterr().err
    assert report.main([*argv, '--allow-missing', '--protocol', 'official']) == 1  # defines psnr/ssim only
    assert 'none of niqe, piqe can be computed' in capsys.readouterr().err


def test_out_folder_must_not_be_an_input(real_rain, capsys):
    root, d = real_rain
    before = sorted(p.name for p in d['derained'].iterdir())
    assert report.main(['--pred', str(d['derained']), '--out', str(d['derained']), '--no-progress']) == 2
    assert 'would write into the --pred folder' in capsys.readouterr().err
    assert sorted(p.name for p in d['derained'].iterdir()) == before


def test_nan_score_skips_the_image_loudly(real_rain, monkeypatch, capsys):
    root, d = real_rain
    compute = protocols.compute

    def nan_for_street(metric, pred, *args, **kwargs):  # a metric that fails numerically on one image
        value = compute(metric, pred, *args, **kwargs)
        return math.nan if metric == 'piqe' and pred.shape == street.shape and (pred == street).all() else value

    street = cv2.imread(str(d['derained'] / 'street.png'))
    monkeypatch.setattr(protocols, 'compute', nan_for_street)
    out = root / 'nan'
    assert report.main(['--pred', str(d['derained']), '--out', str(out), '--no-progress']) == 1
    assert 'skipped street: ValueError: piqe is not a number (nan)' in capsys.readouterr().err
    doc = json.loads((out / 'metrics.json').read_text())
    assert list(doc['per_image']) == ['car_2', 'IMG 7'] and 'street' in doc['errors']
    assert doc['mean']['piqe'] == pytest.approx(np.mean([v['piqe'] for v in doc['per_image'].values()]))


# ----------------------------------------------------------------------------------------------------------------
# Reliability: pairing that is unambiguous, colour the Y channel cannot see, identical images, outputs owned by
# one run (docs/reliability.md)
# ----------------------------------------------------------------------------------------------------------------
def _pair_folders(tmp_path, preds: dict[str, np.ndarray], gts: dict[str, np.ndarray]):
    for sub, images in (('pred', preds), ('gt', gts)):
        (tmp_path / sub).mkdir(exist_ok=True)
        for name, img in images.items():
            cv2.imwrite(str(tmp_path / sub / name), img)
    return ['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt'), '--no-progress', '--workers', '1']


@pytest.mark.parametrize('kind', ['three-channel', 'single-channel'])
@pytest.mark.parametrize('protocol', ['standard', 'official'])
def test_a_colourless_copy_of_the_ground_truth_is_not_scored(tmp_path, capsys, kind, protocol):
    gt = photo(1, (40, 48))
    grey = cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY)
    pred = grey if kind == 'single-channel' else cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    argv = _pair_folders(tmp_path, {'a.png': pred, 'b.png': gt}, {'a.png': gt, 'b.png': gt})
    assert report.main([*argv, '--out', str(tmp_path / 'out'), '--protocol', protocol]) == 1
    doc = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert list(doc['per_image']) == ['b'] and 'has no colour' in doc['errors']['a']
    assert 'skipped a: ValueError: the prediction has no colour' in capsys.readouterr().err


def test_a_grey_ground_truth_still_scores_a_grey_prediction(tmp_path):
    gt = cv2.cvtColor(cv2.cvtColor(photo(2, (40, 48)), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    pred = np.clip(gt.astype(int) + 2, 0, 255).astype(np.uint8)
    argv = _pair_folders(tmp_path, {'a.png': pred}, {'a.png': gt})
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 0


@pytest.mark.parametrize('folder', ['pred', 'gt'])
def test_names_that_differ_only_by_extension_are_refused(tmp_path, capsys, folder):
    img = photo(3, (24, 32))
    preds, gts = {'1.png': img}, {'1.png': img}
    (preds if folder == 'pred' else gts)['1.jpg'] = img
    argv = _pair_folders(tmp_path, preds, gts)
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'report: error: --{folder}: 1 name(s) in') and '(1.jpg and 1.png)' in err
    assert '\n' not in err and not (tmp_path / 'out').exists()


def test_rainds_predictions_sharing_a_clean_image_are_refused_or_counted(tmp_path, capsys):
    gt = photo(4, (24, 32))
    near = np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8)
    argv = _pair_folders(tmp_path, {'pie-rd-rain-3.png': near, 'pie-rd-3.png': near}, {'pie-norain-3.png': gt})
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'pie-norain-3.png: pie-rd-3, pie-rd-rain-3' in err and '--allow-shared-gt' in err
    assert report.main([*argv, '--out', str(tmp_path / 'out'), '--allow-shared-gt']) == 0
    assert 'report: note: 2 predictions share 1 ground-truth image(s)' in capsys.readouterr().out
    doc = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert doc['paired'] == 2 and doc['shared_ground_truth'] == {'pie-norain-3.png': ['pie-rd-3', 'pie-rd-rain-3']}
    assert 'ground truth of 2 predictions' in (tmp_path / 'out' / 'report.md').read_text()


def test_an_image_identical_to_its_ground_truth_is_counted_not_averaged_as_80_db(tmp_path, capsys):
    gt = photo(5, (24, 32))
    near = np.clip(gt.astype(int) + 4, 0, 255).astype(np.uint8)
    argv = _pair_folders(tmp_path, {'a.png': gt, 'b.png': near}, {'a.png': gt, 'b.png': gt})
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 0
    doc = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert doc['per_image']['a']['psnr'] == 'inf' and doc['infinite'] == {'psnr': 1}
    assert doc['mean']['psnr'] == pytest.approx(doc['per_image']['b']['psnr'])
    assert 'psnr: 1 image(s) identical to the ground truth (inf), left out of the mean' in capsys.readouterr().out


def test_a_killed_rerun_leaves_no_earlier_metrics_looking_current(tmp_path, monkeypatch):
    gt = photo(6, (24, 32))
    argv = _pair_folders(tmp_path, {'a.png': np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8)}, {'a.png': gt})
    out = tmp_path / 'out'
    assert report.main([*argv, '--out', str(out)]) == 0
    first = (out / 'metrics.json').read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, 'evaluate', killed)
    with pytest.raises(KeyboardInterrupt):
        report.main([*argv, '--out', str(out)])
    assert not (out / 'metrics.json').exists() and not (out / 'report.html').exists()
    assert (out / '.previous-report' / 'metrics.json').read_text() == first  # set aside, not lost
    monkeypatch.undo()
    assert report.main([*argv, '--out', str(out)]) == 0
    assert (out / 'metrics.json').exists() and not (out / '.previous-report').exists()
    assert not (out / '.s2former-report.lock').exists()


def test_a_second_report_into_a_folder_in_use_is_refused(tmp_path, capsys):
    import subprocess
    import sys

    gt = photo(7, (24, 32))
    argv = _pair_folders(tmp_path, {'a.png': gt}, {'a.png': gt})
    out = tmp_path / 'out'
    out.mkdir()
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (out / '.s2former-report.lock').write_text(f'{other.pid}\n')
        assert report.main([*argv, '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert f'is being written by another report run (process {other.pid})' in err
    finally:
        other.kill()
        other.wait()
    assert report.main([*argv, '--out', str(out)]) == 0  # the lock of a process that has ended is taken over


def test_a_broken_link_among_the_predictions_is_named_not_dropped(tmp_path, capsys):
    gt = photo(8, (24, 32))
    argv = _pair_folders(tmp_path, {'a.png': gt}, {'a.png': gt, 'b.png': gt})
    os.symlink(tmp_path / 'gone.png', tmp_path / 'pred' / 'b.png')
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 1
    doc = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert 'broken link' in doc['errors']['b'] and 'skipped b: ImageError' in capsys.readouterr().err


def test_report_scores_raw_uncertainty_maps_and_draws_their_curves(tmp_path, capsys):
    from s2former_plugin.metrics.uncertainty_maps import save_raw_maps

    gt = photo(9, (32, 40))
    rng = np.random.default_rng(0)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    argv = _pair_folders(tmp_path, {'a.png': pred}, {'a.png': gt})
    (tmp_path / 'pred' / 'uncertainty').mkdir()
    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(2) / 255
    save_raw_maps(str(tmp_path / 'pred' / 'uncertainty' / 'a.npz'), {'final': np.repeat(err[None], 3, 0)})
    assert report.main([*argv, '--out', str(tmp_path / 'out')]) == 0
    doc = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert doc['uncertainty']['mean']['spearman'] > 0.3  # the mean RGB error ranks the Y error well
    assert (tmp_path / 'out' / 'uncertainty.csv').is_file()
    assert 'uncertainty_sparsification.png' in (tmp_path / 'out' / 'report.html').read_text()
    assert 'uncertainty (final, mean of 1 images): spearman 0.40' in capsys.readouterr().out
