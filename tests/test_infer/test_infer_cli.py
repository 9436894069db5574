"""Inference CLI: sizes, colour modes, bit depths, bad files, overwrite protection, the three checkpoint kinds."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import write_mixed_images

from s2former_plugin import infer
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.official import ours_state_dict_to_official


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return S2Former(preset='small').eval()


@pytest.fixture(scope='module')
def weights(net, tmp_path_factory):
    d = tmp_path_factory.mktemp('weights')
    sd = net.state_dict()
    paths = {
        'basicsr': d / 'net_g_10.pth',
        'official': d / 'udrs2former_test.pth',
        'plain': d / 'plain.pth',
    }
    # BasicSR checkpoint: params_ema must win over (deliberately broken) params.
    broken = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({'params': broken, 'params_ema': sd}, paths['basicsr'])
    torch.save(ours_state_dict_to_official(sd), paths['official'])
    torch.save(sd, paths['plain'])
    return paths


def _write_inputs(folder):
    imgs = write_mixed_images(folder)
    (folder / 'corrupt.png').write_bytes(b'\x89PNG not really')
    return imgs


def test_cli_keeps_size_depth_mode_and_skips_corrupt_file(weights, net, tmp_path, capsys):
    imgs = _write_inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    argv = ['--weights', str(weights['plain']), '--input', str(tmp_path / 'in'), '--output', str(out)]
    rc = infer.main([*argv, '--tile', '0', '--save-uncertainty', '--device', 'cpu', '--no-progress'])
    assert rc == 1  # the corrupt file
    err = capsys.readouterr().err
    assert 'corrupt.png' in err and 'cannot read' in err
    for name, img in imgs.items():
        res = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert res.shape == img.shape and res.dtype == img.dtype, name
        unc = cv2.imread(str(out / 'uncertainty' / name), cv2.IMREAD_UNCHANGED)
        assert unc.shape == (*img.shape[:2], 3) and unc.dtype == np.uint8
    np.testing.assert_array_equal(cv2.imread(str(out / 'rgba.png'), -1)[..., 3], imgs['rgba.png'][..., 3])
    # The output is the network's: compare the odd-sized colour image with a direct forward pass.
    x = torch.from_numpy(imgs['odd.png'][..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1]
    res = cv2.imread(str(out / 'odd.png')).astype(np.float32) / 255
    assert np.abs(res - ref).max() <= 1 / 255 + 1e-6
    assert not (out / 'corrupt.png').exists()


def test_float_tiff_written_as_float_tiff(weights, tmp_path):
    (tmp_path / 'in').mkdir()
    img = np.random.default_rng(2).random((18, 22, 3), dtype=np.float32)
    cv2.imwrite(str(tmp_path / 'in' / 'f.tiff'), img)
    argv = ['--weights', str(weights['plain']), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--tile', '0', '--no-progress']) == 0
    res = cv2.imread(str(tmp_path / 'out' / 'f.tiff'), cv2.IMREAD_UNCHANGED)
    assert res.shape == img.shape and res.dtype == np.float32 and 0 <= res.min() and res.max() <= 1


def test_tiled_matches_whole_image_closely(weights, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / 'in').mkdir()
    img = cv2.GaussianBlur(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), (0, 0), 2)
    cv2.imwrite(str(tmp_path / 'in' / 'x.png'), img)
    base = ['--weights', str(weights['plain']), '--input', str(tmp_path / 'in' / 'x.png'), '--no-progress']
    assert infer.main([*base, '--output', str(tmp_path / 'whole'), '--tile', '0']) == 0
    assert infer.main([*base, '--output', str(tmp_path / 'tiled'), '--tile', '64', '--tile-overlap', '32']) == 0
    whole = cv2.imread(str(tmp_path / 'whole' / 'x.png')).astype(float)
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'x.png')).astype(float)
    assert tiled.shape == whole.shape == img.shape
    assert np.abs(tiled - whole).mean() < 3  # blended tiles: close to the whole-image result (8-bit levels)


@pytest.mark.parametrize('kind', ['basicsr', 'official', 'plain'])
def test_three_checkpoint_kinds_load_weights_only(weights, net, kind, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    loaded, used = infer.load_network(str(weights[kind]))
    assert calls and all(c is True for c in calls)
    assert used == {'basicsr': 'params_ema', 'official': 'official state dict', 'plain': 'state dict'}[kind]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_config_file_overrides_inference(weights, tmp_path, capsys):
    cfg = tmp_path / 'opt.yml'
    cfg.write_text('network_g:\n  type: S2Former\n  preset: small\n')
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.full((12, 14, 3), 128, np.uint8))
    argv = ['--weights', str(weights['plain']), '--input', str(tmp_path / 'in'), '--tile', '0', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'o1')]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if 'inferred from the weights' in ln]
    assert len(notes) == 1 and '--config' in notes[0] and '16' in notes[0]  # the bottleneck heads are a guess
    assert infer.main([*argv, '--output', str(tmp_path / 'o2'), '--config', str(cfg)]) == 0
    assert 'inferred' not in capsys.readouterr().err
    loaded, _ = infer.load_network(str(weights['plain']), str(cfg))
    assert isinstance(loaded, S2Former)
    bad = tmp_path / 'paper.json'
    bad.write_text('{"preset": "paper"}')
    with pytest.raises(infer.InferError, match='does not fit'):
        infer.load_network(str(weights['plain']), str(bad))


def test_refuses_to_overwrite_inputs_and_reports_missing_weights(weights, tmp_path, capsys):
    _write_inputs(tmp_path / 'in')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()}
    w = ['--weights', str(weights['plain'])]
    assert infer.main([*w, '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'in')]) == 2
    assert 'input folder' in capsys.readouterr().err
    assert infer.main([*w, '--input', str(tmp_path / 'in' / 'odd.png'), '--output', str(tmp_path / 'in' / '.')]) == 2
    (tmp_path / 'link').symlink_to(tmp_path / 'in')
    assert infer.main([*w, '--input', str(tmp_path / 'link'), '--output', str(tmp_path / 'in')]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()} == before
    capsys.readouterr()
    missing = tmp_path / 'no' / 'such.pth'
    io_args = ['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'o')]
    assert infer.main(['--weights', str(missing), *io_args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and str(missing) in err


def test_module_entry_point_runs(weights, tmp_path):
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.full((17, 13, 3), 128, np.uint8))
    cmd = [sys.executable, '-m', 's2former_plugin.infer', '--weights', str(weights['official'])]
    cmd += ['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out'), '--tile', '0', '--no-progress']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'official state dict' in res.stdout
    assert cv2.imread(str(tmp_path / 'out' / 'a.png')).shape == (17, 13, 3)


@pytest.mark.parametrize(
    ('extra', 'option'),
    [
        (['--tile-batch', '0'], '--tile-batch'),
        (['--tile', '-5'], '--tile'),
        (['--tile', '32', '--tile-overlap', '32'], '--tile-overlap'),
        (['--tile-overlap', '-1'], '--tile-overlap'),
        (['--blend', 'gauss'], '--blend'),
    ],
)
def test_bad_tiling_arguments_fail_up_front(weights, tmp_path, capsys, extra, option):
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.full((40, 40, 3), 128, np.uint8))
    out = tmp_path / 'out'
    argv = ['--weights', str(weights['plain']), '--input', str(tmp_path / 'in'), '--output', str(out)]
    assert infer.main([*argv, '--no-progress', *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and err.startswith(f'infer: error: {option}:') and 'skipped' not in err
    assert not out.exists()
