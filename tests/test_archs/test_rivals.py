"""The rival derainers (Restormer, MPRNet, NAFNet) against their authors' classes, and in the benchmark.

The references (``tests/data/rivals/*.pt``) hold outputs of the authors' own classes (see ``../shared/README.md``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, run, write_paired_folder, write_yaml

from s2former_plugin.checkpoint import load_state_dict_any

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rivals'
FILES = {'Restormer': 'restormer_small_seed7.pt', 'MPRNet': 'mprnet_small_seed7.pt', 'NAFNet': 'nafnet_small_seed7.pt'}


@pytest.fixture(scope='module')
def rivals() -> dict[str, dict]:
    """The stored references, by registered name (needs the ``rivals`` extra)."""
    pytest.importorskip('spandrel_extra_arches')
    return {name: torch.load(DATA / f, map_location='cpu', weights_only=True) for name, f in FILES.items()}


def _build(name: str, kwargs: dict) -> torch.nn.Module:
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.archs import build_network

    return build_network({'type': name, **kwargs})


def _authors_net(name: str, ref: dict) -> torch.nn.Module:
    net = _build(name, ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()


@pytest.mark.parametrize('name', FILES)
def test_rival_equals_the_authors_outputs(rivals, name):
    ref = rivals[name]
    net = _authors_net(name, ref)
    assert list(net.state_dict()) == list(ref['state_dict'])  # the authors' keys, unchanged and in order
    with torch.no_grad():
        out = net(ref['input'])
    # One image: the final output (MPRNet's is the first of its three stages).
    assert out.shape == ref['input'].shape
    torch.testing.assert_close(out, ref['outputs'][0], rtol=0, atol=1e-5)


def _released(layout: str, state: dict) -> tuple[dict, str | None]:
    """A checkpoint in one of the layouts the authors release, and the param_key to ask for."""
    noise = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    if layout == 'params':  # Restormer, NAFNet: BasicSR's {'params': ...}
        return {'params': state}, 'params'
    if layout == 'params_ema':
        return {'params': noise, 'params_ema': state}, 'params_ema'
    if layout == 'state_dict':  # MPRNet: train.py's {'epoch', 'state_dict', 'optimizer'}, saved from DataParallel
        param = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.Adam([param], lr=2e-4)
        param.grad = torch.ones(2)
        opt.step()
        return {
            'epoch': 250,
            'state_dict': {f'module.{k}': v for k, v in state.items()},
            'optimizer': opt.state_dict(),
        }, None
    return dict(state), None  # plain state dict


@pytest.mark.parametrize('layout', ['params', 'params_ema', 'state_dict', 'plain'])
@pytest.mark.parametrize('name', FILES)
def test_released_checkpoint_layouts_load_strictly(rivals, tmp_path, name, layout):
    ref = rivals[name]
    ckpt, param_key = _released(layout, ref['state_dict'])
    path = tmp_path / 'released.pth'
    torch.save(ckpt, path)
    state, _ = load_state_dict_any(str(path), param_key)
    net = _build(name, ref['kwargs'])
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = net.eval()(ref['input'])
    torch.testing.assert_close(out, ref['outputs'][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize('name', FILES)
def test_strict_loading_refuses_other_keys(rivals, name):
    ref = rivals[name]
    state = dict(ref['state_dict'])
    key = next(iter(state))
    state[f'body.{key}'] = state.pop(key)
    with pytest.raises(RuntimeError, match='Missing key'):
        _build(name, ref['kwargs']).load_state_dict(state, strict=True)


@pytest.mark.parametrize('size', [(37, 53), (64, 99), (9, 8), (3, 20)])
@pytest.mark.parametrize('name', FILES)
def test_any_size_comes_back_at_its_size(rivals, name, size):
    ref = rivals[name]
    net = _authors_net(name, ref)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if net.multiple > 1:
        # The authors' forward on the input padded at the bottom/right by reflection, cropped back: what their test
        # scripts do (replication where a side is too short to reflect).
        authors = next(c for c in type(net).__mro__ if c.__module__.startswith('spandrel'))
        h, w = size
        mode = 'reflect' if (-h % 8) < h and (-w % 8) < w else 'replicate'
        padded = torch.nn.functional.pad(x, (0, -w % 8, 0, -h % 8), mode=mode)
        with torch.no_grad():
            full = authors.forward(net, padded)
        full = full[0] if isinstance(full, tuple) else full
        torch.testing.assert_close(out, full[..., :h, :w], rtol=0, atol=0)


def test_batch_items_are_independent_of_padding(rivals):
    # A batch of one image equals that image's row in a larger batch at an odd size (no cross-talk via padding).
    ref = rivals['Restormer']
    net = _authors_net('Restormer', ref)
    x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1:], net(x[1:]), rtol=0, atol=1e-5)


def test_missing_extra_is_a_one_line_error(monkeypatch):
    import basicsr  # noqa: F401

    from s2former_plugin import benchmark
    from s2former_plugin.archs import spandrel_rival

    # No spandrel at all: every spandrel module, also those imported earlier in this process, is unimportable.
    for mod in [m for m in sys.modules if m.split('.')[0] in ('spandrel', 'spandrel_extra_arches')]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, 'spandrel', None)
    monkeypatch.setitem(sys.modules, 'spandrel_extra_arches', None)
    monkeypatch.setattr(spandrel_rival.SpandrelRival, '_concrete', {})
    for name in FILES:
        with pytest.raises(spandrel_rival.MissingExtraError) as err:
            _build(name, {})
        message = str(err.value)
        assert '\n' not in message and message.startswith(f'{name} needs the optional extra')
        assert 'pip install "s2former_plugin[rivals]"' in message
    with pytest.raises(benchmark.BenchmarkError) as err:
        benchmark.build_net({'type': 'MPRNet'}, 'archs[2]:network_g')
    assert '\n' not in str(err.value) and 's2former_plugin[rivals]' in str(err.value)
    assert str(err.value).startswith('archs[2]:network_g:')


@pytest.mark.slow
def test_benchmark_with_s2former_and_two_rivals(rivals, tmp_path):
    # Whole test images of 36x44 (not multiples of 8): Restormer trained, MPRNet from a released-layout checkpoint.
    data = write_paired_folder(tmp_path / 'data', n=5, size=(36, 44))
    mprnet = rivals['MPRNet']
    ckpt = tmp_path / 'model_deraining.pth'
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in mprnet['state_dict'].items()}}, ckpt)
    opt = {
        'name': 'rivals_bench',
        'device': 'cpu',
        'data': {'layout': 'paired', 'dataroot': str(data), 'train': {'pairs': '1-3'}, 'test': {'pairs': [4, 5]}},
        'train': {
            'batch_size': 2,
            'crop': 16,
            'total_iter': 2,
            'max_minutes': 1,  # calibrated (capped at total_iter): the training log must survive the calibration
            'print_freq': 1,
            'save_checkpoint_freq': 2,
            'threads': 1,
        },
        'eval': {'tile': None},
        'speed': {'sizes': [24], 'macs_size': 24, 'runs': 1, 'threads': 1},
        'archs': [
            {'name': 's2f', 'network_g': {'type': 'S2Former', 'preset': 'small'}},
            {'name': 'restormer', 'network_g': {'type': 'Restormer', **rivals['Restormer']['kwargs']}},
            {'name': 'mprnet', 'network_g': {'type': 'MPRNet', **mprnet['kwargs']}, 'checkpoint': str(ckpt)},
        ],
    }
    out = tmp_path / 'out'
    # PYTHONPATH: the subprocesses run this checkout's code (not another installed copy of the plugin).
    proc = run(
        ['-m', 's2former_plugin.benchmark', '-opt', str(write_yaml(tmp_path / 'b.yml', opt)), '--out', str(out)],
        tmp_path,
        PYTHONPATH=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r['name']: r for r in json.loads((out / 'results.json').read_text())['results']}
    assert set(results) == {'s2f', 'restormer', 'mprnet'}
    for r in results.values():
        means = [m['mean'] for m in r['metrics'].values()]  # over the seeds
        values = [r['params'], r['macs@24'], r['speed']['24']['latency_ms'], *means]
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), r
        assert r['test_images'] == 2
    for name in ('s2f', 'restormer'):  # trained: the same steps, loss curves read from basicsr's training log
        train = results[name]['train']
        assert train['total_iter'] == 2 and train['curves'], train
    assert results['restormer']['train']['model_type'] == 'SRModel' and results['restormer']['train']['total_iter'] == 2
    assert results['mprnet']['weights_used'] == 'state_dict'
    # The parameters of the net built from the entry (MPRNet shares one PReLU under many state-dict keys).
    assert results['mprnet']['params'] == sum(p.numel() for p in _build('MPRNet', mprnet['kwargs']).parameters())
    assert '| restormer |' in (out / 'results.md').read_text()


OPTION_FILES = {'Restormer': 'restormer_rain200h.yml', 'MPRNet': 'mprnet_rain200h.yml', 'NAFNet': 'nafnet_rain200h.yml'}


@pytest.mark.parametrize('name', OPTION_FILES)
def test_training_options_name_registered_types_and_the_authors_nets(name):
    import basicsr  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    opt = yaml.safe_load((REPO / 'options' / OPTION_FILES[name]).read_text())
    assert opt['model_type'] in MODEL_REGISTRY and opt['network_g']['type'] == name in ARCH_REGISTRY
    assert all(d['type'] in DATASET_REGISTRY for d in opt['datasets'].values())
    assert opt['train']['pixel_opt']['type'] in LOSS_REGISTRY
    assert all(m['type'] in METRIC_REGISTRY for m in opt['val']['metrics'].values())
    assert opt['train']['scheduler']['periods'] == [opt['train']['total_iter']]


@pytest.mark.slow
@pytest.mark.parametrize('name', OPTION_FILES)
def test_training_options_train_with_plain_basicsr(rivals, tmp_path, name):
    # The shipped file through `python -m basicsr.train`, with only the data, the net's size and the length shrunk.
    data = write_paired_folder(tmp_path / 'data', n=3, size=(28, 36))
    opt = yaml.safe_load((REPO / 'options' / OPTION_FILES[name]).read_text())
    opt['network_g'].update(rivals[name]['kwargs'])
    for phase, dataset in opt['datasets'].items():
        dataset.update(dataroot_gt=str(data / 'gt'), dataroot_lq=str(data / 'lq'), io_backend={'type': 'disk'})
        dataset['filename_tmpl'] = '{}'
        if phase == 'train':
            dataset.update(gt_size=16, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['train'].update(total_iter=2, warmup_iter=min(opt['train']['warmup_iter'], 1))
    opt['train']['scheduler']['periods'] = [2]
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt.update(num_gpu=0, name=f'tiny_{name}')
    opt_file = write_yaml(tmp_path / 'o.yml', opt)
    proc = run(['-m', 'basicsr.train', '-opt', str(opt_file)], tmp_path, PYTHONPATH=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = next((tmp_path / 'experiments' / f'tiny_{name}').glob('train_*.log')).read_text()
    assert f'Network [{name}] is created' in log and 'End of training' in log
    psnr = [float(v) for v in re.findall(r'# psnr: ([-\d.]+)', log)]
    assert psnr and all(math.isfinite(v) for v in psnr)  # whole 28x36 validation images: not multiples of 8
    assert set(re.findall(r'Best: [-\d.]+ @ (\d+) iter', log)) == {'2'}  # basicsr's SRModel numbered right too


@pytest.mark.parametrize('file', ['benchmark_derainers.yml', 'benchmark_derainers_cpu.yml'])
def test_derainer_benchmark_options_build_s2former_and_the_seven_rivals(rivals, tmp_path, file):
    from s2former_plugin import benchmark

    opt = benchmark.load_options(str(REPO / 'options' / file), {'data_root': str(tmp_path)})
    types = [a['network_g']['type'] for a in opt['archs']]
    assert types == ['S2Former', 'Restormer', 'MPRNet', 'NAFNet', 'DRSformer', 'NeRDRain', 'IDT', 'Uformer']
    for entry in opt['archs']:
        benchmark.build_net(entry['network_g'], entry['name'])


@pytest.mark.parametrize(('name', 'layout'), [('Restormer', 'params'), ('NAFNet', 'params'), ('MPRNet', 'state_dict')])
def test_pretrain_network_g_loads_the_released_layouts(rivals, tmp_path, name, layout):
    # What `path: {pretrain_network_g: ..., param_key_g: ...}` in the training options does (basicsr's loader).
    from basicsr.models.base_model import BaseModel

    ref = rivals[name]
    ckpt, _ = _released(layout, ref['state_dict'])
    torch.save(ckpt, tmp_path / 'released.pth')
    net = _build(name, ref['kwargs'])
    model = BaseModel.__new__(BaseModel)  # only load_network's helpers are used
    model.load_network(net, str(tmp_path / 'released.pth'), strict=True, param_key=layout)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(ref['input']), ref['outputs'][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize('name', FILES)
def test_concrete_class_derives_from_the_registered_and_the_authors_class(rivals, name):
    """Built afresh, not from the cache ``_Rival`` keeps after the first build: what every rival is an instance of."""
    import importlib

    from s2former_plugin.archs import spandrel_rival

    registered = spandrel_rival.RIVALS[name]
    module, impl = registered.impl
    authors = getattr(importlib.import_module(module), impl)
    concrete = spandrel_rival._concrete_class(registered)
    assert concrete.__bases__ == (registered, authors)
    assert (concrete.__name__, concrete.__qualname__, concrete.__module__) == (name, name, spandrel_rival.__name__)
    assert type(_build(name, rivals[name]['kwargs'])).__bases__ == (registered, authors)
