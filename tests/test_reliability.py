"""Bad inputs and faults across the commands: each ends in a clear refusal, never lost data or a wrong number.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import imageio, infer
from s2former_plugin.checkpoint import load_state_dict_any
from s2former_plugin.data import synthetic_rain


def _smooth(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3 + yy + seed) % 256, (xx * 2) % 256, (yy * 4 + seed) % 256], -1).astype(np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 2)


def _digest(folder) -> dict[str, str]:
    return {
        os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), 'rb').read()).hexdigest()
        for d, _, files in os.walk(folder)
        for f in files
    }


def _photos(folder, n: int = 2) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f'p{i}.png'), _smooth(seed=i))


# ----------------------------------------------------------------------------------------------------------------
# Data loss: synthetic_rain never writes into or deletes its inputs
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'output',
    ['X', 'X/gt', 'X/gt/out', 'X/gt/out/deeper'],
    ids=['parent-of-input', 'input-itself', 'inside-input', 'deep-inside-input'],
)
@pytest.mark.parametrize('overwrite', [False, True], ids=['plain', 'overwrite'])
def test_synthetic_rain_never_writes_into_its_input(tmp_path, capsys, output, overwrite):
    _photos(tmp_path / 'X' / 'gt')
    before = _digest(tmp_path / 'X')
    argv = ['--input', str(tmp_path / 'X' / 'gt'), '--output', str(tmp_path / output)]
    rc = synthetic_rain.main(argv + (['--overwrite'] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 2 and 'overlap the input folder' in err and len(err.strip().splitlines()) == 1
    assert _digest(tmp_path / 'X') == before


def test_synthetic_rain_overwrite_removes_stale_pairs(tmp_path, capsys):
    _photos(tmp_path / 'in', n=3)
    out = tmp_path / 'out'
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out)]) == 0
    os.remove(tmp_path / 'in' / 'p2.png')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out)]) == 2  # not empty
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out), '--overwrite']) == 0
    assert sorted(os.listdir(out / 'lq')) == sorted(os.listdir(out / 'gt')) == ['p0.png', 'p1.png']
    assert 'removed 6 images of an earlier run' in capsys.readouterr().out


def test_synthetic_rain_skips_and_names_empty_photo(tmp_path, capsys):
    _photos(tmp_path / 'in', n=2)
    (tmp_path / 'in' / 'zero.jpg').write_bytes(b'')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]) == 0
    assert 'zero.jpg: empty file' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'out' / 'gt')) == ['p0.png', 'p1.png']


def test_synthetic_rain_output_that_is_a_file(tmp_path, capsys):
    _photos(tmp_path / 'in', n=1)
    (tmp_path / 'f').write_text('x')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'f')]) == 2
    assert 'is not a folder' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Garbage accepted as images: the one reader refuses damaged and truncated files by name
# ----------------------------------------------------------------------------------------------------------------
def _png() -> bytes:
    return cv2.imencode('.png', _smooth(64, 80))[1].tobytes()


def _jpeg(**params) -> bytes:
    flags = []
    for key, value in params.items():
        flags += [getattr(cv2, key), value]
    return cv2.imencode('.jpg', _smooth(96, 128), flags)[1].tobytes()


def _overwrite(data: bytes, at: float, junk: bytes) -> bytes:
    b = bytearray(data)
    i = int(len(b) * at)
    b[i : i + len(junk)] = junk
    return bytes(b)


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


DAMAGED = {
    'empty-png': (lambda: b'', 'empty file'),
    'png-cut-at-10pc': (lambda: _png()[: len(_png()) // 10], 'truncated PNG'),
    'png-cut-at-half': (lambda: _png()[: len(_png()) // 2], 'truncated PNG'),
    'png-cut-before-iend': (lambda: _png_without_iend(_png()), 'truncated PNG (no IEND chunk)'),
    'png-short-zlib-stream': (
        lambda: _png_short_idat(_png()),
        'damaged image (decoder: libpng error: Not enough image',
    ),
    'png-flipped-byte': (lambda: _overwrite(_png(), 0.5, b'\x00\x00\x00'), 'damaged PNG (CRC mismatch'),
    'png-signature-only': (lambda: b'\x89PNG\r\n\x1a\n', 'truncated PNG'),
    'text-named-png': (lambda: b'this is not an image', 'cannot read (not a decodable image)'),
    'jpeg-cut-at-half': (lambda: _jpeg()[: len(_jpeg()) // 2], 'truncated JPEG'),
    'jpeg-cut-at-90pc': (lambda: _jpeg()[: len(_jpeg()) * 9 // 10], 'truncated JPEG'),
    'jpeg-cut-2-bytes': (lambda: _jpeg()[:-2], 'truncated JPEG'),
    'jpeg-header-only': (lambda: _jpeg()[:200], 'truncated JPEG'),
    'jpeg-random-middle': (lambda: _overwrite(_jpeg(), 0.5, _junk(3)), 'damaged JPEG (invalid marker'),
    'jpeg-random-middle-2': (lambda: _overwrite(_jpeg(), 0.5, _junk(4)), 'extraneous bytes before marker'),
    'jpeg-zeroed-middle': (lambda: _overwrite(_jpeg(), 0.3, b'\x00' * 2000), 'Corrupt JPEG data'),
    'jpeg-bad-segment-length': (lambda: _jpeg()[:4] + b'\xff\xff' + _jpeg()[6:], 'damaged JPEG'),
    'jpeg-restart-out-of-order': (
        lambda: _rst_swapped(_jpeg(IMWRITE_JPEG_RST_INTERVAL=2)),
        'restart marker out of sequence',
    ),
}


@pytest.mark.parametrize('case', list(DAMAGED))
def test_reader_refuses_damaged_image_naming_it(tmp_path, case):
    make, reason = DAMAGED[case]
    path = tmp_path / ('bad.jpg' if case.startswith('jpeg') else 'bad.png')
    path.write_bytes(make())
    with pytest.raises(imageio.ImageError) as info:
        imageio.read(str(path))
    assert str(info.value).startswith(f'{path}: ') and reason in str(info.value)
    assert '\n' not in str(info.value)


GOOD = {
    'png-8bit': lambda p: cv2.imwrite(p + '.png', _smooth()),
    'png-16bit': lambda p: cv2.imwrite(p + '.png', _smooth().astype(np.uint16) * 257),
    'png-gray': lambda p: cv2.imwrite(p + '.png', _smooth()[..., 0]),
    'png-alpha': lambda p: cv2.imwrite(p + '.png', np.dstack([_smooth(), _smooth()[..., :1]])),
    'png-interlaced': lambda p: __import__('PIL.Image').Image.fromarray(_smooth()).save(p + '.png', interlace=1),
    'jpeg-baseline': lambda p: cv2.imwrite(p + '.jpg', _smooth()),
    'jpeg-progressive': lambda p: cv2.imwrite(p + '.jpg', _smooth(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    'jpeg-restart-markers': lambda p: cv2.imwrite(p + '.jpg', _smooth(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]),
    'jpeg-pillow-exif': lambda p: __import__('PIL.Image').Image.fromarray(_smooth()).save(p + '.jpg', exif=b'Exif'),
    'tiff-float': lambda p: cv2.imwrite(p + '.tiff', _smooth().astype(np.float32) / 255),
    'bmp': lambda p: cv2.imwrite(p + '.bmp', _smooth()),
    'webp': lambda p: cv2.imwrite(p + '.webp', _smooth()),
}


@pytest.mark.parametrize('case', list(GOOD))
def test_reader_accepts_sound_images_unchanged(tmp_path, case):
    stem = str(tmp_path / 'ok')
    GOOD[case](stem)
    (path,) = [str(tmp_path / n) for n in os.listdir(tmp_path)]
    got = imageio.read(path)
    ref = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_reader_names_missing_file_and_folder(tmp_path):
    with pytest.raises(imageio.ImageError, match=r'nope\.png: cannot read \(No such file'):
        imageio.read(str(tmp_path / 'nope.png'))
    with pytest.raises(imageio.ImageError, match='cannot read'):
        imageio.read(str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# Non-finite weights and outputs
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    from s2former_plugin.archs.s2former_arch import S2Former

    torch.manual_seed(0)
    sd = S2Former(preset='small').state_dict()
    d = tmp_path_factory.mktemp('w')
    torch.save(sd, d / 'good.pth')
    bad = dict(sd)
    key = next(k for k, v in sd.items() if v.is_floating_point())
    bad[key] = sd[key].clone()
    bad[key].view(-1)[0] = float('nan')
    torch.save(bad, d / 'nan.pth')
    torch.save({'params': sd, 'params_ema': {**sd, key: torch.full_like(sd[key], float('inf'))}}, d / 'inf_ema.pth')
    return d, key


@pytest.mark.parametrize('name', ['nan.pth', 'inf_ema.pth'])
def test_non_finite_weights_refused_naming_keys(tiny_weights, name):
    d, key = tiny_weights
    with pytest.raises(ValueError, match=rf'non-finite \(NaN/inf\) weights in 1 tensor\(s\): {key}'):
        load_state_dict_any(str(d / name), 'params_ema')


def test_infer_refuses_non_finite_weights(tiny_weights, tmp_path, capsys):
    d, key = tiny_weights
    _photos(tmp_path / 'in', n=1)
    argv = ['--weights', str(d / 'nan.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu']) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_infer_non_finite_output_writes_nothing(tiny_weights, tmp_path, capsys, monkeypatch):
    d, _ = tiny_weights
    _photos(tmp_path / 'in', n=2)
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
    img = _smooth()

    def run(x):
        return x * float('inf'), None

    with pytest.raises(infer.NonFiniteOutput, match='NaN/inf'):
        infer.derain_array(img, run)


def test_infer_skips_damaged_inputs_by_name(tiny_weights, tmp_path, capsys):
    d, _ = tiny_weights
    _photos(tmp_path / 'in', n=1)
    (tmp_path / 'in' / 'cut.jpg').write_bytes(_jpeg()[:300])
    (tmp_path / 'in' / 'junk.jpg').write_bytes(_overwrite(_jpeg(), 0.3, b'\x00' * 2000))
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0']) == 1
    err = capsys.readouterr().err
    assert 'cut.jpg: truncated JPEG' in err and 'junk.jpg: damaged image' in err
    assert sorted(os.listdir(tmp_path / 'out')) == ['p0.png']


@pytest.mark.parametrize('kind', ['file', 'under-a-file', 'not-writable'])
def test_infer_unusable_output_is_one_line(tiny_weights, tmp_path, capsys, monkeypatch, kind):
    d, _ = tiny_weights
    _photos(tmp_path / 'in', n=1)
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


# ----------------------------------------------------------------------------------------------------------------
# NaN never becomes a score (or "identical to the ground truth")
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('protocol', ['official', 'standard'])
@pytest.mark.parametrize('metric', ['psnr', 'ssim'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')], ids=['nan', 'inf'])
def test_non_finite_prediction_is_not_scored(protocol, metric, bad):
    from s2former_plugin.metrics import protocols

    gt = _smooth().astype(np.float32) / 255
    pred = gt.copy()
    pred[3, 4, 1] = bad
    with pytest.raises(protocols.NonFiniteImage, match='1 NaN/inf values'):
        protocols.compute(metric, pred, gt, protocol)
    tensor = torch.from_numpy(pred[..., ::-1].copy()).permute(2, 0, 1)[None]
    with pytest.raises(protocols.NonFiniteImage):
        protocols.compute(metric, tensor, gt, protocol)


def test_validation_metric_bridge_refuses_nan_prediction():
    from basicsr.metrics import calculate_metric

    gt = _smooth().astype(np.float32) / 255
    pred = np.full_like(gt, np.nan)
    with pytest.raises(ValueError, match='NaN/inf'):
        calculate_metric({'img': pred, 'img2': gt}, {'type': 'official_psnr'})


# ----------------------------------------------------------------------------------------------------------------
# Benchmark: no table mixes test sets, no overlap of train and test
# ----------------------------------------------------------------------------------------------------------------
def _bench_options(data, train='1-3', test=(4, 5)) -> dict:
    (data / 'w.pth').write_bytes(b'')  # never read: the evaluation is stubbed
    return {
        'name': 'fp',
        'device': 'cpu',
        'data': {'layout': 'paired', 'dataroot': str(data), 'train': {'pairs': train}, 'test': {'pairs': list(test)}},
        'train': {'batch_size': 1, 'crop': 16, 'total_iter': 1, 'threads': 1},
        'eval': {'tile': 0, 'tile_overlap': 0},
        'speed': {'sizes': [16], 'macs_size': 16, 'runs': 1, 'threads': 1},
        'archs': [
            {'name': 'given', 'network_g': {'type': 'S2Former', 'preset': 'small'}, 'checkpoint': str(data / 'w.pth')}
        ],
    }


@pytest.fixture
def fake_eval(monkeypatch):
    """The benchmark's evaluation subprocess replaced by a stub result (the data checks happen before it)."""
    import json

    calls = []

    def child(cmd, cwd, log_path, threads, what):
        with open(cmd[-1]) as f:
            spec = json.load(f)
        if spec.get('speed'):
            with open(spec['speed']['out'], 'w') as f:
                json.dump({a['name']: {'params': 1, 'macs@16': 1, 'speed': {}} for a in spec['speed']['archs']}, f)
        for run in spec.get('runs') or []:
            with open(run['out'], 'w') as f:
                metrics = {m: 30.0 if m == 'psnr' else 0.9 for m in spec['metrics']}
                per_image = {m: {'000': v, '001': v} for m, v in metrics.items()}
                json.dump({'metrics': metrics, 'test_images': 2, 'per_image': per_image}, f)
        calls.append(what)

    from s2former_plugin.benchmark import driver, report

    monkeypatch.setattr(driver, '_run_child', child)
    monkeypatch.setattr(report, 'write_plots', lambda *a: None)
    return calls


def test_benchmark_refuses_finished_arch_after_test_data_changed(tmp_path, capsys, fake_eval):
    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    argv = ['-opt', str(write_yaml(tmp_path / 'b.yml', _bench_options(data))), '--out', str(tmp_path / 'o')]
    assert benchmark.main(argv) == 0 and fake_eval == ['evaluation']
    result = __import__('json').loads((tmp_path / 'o' / 'given' / 'checkpoint' / 'result.json').read_text())
    assert result['data']['test_pairs'] == 2 and len(result['data']['test']) == 16
    cv2.imwrite(str(data / 'gt' / '004.png'), np.zeros((16, 16, 3), np.uint8))  # same name, other content
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert 'archs:given:' in err and 'test set changed' in err and 'mix test sets' in err
    assert fake_eval == ['evaluation']  # the stale result was not reused


@pytest.mark.parametrize('how', ['same-positions', 'copied-file'])
def test_benchmark_refuses_overlapping_train_and_test(tmp_path, capsys, fake_eval, how):
    import shutil

    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    if how == 'same-positions':
        opt = _bench_options(data, train='1-4', test=(4, 5))
    else:
        shutil.copy(data / 'gt' / '001.png', data / 'gt' / '004.png')
        opt = _bench_options(data)
    argv = ['-opt', str(write_yaml(tmp_path / 'b.yml', opt)), '--out', str(tmp_path / 'o')]
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert 'share images with training pairs' in err and len(err.strip().splitlines()) == 1
    assert fake_eval == []


def test_benchmark_report_refuses_mixed_test_sets():
    from s2former_plugin import benchmark

    results = [{'name': 'a', 'data': {'test': 'x'}}, {'name': 'b', 'data': {'test': 'y'}}]
    with pytest.raises(benchmark.BenchmarkError, match='2 different test sets'):
        benchmark.write_reports(results, {'name': 'n'}, '.', {})


# ----------------------------------------------------------------------------------------------------------------
# Typos and wrongly typed values in the training options
# ----------------------------------------------------------------------------------------------------------------
def _set(opt: dict, dotted: str, value) -> dict:
    *path, last = dotted.split('.')
    node = opt
    for key in path:
        node = node[key]
    node[last] = value
    return opt


def _rename(opt: dict, dotted: str, new: str) -> dict:
    *path, last = dotted.split('.')
    node = opt
    for key in path:
        node = node[key]
    node[new] = node.pop(last)
    return opt


OPTION_TYPOS = {
    'train-ema_decy': (
        lambda o: _rename(o, 'train.ema_decay', 'ema_decy'),
        "train:ema_decy: unknown key; did you mean 'ema_decay'?",
    ),
    'train-udl_otp': (
        lambda o: _rename(o, 'train.udl_opt', 'udl_otp'),
        "train:udl_otp: unknown key; did you mean 'udl_opt'?",
    ),
    'train-max_grad_nrom': (lambda o: _set(o, 'train.max_grad_nrom', 1.0), "did you mean 'max_grad_norm'?"),
    'train-optim': (
        lambda o: _rename(o, 'train.optim_g', 'optim'),
        "train:optim: unknown key; did you mean 'optim_g'?",
    ),
    'train-schedular': (lambda o: _rename(o, 'train.scheduler', 'schedular'), "did you mean 'scheduler'?"),
    'train-totl_iter': (lambda o: _rename(o, 'train.total_iter', 'totl_iter'), "did you mean 'total_iter'?"),
    'train-unrelated-key': (lambda o: _set(o, 'train.colour', 1), 'train:colour: unknown key; the keys are'),
    'val-tile_overlp': (lambda o: _rename(o, 'val.tile_overlap', 'tile_overlp'), "did you mean 'tile_overlap'?"),
    'val-save_images': (lambda o: _rename(o, 'val.save_img', 'save_images'), "did you mean 'save_img'?"),
    'logger-print_frq': (lambda o: _rename(o, 'logger.print_freq', 'print_frq'), "did you mean 'print_freq'?"),
    'lr-7e-4-text': (lambda o: _set(o, 'train.optim_g.lr', '7e-4'), "train:optim_g:lr: '7e-4' is text, not a number"),
    'betas-text': (lambda o: _set(o, 'train.optim_g.betas', ['0.9', 0.99]), "train:optim_g:betas[0]: '0.9' is text"),
    'total_iter-3e5-text': (lambda o: _set(o, 'train.total_iter', '3e5'), "train:total_iter: '3e5' is text"),
    'scheduler-max_lr-text': (lambda o: _set(o, 'train.scheduler.max_lr', '2e-3'), "train:scheduler:max_lr: '2e-3'"),
    'loss_weight-text': (lambda o: _set(o, 'train.psnr_opt.loss_weight', '1e0'), "train:psnr_opt:loss_weight: '1e0'"),
    'ema_decay-above-1': (lambda o: _set(o, 'train.ema_decay', 1.5), 'train:ema_decay: expected a number in [0, 1]'),
    'ema_decay-bool': (lambda o: _set(o, 'train.ema_decay', True), 'train:ema_decay: expected a number'),
    'lr-negative': (lambda o: _set(o, 'train.optim_g.lr', -1e-3), 'train:optim_g:lr: expected a number >= 0'),
    'lr-list': (lambda o: _set(o, 'train.optim_g.lr', [1e-3]), 'train:optim_g:lr: expected a number >= 0, got [0.001]'),
    'betas-one-number': (lambda o: _set(o, 'train.optim_g.betas', 0.9), 'train:optim_g:betas: expected a list of 2'),
    'betas-three': (lambda o: _set(o, 'train.optim_g.betas', [0.9, 0.99, 0.999]), 'expected a list of 2 numbers'),
    'step_size-text-word': (lambda o: _set(o, 'train.scheduler.base_lr', 'low'), 'train:scheduler:base_lr: expected'),
    'optim_g-not-mapping': (lambda o: _set(o, 'train.optim_g', 'Adam'), 'train:optim_g: expected a mapping'),
    'train-not-mapping': (lambda o: _set(o, 'train', ['a']), 'train: expected a mapping'),
}


@pytest.mark.parametrize('case', list(OPTION_TYPOS))
def test_training_option_typos_and_types_are_refused(tmp_path, case):
    from helpers import tiny_s2former_options

    from s2former_plugin.models.s2former_model import OptionError, check_training_options

    opt = tiny_s2former_options(tmp_path, None)
    check_training_options(opt)  # the untouched options pass
    change, message = OPTION_TYPOS[case]
    with pytest.raises(OptionError) as info:
        check_training_options(change(opt))
    assert message in str(info.value) and '\n' not in str(info.value)


def test_train_cli_typo_is_one_line_before_any_work(tmp_path):
    from helpers import REPO, run, tiny_s2former_options, write_paired_folder, write_yaml

    write_paired_folder(tmp_path / 'data', n=2, size=(16, 16))
    opt = _rename(tiny_s2former_options(tmp_path / 'data', None, name='typo'), 'train.ema_decay', 'ema_decy')
    write_yaml(tmp_path / 't.yml', opt)
    proc = run(['-m', 'basicsr.train', '-opt', 't.yml'], cwd=tmp_path, PYTHONPATH=str(REPO))  # this checkout's code
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "train: error: train:ema_decy: unknown key; did you mean 'ema_decay'?"
    )
    assert 'Traceback' not in proc.stderr
    assert not list((tmp_path / 'experiments' / 'typo').glob('models/*.pth'))


def _s2former_option_files() -> list[str]:
    import yaml
    from helpers import REPO

    files = sorted(str(p) for p in REPO.glob('options/*.yml'))
    return [f for f in files if yaml.safe_load(open(f)).get('model_type') == 'S2FormerModel']


@pytest.mark.parametrize('path', _s2former_option_files(), ids=os.path.basename)
def test_shipped_options_pass_the_checks(path):
    import yaml

    from s2former_plugin.models.s2former_model import check_training_options

    with open(path) as f:
        check_training_options(yaml.safe_load(f))


# ----------------------------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------------------------
def _states(tmp_path, iters=(5, 10)):
    from s2former_plugin import compat

    exp = tmp_path / 'experiments' / 'run'
    (exp / 'training_states').mkdir(parents=True)
    (exp / 'models').mkdir()
    for it in iters:
        compat.atomic_torch_save(
            {'epoch': 1, 'iter': it, 'optimizers': [], 'schedulers': []}, str(exp / 'training_states' / f'{it}.state')
        )
    opt = {
        'auto_resume': True,
        'name': 'run',
        'network_g': {},
        'path': {'experiments_root': str(exp), 'models': str(exp / 'models')},
    }
    return exp, opt


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize('damage', ['truncated', 'empty'])
def test_auto_resume_skips_unreadable_newest_state(tmp_path, capsys, damage):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    _truncate(exp / 'training_states' / '10.state', 0.5 if damage == 'truncated' else 0)
    state = compat.load_resume_state(opt)
    assert state['iter'] == 5 and opt['path']['resume_state'].endswith('5.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_5.pth')
    err = capsys.readouterr().err
    assert '10.state: unreadable training state' in err and 'resuming from' in err and '5.state instead' in err
    assert any('10.state' in m for m in compat._pending_log)  # written to the training log once it exists
    compat._pending_log.clear()


def test_auto_resume_with_no_readable_state_is_one_line(tmp_path):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    for it in (5, 10):
        _truncate(exp / 'training_states' / f'{it}.state')
    with pytest.raises(compat.ResumeError, match=r'no readable training state in .*10\.state: unreadable'):
        compat.load_resume_state(opt)
    compat._pending_log.clear()


@pytest.mark.parametrize('problem', ['truncated', 'missing'])
def test_explicit_resume_state_problems_name_the_file(tmp_path, problem):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    path = exp / 'training_states' / ('10.state' if problem == 'truncated' else '99.state')
    if problem == 'truncated':
        _truncate(path)
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(path)
    with pytest.raises(compat.ResumeError, match=str(path)):
        compat.load_resume_state(opt)


@pytest.fixture
def s2f_model(tmp_path):
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from helpers import parsed_options, tiny_s2former_options, write_paired_folder
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    write_paired_folder(tmp_path / 'data', n=2, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    batch = next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2)))
    return opt, build_model, batch


def test_nan_stop_advice_works(s2f_model):
    from s2former_plugin.models.s2former_model import NonFiniteLoss

    opt, build_model, batch = s2f_model
    model = build_model(opt)
    model.feed_data(batch)
    model.optimize_parameters(1)
    model.save(0, 1)
    model.save_training_state(0, 1)
    model.feed_data({**batch, 'lq': torch.full_like(batch['lq'], float('nan'))})
    with pytest.raises(NonFiniteLoss) as info:
        model.optimize_parameters(2)
    message = str(info.value)
    weights = message.split('path:pretrain_network_g: ')[1]
    assert os.path.isfile(weights) and weights.endswith('net_g_1.pth') and 'train:max_grad_norm' in message
    # What the advice rests on: a resumed run keeps the saved learning rate but reads max_grad_norm from the YAML.
    state = torch.load(os.path.join(opt['path']['training_states'], '1.state'), weights_only=True)
    opt['train']['optim_g']['lr'] = opt['train']['optim_g']['lr'] / 10
    opt['train']['max_grad_norm'] = 0.5
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert resumed.optimizers[0].param_groups[0]['lr'] == model.optimizers[0].param_groups[0]['lr']
    assert resumed.max_grad_norm == 0.5
    # The advice's fine-tuning route does take the lowered learning rate.
    assert "scheduler's base_lr/max_lr" in message  # a CyclicLR sets the lr itself
    opt['train']['scheduler'].update(base_lr=1e-4, max_lr=2e-4)
    opt['path']['pretrain_network_g'] = weights
    fresh = build_model(opt)
    assert fresh.optimizers[0].param_groups[0]['lr'] == pytest.approx(1e-4)


# ----------------------------------------------------------------------------------------------------------------
# create_lmdb: full disk, unusable output, verification
# ----------------------------------------------------------------------------------------------------------------
def _lmdb_source(root, n: int = 3):
    from helpers import write_paired_folder

    return write_paired_folder(root, n=n, size=(12, 12))


def _create_lmdb(*argv: str) -> int:
    from s2former_plugin.data import lmdb_convert

    return lmdb_convert.main([*argv, '--no-progress', '--workers', '0'])


def test_create_lmdb_disk_full_says_so(tmp_path, capsys, monkeypatch):
    import errno

    from s2former_plugin.data import lmdb_convert

    src = _lmdb_source(tmp_path / 'src')

    def full(self, batch):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(lmdb_convert._PairWriter, 'commit', full)
    assert _create_lmdb('--layout', 'paired', '--input', str(src), '--output', str(tmp_path / 'o')) == 2
    captured = capsys.readouterr()
    assert 'error: disk full while writing' in captured.err and 'free some space' in captured.err
    assert 'interrupted' not in captured.out + captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize('kind', ['file', 'under-a-file'])
def test_create_lmdb_unusable_output_is_one_line(tmp_path, capsys, kind):
    src = _lmdb_source(tmp_path / 'src')
    (tmp_path / 'f').write_text('x')
    out = tmp_path / 'f' if kind == 'file' else tmp_path / 'f' / 'out'
    assert _create_lmdb('--layout', 'paired', '--input', str(src), '--output', str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('create_lmdb: error: output:') and '\n' not in err
    assert (tmp_path / 'f').read_text() == 'x'


def test_create_lmdb_failed_verify_is_not_finished_and_verify_only_rechecks(tmp_path, capsys, monkeypatch):
    import json

    from s2former_plugin.data import lmdb_convert

    src = _lmdb_source(tmp_path / 'src')
    out = tmp_path / 'o'
    real = lmdb_convert._encode_pair

    def off_by_one(args):  # what a bad disk or a bug would store: one value differs from its source
        key, lq, gt, *rest = real(args)
        if key == '001':
            lq = cv2.imencode('.png', cv2.imdecode(np.frombuffer(lq, np.uint8), 1) // 2)[1].tobytes()
        return key, lq, gt, *rest

    monkeypatch.setattr(lmdb_convert, '_encode_pair', off_by_one)
    argv = ['--layout', 'paired', '--input', str(src), '--output', str(out)]
    assert _create_lmdb(*argv, '--verify') == 1
    assert json.loads((out / 'create_lmdb.json').read_text())['status'] == 'verify_failed'
    capsys.readouterr()
    assert _create_lmdb(*argv) == 2
    assert 'failed --verify; pass --overwrite' in capsys.readouterr().err
    assert _create_lmdb('--verify-only', str(out)) == 1
    assert 'lq.lmdb: key 001 differs' in capsys.readouterr().err
    monkeypatch.setattr(lmdb_convert, '_encode_pair', real)
    assert _create_lmdb(*argv, '--overwrite', '--verify') == 0
    assert json.loads((out / 'create_lmdb.json').read_text())['status'] == 'done'
    before = _digest(out)
    assert _create_lmdb('--verify-only', str(out)) == 0
    assert 'verified: 3 pairs, 0 missing or differ' in capsys.readouterr().out
    assert _digest(out) == before  # --verify-only writes nothing
    cv2.imwrite(str(src / 'gt' / '002.png'), np.zeros((12, 12, 3), np.uint8))  # a source changed since
    os.remove(src / 'lq' / '000.png')  # and one disappeared
    assert _create_lmdb('--verify-only', str(out)) == 1
    err = capsys.readouterr().err
    assert 'key 000: its source pair is gone' in err and 'gt.lmdb: key 002 differs' in err


@pytest.mark.parametrize('what', ['empty-folder', 'missing', 'unfinished'])
def test_create_lmdb_verify_only_refuses_non_outputs(tmp_path, capsys, what):
    out = tmp_path / 'o'
    if what == 'empty-folder':
        out.mkdir()
    elif what == 'unfinished':
        out.mkdir()
        (out / 'create_lmdb.json').write_text('{"status": "running", "options": {}}')
        (out / 'lq.lmdb').mkdir()
        (out / 'lq.lmdb' / 'meta_info.txt').write_text('a.png (1,1,3) 1\n')
    assert _create_lmdb('--verify-only', str(out)) == 2
    assert capsys.readouterr().err.startswith('create_lmdb: error: --verify-only:')


# ----------------------------------------------------------------------------------------------------------------
# Training inputs: VGG file, folder dataset, synthetic dataset
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('content', [b'', b'garbage' * 100, b'PK\x03\x04truncated zip'], ids=['empty', 'text', 'zip'])
def test_garbage_vgg_file_names_the_path(tmp_path, content):
    from s2former_plugin.losses.s2former_loss import S2FormerPerceptualLoss

    path = tmp_path / 'vgg19.pth'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf'{path} is not a torchvision VGG19 state dict \(unreadable'):
        S2FormerPerceptualLoss(vgg_weights=str(path))


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'damaged-jpeg'])
@pytest.mark.parametrize('side', ['lq', 'gt'])
def test_folder_dataset_names_a_bad_image(tmp_path, damage, side):
    from basicsr.data import build_dataset
    from helpers import write_paired_folder

    root = write_paired_folder(tmp_path / 'd', n=2, size=(24, 24))
    bad = root / side / '001.png'
    if damage == 'empty':
        bad.write_bytes(b'')
    elif damage == 'truncated':
        _truncate(bad)
    else:
        bad.unlink()
        bad = root / side / '001.jpg'
        bad.write_bytes(_overwrite(_jpeg(), 0.3, b'\x00' * 2000))
    opt = {'name': 'F', 'type': 'DerainFolderDataset', 'layout': 'paired', 'dataroot': str(root), 'phase': 'val',
           'scale': 1, 'io_backend': {'type': 'disk'}}  # fmt: skip
    ds = build_dataset(opt)
    assert ds[0]['lq'].shape == (3, 24, 24)
    with pytest.raises(imageio.ImageError, match=str(bad)):
        ds[1]


def test_synthetic_dataset_names_a_bad_image(tmp_path):
    from basicsr.data import build_dataset

    _photos(tmp_path / 'clean', n=1)
    (tmp_path / 'clean' / 'p9.png').write_bytes(_png()[:100])
    opt = {'name': 'S', 'type': 'SyntheticRainDataset', 'dataroot_gt': str(tmp_path / 'clean'), 'phase': 'val',
           'scale': 1, 'io_backend': {'type': 'disk'}}  # fmt: skip
    ds = build_dataset(opt)
    with pytest.raises(ValueError, match=r'SyntheticRainDataset: .*p9\.png: truncated PNG'):
        [ds[i] for i in range(len(ds))]


# ----------------------------------------------------------------------------------------------------------------
# Damaged images through each command's reading path; full disks
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('strict', [False, True], ids=['skip', 'strict'])
def test_create_lmdb_does_not_store_a_damaged_jpeg(tmp_path, strict):
    from s2former_plugin.data.lmdb_convert import ConvertError, convert

    src = _lmdb_source(tmp_path / 'src')
    os.remove(src / 'lq' / '001.png')
    (src / 'lq' / '001.jpg').write_bytes(_overwrite(_jpeg(), 0.3, b'\x00' * 2000))
    cv2.imwrite(str(src / 'gt' / '001.png'), _smooth(96, 128))
    lines = []
    kw = {'workers': 0, 'progress': False, 'log': lines.append, 'strict': strict, 'verify_output': True}
    if strict:
        with pytest.raises(ConvertError, match=r'--strict: .*001\.jpg: damaged image \(decoder: Corrupt JPEG data'):
            convert('paired', str(src), str(tmp_path / 'o'), **kw)
        return
    report = convert('paired', str(src), str(tmp_path / 'o'), **kw)
    assert report.written == 2 and not report.verify_errors
    assert any('001.jpg: damaged image' in line for line in report.skipped)


@pytest.mark.parametrize('case', ['jpeg-cut-at-90pc', 'jpeg-zeroed-middle', 'png-cut-before-iend'])
def test_report_and_benchmark_reader_refuses_damaged_images(tmp_path, case):
    from s2former_plugin.metrics import scoring

    make, reason = DAMAGED[case]
    path = tmp_path / ('x.jpg' if case.startswith('jpeg') else 'x.png')
    path.write_bytes(make())
    with pytest.raises(ValueError, match=re.escape(reason)):
        scoring.read_image(str(path))


def test_write_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    import errno

    real_open = open

    class Full:  # a real file that fills up after 10 bytes
        def __init__(self, path, mode):
            self.f = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(imageio, 'open', Full, raising=False)
    target = tmp_path / 'out.png'
    target.write_bytes(b'earlier')
    with pytest.raises(OSError, match=r'out\.png: cannot write \(disk full\)'):
        imageio.write(str(target), _smooth())
    assert os.listdir(tmp_path) == ['out.png'] and target.read_bytes() == b'earlier'  # no partial file


def _disk_full(path, img, params=None):
    raise OSError(f'{path}: cannot write (disk full)')


def test_infer_stops_on_a_full_disk(tiny_weights, tmp_path, capsys, monkeypatch):
    d, _ = tiny_weights
    _photos(tmp_path / 'in', n=2)
    monkeypatch.setattr(imageio, 'write', _disk_full)
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('infer: error: ') and 'p0.png: cannot write (disk full); stopped' in err[-1]


def test_synthetic_rain_stops_on_a_full_disk(tmp_path, capsys, monkeypatch):
    _photos(tmp_path / 'in', n=2)
    monkeypatch.setattr(imageio, 'write', _disk_full)
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]) == 1
    assert 'cannot write (disk full) (after 0 pairs)' in capsys.readouterr().err


def test_every_row_of_the_reliability_table_names_a_test():
    import importlib.util
    import sys
    from pathlib import Path

    from helpers import REPO

    rows = [ln for ln in (REPO / 'docs' / 'reliability.md').read_text().splitlines() if re.match(r'\| \d+ \|', ln)]
    assert len(rows) >= 188
    assert [int(r.split('|')[1]) for r in rows] == list(range(1, len(rows) + 1))
    sys.path.insert(0, str(REPO / 'tests'))
    modules = {}
    for row in rows:
        path, name = re.search(r'`(tests/[\w/]+\.py)::(\w+)', row).groups()
        if path not in modules:  # by file: tests/<subpackage>/test_<module>.py share no package
            spec = importlib.util.spec_from_file_location(f'_reliability_{Path(path).stem}', REPO / path)
            modules[path] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[path])
        assert callable(getattr(modules[path], name, None)), row


def test_official_checkpoint_loader_refuses_non_finite_weights(tmp_path):
    from s2former_plugin.official import load_official_checkpoint

    torch.save({'module.conv.weight': torch.tensor([1.0, float('inf')]), 'step': torch.tensor(3)}, tmp_path / 'o.pth')
    expected = r'o\.pth( \(state dict\))?: non-finite \(NaN/inf\) weights in 1 tensor\(s\): conv\.weight'
    with pytest.raises(ValueError, match=expected):
        load_official_checkpoint(tmp_path / 'o.pth')


@pytest.mark.parametrize('where', ['main-process', 'dataloader-worker'])
def test_training_on_a_damaged_image_ends_in_one_line(tmp_path, capsys, monkeypatch, where):
    import basicsr.train
    from torch.utils.data import DataLoader

    from s2former_plugin import compat

    (tmp_path / 'bad.png').write_bytes(_png()[:100])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return imageio.read(str(tmp_path / 'bad.png'))

    def pipeline(root):
        next(iter(DataLoader(Images(), num_workers=1 if where == 'dataloader-worker' else 0)))

    monkeypatch.setattr(basicsr.train, 'train_pipeline', pipeline)
    with pytest.raises(SystemExit) as info:
        compat.train_main(str(tmp_path))
    assert info.value.code == 2
    assert capsys.readouterr().err == f'train: error: {tmp_path / "bad.png"}: truncated PNG (IDAT chunk cut short)\n'


@pytest.mark.parametrize('out', ['data', 'data/results'])
def test_benchmark_never_writes_into_its_data(tmp_path, capsys, fake_eval, out):
    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    opt_file = write_yaml(tmp_path / 'b.yml', _bench_options(data))
    before = _digest(data)
    assert benchmark.main(['-opt', str(opt_file), '--out', str(tmp_path / out)]) == 2
    assert 'is inside the data folder' in capsys.readouterr().err
    assert _digest(data) == before and fake_eval == []


def test_infer_warns_about_images_an_earlier_run_left(tiny_weights, tmp_path, capsys):
    d, _ = tiny_weights
    _photos(tmp_path / 'in', n=2)
    (tmp_path / 'out').mkdir()
    cv2.imwrite(str(tmp_path / 'out' / 'old.png'), _smooth())
    cv2.imwrite(str(tmp_path / 'out' / 'p0.png'), _smooth())  # replaced by this run (--overwrite): not stale
    argv = ['--weights', str(d / 'good.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--no-progress', '--device', 'cpu', '--tile', '0', '--overwrite']) == 0
    err = capsys.readouterr().err
    assert 'also holds 1 image(s) this run did not write (e.g. old.png)' in err


@pytest.mark.parametrize(
    ('dataset', 'typo', 'known'),
    [
        ('DerainFolderDataset', 'use_hfilp', 'use_hflip'),
        ('DerainFolderDataset', 'gt_szie', 'gt_size'),
        ('DerainFolderDataset', 'filename_tmpel', 'filename_tmpl'),
        ('SyntheticRainDataset', 'num_sample', 'num_samples'),
        ('SyntheticRainDataset', 'use_rott', 'use_rot'),
    ],
)
def test_dataset_key_typos_are_refused(tmp_path, dataset, typo, known):
    from basicsr.data import build_dataset
    from helpers import write_paired_folder

    root = write_paired_folder(tmp_path / 'd', n=1, size=(16, 16))
    where = {'dataroot': str(root)} if dataset == 'DerainFolderDataset' else {'dataroot_gt': str(root / 'gt')}
    opt = {'name': 'x', 'type': dataset, 'phase': 'val', 'scale': 1, **where}
    build_dataset(opt)
    with pytest.raises(ValueError, match=f'{dataset}:comment: unknown key; the keys are '):  # one policy: refused
        build_dataset(dict(opt, comment='copied from elsewhere'))
    with pytest.raises(ValueError, match=f"{dataset}:{typo}: unknown key; did you mean '{known}'"):
        build_dataset(dict(opt, **{typo: 1}))


def test_validation_refuses_a_nan_prediction(s2f_model, monkeypatch):
    from basicsr.data import build_dataloader, build_dataset

    from s2former_plugin.models.s2former_model import NonFiniteLoss

    opt, build_model, _ = s2f_model
    model = build_model(opt)
    val_set = build_dataset(opt['datasets']['val'])
    loader = build_dataloader(val_set, opt['datasets']['val'], num_gpu=0, dist=False)
    monkeypatch.setattr(model, 'predict', lambda lq: (torch.full_like(lq, float('nan')), torch.zeros_like(lq)))
    with pytest.raises(NonFiniteLoss, match=r'validation: the network output for .*000\.png holds NaN/inf'):
        model.validation(loader, 1, None, False)
