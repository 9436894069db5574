"""DRSformer against the authors' class (with and without MEFC), at any size, in training and from its options file.

The references (``tests/data/rivals/drsformer*_small_seed7.pt``) hold outputs of the authors' own classes
(cschenxiang/DRSformer ``DRSformer_arch.py`` and ``DRSformer_arch_200L+SPA.py``, see ``../shared/README.md``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import REPO, parse_training_options, run, write_paired_folder, write_yaml

from s2former_plugin.archs import drsformer_arch
from s2former_plugin.archs.drsformer_arch import DRSformer
from s2former_plugin.checkpoint import load_state_dict_any

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rivals'
#: fixture file -> the ``mefc`` argument that gives the authors' class it was made with.
FILES = {'drsformer_small_seed7.pt': True, 'drsformer_nomefc_small_seed7.pt': False}


@pytest.fixture(scope='module', params=list(FILES))
def ref(request) -> dict:
    """One stored reference, with the ``mefc`` value of its variant added."""
    data = torch.load(DATA / request.param, map_location='cpu', weights_only=True)
    return {**data, 'mefc': FILES[request.param]}


def _net(ref: dict) -> DRSformer:
    net = DRSformer(**ref['kwargs'], mefc=ref['mefc'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()


def test_fixtures_name_the_authors_classes(ref):
    file = 'DRSformer_arch.py' if ref['mefc'] else 'DRSformer_arch_200L+SPA.py'
    assert ref['source'] == f'cschenxiang/DRSformer basicsr/models/archs/{file}' and ref['class'] == 'DRSformer'


def test_equals_the_authors_outputs_float32(ref):
    net = DRSformer(**ref['kwargs'], mefc=ref['mefc'])
    assert list(net.state_dict()) == list(ref['state_dict'])  # the authors' keys, in their order
    assert all(net.state_dict()[k].shape == v.shape for k, v in ref['state_dict'].items())
    net.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        out = net.eval()(ref['input'])
    assert len(ref['outputs']) == 1 and out.shape == ref['input'].shape == (2, 3, 64, 96)
    torch.testing.assert_close(out, ref['outputs'][0], rtol=0, atol=1e-5)


def test_equals_the_authors_outputs_float64(ref):
    net = _net(ref).double()
    with torch.no_grad():
        out = net(ref['input'].double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref['outputs_float64'][0], rtol=0, atol=1e-10)


def test_the_variants_differ_by_the_two_mefc_modules():
    refs = [torch.load(DATA / f, map_location='cpu', weights_only=True) for f in FILES]
    extra = [k for k in refs[0]['state_dict'] if k not in refs[1]['state_dict']]
    assert {k.split('.')[0] for k in extra} == {'encoder_level0', 'refinement'}
    assert [k for k in refs[0]['state_dict'] if k not in extra] == list(refs[1]['state_dict'])


def test_strict_loading_refuses_renamed_keys(ref):
    state = dict(ref['state_dict'])
    key = 'decoder_level1.0.attn.temperature'
    state[f'body.{key}'] = state.pop(key)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*decoder_level1\.0\.attn\.temperature'):
        DRSformer(**ref['kwargs'], mefc=ref['mefc']).load_state_dict(state, strict=True)
    # The other variant's weights do not load either (MEFC keys missing or unexpected).
    with pytest.raises(RuntimeError, match='encoder_level0'):
        DRSformer(**ref['kwargs'], mefc=not ref['mefc']).load_state_dict(ref['state_dict'], strict=True)


@pytest.mark.parametrize('size', [(37, 53), (9, 8), (3, 20), (1, 1), (16, 24)])
def test_any_size_is_the_authors_forward_on_the_padded_image_cropped(ref, size):
    net = _net(ref)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # The authors' test.py: pad bottom/right to a multiple of 8 by reflection, run, crop (replication here where a
    # side is too short to reflect, which their script cannot do).
    h, w = size
    mode = 'reflect' if (-h % 8) < h and (-w % 8) < w else 'replicate'
    padded = F.pad(x, (0, -w % 8, 0, -h % 8), mode=mode)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    with torch.no_grad():
        full = net.restore(padded)
    torch.testing.assert_close(out, full[..., :h, :w], rtol=0, atol=0)


def test_batch_items_are_independent(ref):
    # MEFC pools each image globally: one image alone equals its row in a batch (odd size, padded).
    net = _net(ref)
    x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1:], net(x[1:]), rtol=0, atol=1e-5)


def test_build_network_through_basicsr(ref):
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.archs import build_network

    net = build_network({'type': 'DRSformer', **ref['kwargs'], 'mefc': ref['mefc']})
    assert type(net) is DRSformer and net.mefc is ref['mefc']
    net.load_state_dict(ref['state_dict'], strict=True)
    x = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), _net(ref)(x), rtol=0, atol=0)


@pytest.mark.parametrize('layout', ['params', 'params_ema', 'plain'])
def test_released_checkpoint_layouts_load_strictly(ref, tmp_path, layout):
    # BasicSR's {'params': ...} (the authors' releases), with an EMA copy, or a bare state dict.
    state = ref['state_dict']
    ckpt = {'params': state} if layout == 'params' else state
    if layout == 'params_ema':
        ckpt = {'params': {k: torch.randn_like(v) for k, v in state.items()}, 'params_ema': state}
    torch.save(ckpt, tmp_path / 'released.pth')
    loaded, _ = load_state_dict_any(str(tmp_path / 'released.pth'), None if layout == 'plain' else layout)
    net = DRSformer(**ref['kwargs'], mefc=ref['mefc'])
    net.load_state_dict(loaded, strict=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize('mefc', [True, False])
def test_a_training_step_reaches_every_parameter(mefc):
    torch.manual_seed(0)
    net = DRSformer(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 2, 4, 8], mefc=mefc).train()
    x, gt = torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28)  # odd for the 8-multiple: the padded path trains
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss = F.l1_loss(net(x), gt)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        assert F.l1_loss(net(x), gt) < loss  # one step downhill on the batch it saw


def test_paper_default_parameter_counts_are_the_documented_ones():
    counts = {m: sum(p.numel() for p in DRSformer(mefc=m).parameters()) for m in (True, False)}
    assert counts == {True: drsformer_arch.PARAMS_DEFAULT, False: drsformer_arch.PARAMS_DEFAULT_NO_MEFC}
    assert counts == {True: 33_655_424, False: 32_610_304}
    assert '33,655,424' in DRSformer.__doc__ and '32,610,304' in DRSformer.__doc__


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'LayerNorm_type': 'withbias'}, 'LayerNorm_type'),
        ({'heads': [1, 2, 4]}, 'num_blocks and heads need 4 values'),
        ({'dim': 8, 'heads': [8, 2, 4, 8]}, 'at least 2 channels per head'),
        ({'dim': 12, 'heads': [1, 5, 4, 8]}, 'heads'),
        ({'dim': 7}, 'dim must be even'),
        ({'out_channels': 1}, 'out_channels'),
    ],
)
def test_bad_configurations_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        DRSformer(**kwargs)
    assert '\n' not in str(err.value) and str(err.value).startswith('DRSformer: ')


def test_training_options_parse_and_build_the_authors_net(tmp_path, monkeypatch):
    from basicsr.archs import build_network
    from basicsr.utils.registry import LOSS_REGISTRY

    opt = parse_training_options(REPO / 'options' / 'drsformer_rain200h.yml', tmp_path, monkeypatch)
    assert opt['train']['pixel_opt']['type'] in LOSS_REGISTRY
    # The authors' recipe: AdamW 3e-4 (weight decay 1e-4), L1, 300k iterations of 128x128 patches, 4 per GPU.
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g'] == {'type': 'AdamW', 'lr': 3e-4, 'weight_decay': 1e-4, 'betas': [0.9, 0.999]}
    assert train['total_iter'] == 300000 and train['scheduler']['periods'] == [train['total_iter']]
    assert train['scheduler']['eta_min'] == 1e-6 and train['pixel_opt']['type'] == 'L1Loss'
    assert (data['gt_size'], data['batch_size_per_gpu'], data['use_hflip'], data['use_rot']) == (128, 4, True, True)
    net = build_network(opt['network_g'])
    assert type(net) is DRSformer and net.mefc
    assert sum(p.numel() for p in net.parameters()) == drsformer_arch.PARAMS_DEFAULT
    assert list(net.state_dict()) == list(DRSformer().state_dict())


@pytest.mark.slow
def test_training_options_train_with_plain_basicsr(tmp_path):
    # The shipped file through `python -m basicsr.train`, with only the data, the net's size and the length shrunk.
    ref = torch.load(DATA / 'drsformer_small_seed7.pt', map_location='cpu', weights_only=True)
    data = write_paired_folder(tmp_path / 'data', n=3, size=(28, 36))
    opt = yaml.safe_load((REPO / 'options' / 'drsformer_rain200h.yml').read_text())
    opt['network_g'].update(ref['kwargs'])
    for phase, dataset in opt['datasets'].items():
        dataset.update(dataroot_gt=str(data / 'gt'), dataroot_lq=str(data / 'lq'), io_backend={'type': 'disk'})
        dataset['filename_tmpl'] = '{}'
        if phase == 'train':
            dataset.update(gt_size=16, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['train'].update(total_iter=2)
    opt['train']['scheduler']['periods'] = [2]
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt.update(num_gpu=0, name='tiny_drsformer')
    opt_file = write_yaml(tmp_path / 'o.yml', opt)
    proc = run(['-m', 'basicsr.train', '-opt', str(opt_file)], tmp_path, PYTHONPATH=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = next((tmp_path / 'experiments' / 'tiny_drsformer').glob('train_*.log')).read_text()
    assert 'Network [DRSformer] is created' in log and 'End of training' in log
    psnr = [float(v) for v in re.findall(r'# psnr: ([-\d.]+)', log)]
    assert psnr and all(math.isfinite(v) for v in psnr)  # whole 28x36 validation images: not multiples of 8


def test_the_benchmark_counts_its_multiply_adds():
    # the JIT tracer behind count_macs has no scatter_ of a bool scalar: the top-k mask scatters a tensor of True
    from s2former_plugin.benchmark.measure import count_macs

    net = DRSformer(dim=8, num_blocks=[1, 1, 1, 2], heads=[1, 2, 4, 8], mefc=True)
    assert count_macs(net, 16)['macs'] > 0
