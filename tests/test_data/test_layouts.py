"""Pair matching of every dataset layout, on tiny trees built in tmp_path."""

import os

import cv2
import numpy as np
import pytest

from s2former_plugin.data.layouts import LayoutError, find_pairs, natural_key, safe_key


def img(path, h=8, w=8, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return str(path)


def names(paths):
    return [os.path.basename(p) for p in paths]


@pytest.fixture
def rainds(tmp_path):
    base = tmp_path / 'RainDS_syn' / 'train'
    for n in ('1', '2', '10'):
        img(base / 'gt' / f'pie-norain-{n}.png')
        img(base / 'raindrop' / f'pie-rd-{n}.png')
        img(base / 'rainstreak' / f'pie-rain-{n}.png')
        img(base / 'rainstreak_raindrop' / f'pie-rd-rain-{n}.png')
    img(base / 'gt' / 'norain-5.png')
    img(base / 'raindrop' / 'rd-5.png')
    img(base / 'rainstreak' / 'rain-5.png')
    img(base / 'rainstreak_raindrop' / 'rd-rain-5.png')
    img(base / 'rainstreak' / 'rain-9.png')  # no clean image
    img(base / 'gt' / 'norain-7.png')  # no input
    (base / 'gt' / 'notes.txt').write_text('x')
    return tmp_path / 'RainDS_syn'


def test_rainds_replacement_order(rainds):
    scan = find_pairs('rainds', str(rainds), split='train', subset='rsrd')
    got = {os.path.basename(p.lq_path): os.path.basename(p.gt_path) for p in scan.pairs}
    # 'rd-rain' is one token: never 'rd' alone ('norain-rain-1') nor 'rain' alone ('rd-norain-1').
    assert got == {
        'pie-rd-rain-1.png': 'pie-norain-1.png',
        'pie-rd-rain-2.png': 'pie-norain-2.png',
        'pie-rd-rain-10.png': 'pie-norain-10.png',
        'rd-rain-5.png': 'norain-5.png',
    }
    assert names(p.lq_path for p in scan.pairs) == [
        'pie-rd-rain-1.png',
        'pie-rd-rain-2.png',
        'pie-rd-rain-10.png',
        'rd-rain-5.png',
    ]  # natural order


@pytest.mark.parametrize('subset,n', [('rd', 4), ('rs', 4), ('rsrd', 4), ('all', 12), (None, 12)])
def test_rainds_subsets(rainds, subset, n):
    scan = find_pairs('rainds', str(rainds), split='train', subset=subset)
    assert len(scan) == n
    for p in scan.pairs:
        assert os.path.exists(p.gt_path) and 'norain' in os.path.basename(p.gt_path)
    assert len({p.key for p in scan.pairs}) == n  # the three folders share clean images, keys stay unique
    if subset in ('rs', 'all', None):
        assert names(scan.unmatched_lq) == ['rain-9.png']
    assert 'norain-7.png' in names(scan.unmatched_gt)
    assert names(scan.ignored) == ['notes.txt']


def test_rainds_real_same_names_and_set_suffix(tmp_path):
    base = tmp_path / 'RainDS_real' / 'test_set'
    for folder in ('gt', 'raindrop', 'rainstreak', 'rainstreak_raindrop'):
        for n in (2, 3):
            img(base / folder / f'{n}.png')
    scan = find_pairs('rainds', str(tmp_path / 'RainDS_real'), split='test')
    assert len(scan) == 6 and not scan.problems
    assert sorted(p.key for p in scan.pairs) == ['rd-2', 'rd-3', 'rs-2', 'rs-3', 'rsrd-2', 'rsrd-3']


def test_rain200_with_and_without_x2(tmp_path):
    for n in (1, 2, 11):
        img(tmp_path / 'Rain200H' / 'train' / 'rain' / 'X2' / f'norain-{n}x2.png')
        img(tmp_path / 'Rain200H' / 'train' / 'norain' / f'norain-{n}.png')
        img(tmp_path / 'Rain100L' / 'rain' / f'norain-{n}x2.png')
        img(tmp_path / 'Rain100L' / 'norain' / f'norain-{n}.png')
    img(tmp_path / 'Rain200H' / 'train' / 'norain' / 'norain-3.png')
    scan = find_pairs('rain200', str(tmp_path / 'Rain200H'), split='train')
    assert [p.key for p in scan.pairs] == ['norain-1x2', 'norain-2x2', 'norain-11x2']
    assert names(scan.unmatched_gt) == ['norain-3.png']
    assert len(find_pairs('rain200', str(tmp_path / 'Rain100L'))) == 3


def test_agan_mixed_extensions(tmp_path):
    base = tmp_path / 'Raindrop'
    img(base / 'test_a' / 'data' / '0_rain.png')
    img(base / 'test_a' / 'gt' / '0_clean.png')
    img(base / 'test_a' / 'data' / '1_rain.jpg')
    img(base / 'test_a' / 'gt' / '1_clean.png')
    img(base / 'test_a' / 'data' / '2_rain.png')
    scan = find_pairs('agan', str(base), split='test')  # 'test' means test_a
    assert [(p.key, names([p.lq_path, p.gt_path])) for p in scan.pairs] == [
        ('0', ['0_rain.png', '0_clean.png']),
        ('1', ['1_rain.jpg', '1_clean.png']),
    ]
    assert names(scan.unmatched_lq) == ['2_rain.png']


def test_paired_same_names_template_and_weird_names(tmp_path):
    for n in ('a', 'b c', 'été.v2', '雨'):
        img(tmp_path / 'p' / 'gt' / f'{n}.png')
        img(tmp_path / 'p' / 'lq' / f'{n}.png')
    scan = find_pairs('paired', str(tmp_path / 'p'))
    assert len(scan) == 4 and not scan.problems
    for p in scan.pairs:
        assert p.key.isascii() and all(c.isalnum() or c in '_-' for c in p.key)
        assert os.path.basename(p.lq_path) == os.path.basename(p.gt_path)
    assert len({p.key for p in scan.pairs}) == 4

    img(tmp_path / 't' / 'clean' / '7.png')
    img(tmp_path / 't' / 'rainy' / '7_rain.jpg')
    img(tmp_path / 't' / 'rainy' / '8_rain.png')
    scan = find_pairs('paired', str(tmp_path / 't'), lq_dir='rainy', gt_dir='clean', template='{}_rain')
    assert [(p.key, os.path.basename(p.lq_path)) for p in scan.pairs] == [('7', '7_rain.jpg')]
    assert names(scan.unmatched_lq) == ['8_rain.png']


def test_ambiguous_stems_are_reported(tmp_path):
    img(tmp_path / 'gt' / '1.png')
    img(tmp_path / 'gt' / '1.jpg')
    img(tmp_path / 'lq' / '1.png')
    scan = find_pairs('paired', str(tmp_path))
    assert not scan.pairs and sorted(names(scan.ambiguous)) == ['1.jpg', '1.png']
    assert any('ambiguous' in line for line in scan.problems)


@pytest.mark.parametrize(
    'kwargs,match',
    [
        ({'layout': 'nope'}, 'layout'),
        ({'layout': 'rainds', 'subset': 'xx'}, 'subset'),
        ({'layout': 'rain200', 'subset': 'rs'}, 'subset'),
        ({'layout': 'rain200', 'template': '{}_x'}, 'template'),
        ({'layout': 'paired', 'template': 'no_braces'}, 'template'),
        ({'layout': 'paired', 'lq_dir': 'missing'}, 'lq_dir'),
        ({'layout': 'agan', 'split': 'train'}, 'split'),
    ],
)
def test_bad_options_name_the_option(tmp_path, kwargs, match):
    img(tmp_path / 'gt' / '1.png')
    img(tmp_path / 'lq' / '1.png')
    (tmp_path / 'elsewhere').mkdir()
    with pytest.raises(LayoutError, match=match):
        find_pairs(root=str(tmp_path), **kwargs)


def test_safe_key_and_natural_key():
    assert safe_key('norain-1x2') == 'norain-1x2'
    assert safe_key('a b') != safe_key('a_b') and safe_key('a b').startswith('a_b_')
    assert safe_key('été').startswith('ete_') and safe_key('雨').startswith('img_')
    assert '.' not in safe_key('x.y.z') and ' ' not in safe_key('x y')
    assert sorted(['n-10', 'n-2', 'n-1'], key=natural_key) == ['n-1', 'n-2', 'n-10']
