"""``infer`` on bad inputs and faults: non-finite weights refused and non-finite outputs never written, damaged
inputs skipped by name, an unusable ``--output`` in one line, a full disk stops the run, an earlier run's images
in the output folder named.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import cv2
import pytest
import torch
from helpers import jpeg_bytes, overwrite_bytes, raise_disk_full, smooth_image, write_photos

from s2former_plugin import imageio, infer


def test_infer_refuses_non_finite_weights(tiny_weights, tmp_path, capsys):
    d, key = tiny_weights
    write_photos(tmp_path / 'in', n=1)
    argv = ['--weights', str(d / 'nan.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu']) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_infer_non_finite_output_writes_nothing(tiny_weights, tmp_path, capsys, monkeypatch):
    d, _ = tiny_weights
    write_photos(tmp_path / 'in', n=2)
    real = infer.open_network

    def nan_net(weights, config=None):
        loaded = real(weights, config)
        loaded.net.forward = lambda x, return_all=False: torch.full_like(x, float('nan'))
        return loaded

    monkeypatch.setattr(infer, 'open_network', nan_net)
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0']) == 1
    err = capsys.readouterr().err
    assert 'p0.png: network output holds' in err and 'NaN/inf' in err
    assert os.listdir(tmp_path / 'out') == []


def test_derain_array_refuses_non_finite_output():
    img = smooth_image()

    def run(x):
        return x * float('inf'), None

    with pytest.raises(infer.NonFiniteOutput, match='NaN/inf'):
        infer.derain_array(img, run)


def test_infer_skips_damaged_inputs_by_name(tiny_weights, tmp_path, capsys):
    d, _ = tiny_weights
    write_photos(tmp_path / 'in', n=1)
    (tmp_path / 'in' / 'cut.jpg').write_bytes(jpeg_bytes()[:300])
    (tmp_path / 'in' / 'junk.jpg').write_bytes(overwrite_bytes(jpeg_bytes(), 0.3, b'\x00' * 2000))
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0']) == 1
    err = capsys.readouterr().err
    assert 'cut.jpg: truncated JPEG' in err and 'junk.jpg: damaged image' in err
    assert sorted(os.listdir(tmp_path / 'out')) == ['p0.png']


@pytest.mark.parametrize('kind', ['file', 'under-a-file', 'not-writable'])
def test_infer_unusable_output_is_one_line(tiny_weights, tmp_path, capsys, monkeypatch, kind):
    d, _ = tiny_weights
    write_photos(tmp_path / 'in', n=1)
    out = tmp_path / 'out'
    (tmp_path / 'f').write_text('x')
    if kind == 'file':
        out = tmp_path / 'f'
    elif kind == 'under-a-file':
        out = tmp_path / 'f' / 'out'
    else:  # chmod does not stop root, so the permission check is what is tested
        real = os.access
        monkeypatch.setattr(os, 'access', lambda p, m: False if str(p) == str(out) else real(p, m))
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(out)]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('infer: error: --output:')


def test_infer_stops_on_a_full_disk(tiny_weights, tmp_path, capsys, monkeypatch):
    d, _ = tiny_weights
    write_photos(tmp_path / 'in', n=2)
    monkeypatch.setattr(imageio, 'write', raise_disk_full)
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('infer: error: ') and 'p0.png: cannot write (disk full); stopped' in err[-1]


def test_infer_warns_about_images_an_earlier_run_left(tiny_weights, tmp_path, capsys):
    d, _ = tiny_weights
    write_photos(tmp_path / 'in', n=2)
    (tmp_path / 'out').mkdir()
    cv2.imwrite(str(tmp_path / 'out' / 'old.png'), smooth_image())
    cv2.imwrite(str(tmp_path / 'out' / 'p0.png'), smooth_image())  # replaced by this run (--overwrite): not stale
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0', '--overwrite']) == 0
    err = capsys.readouterr().err
    assert 'also holds 1 image(s) this run did not write (e.g. old.png)' in err
