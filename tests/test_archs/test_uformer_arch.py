"""Uformer (spandrel's copy) against the authors' class, at any size through their test scripts' procedure, in
training and from its options.

The reference (``tests/data/rivals/uformer_small_seed7.pt``) holds outputs of the authors' own class
(ZhendongWang6/Uformer ``model.py``, ``Uformer`` built for 64x64 inputs with the modulator, see
``../shared/README.md``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, parse_training_options

from s2former_plugin.checkpoint import load_state_dict_any

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rivals'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny nets: one thread is faster than two contended ones (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def ref() -> dict:
    pytest.importorskip('spandrel')
    return torch.load(DATA / 'uformer_small_seed7.pt', map_location='cpu', weights_only=True)


def _build(kwargs: dict) -> torch.nn.Module:
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.archs import build_network

    return build_network({'type': 'Uformer', **kwargs})


@pytest.fixture(scope='module')
def net(ref) -> torch.nn.Module:
    net = _build(ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()


def _authors_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The authors' class's own forward (spandrel's copy), bypassing the registered class's."""
    authors = next(c for c in type(net).__mro__ if c.__module__.startswith('spandrel'))
    return authors.forward(net, x)


def test_fixture_names_the_authors_class(ref):
    assert ref['source'] == 'ZhendongWang6/Uformer model.py' and ref['class'] == 'Uformer'
    assert ref['kwargs']['img_size'] == 64 and ref['kwargs']['modulator'] is True
    assert ref['input'].shape == (2, 3, 64, 64)


def test_built_through_basicsr_as_the_authors_class(net):
    from spandrel.architectures.Uformer import Uformer as SpandrelUformer

    from s2former_plugin.archs.uformer_arch import Uformer

    assert isinstance(net, Uformer) and isinstance(net, SpandrelUformer) and type(net).__name__ == 'Uformer'


def test_equals_the_authors_outputs_float32(ref):
    net = _build(ref['kwargs'])
    assert list(net.state_dict()) == list(ref['state_dict'])  # the authors' keys (with their buffers), in order
    assert all(net.state_dict()[k].shape == v.shape for k, v in ref['state_dict'].items())
    net.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        out = net.eval()(ref['input'])
    assert len(ref['outputs']) == 1 and out.shape == ref['input'].shape
    torch.testing.assert_close(out, ref['outputs'][0], rtol=0, atol=1e-5)


def test_equals_the_authors_outputs_float64(ref):
    net = _build(ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    net = net.eval().double()
    with torch.no_grad():
        out = net(ref['input'].double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref['outputs_float64'][0], rtol=0, atol=1e-10)


def test_strict_loading_refuses_renamed_keys(ref):
    state = dict(ref['state_dict'])
    key = 'decoderlayer_0.blocks.0.modulator.weight'
    state[f'body.{key}'] = state.pop(key)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*decoderlayer_0\.blocks\.0\.modulator\.weight'):
        _build(ref['kwargs']).load_state_dict(state, strict=True)
    # Without the modulator the net has no modulator weights: the reference's do not fit.
    with pytest.raises(RuntimeError, match='Unexpected key.*modulator'):
        _build({**ref['kwargs'], 'modulator': False}).load_state_dict(ref['state_dict'], strict=True)


def test_unknown_keyword_arguments_are_refused(ref):
    # The authors' **kwargs swallowed misspellings silently; spandrel's keyword-only signature names them.
    with pytest.raises(TypeError, match='modulater'):
        _build({**ref['kwargs'], 'modulater': True})


def test_released_checkpoint_layout_loads_strictly(ref, tmp_path):
    # The authors' training checkpoint: {'epoch', 'state_dict', 'optimizer'}, saved from DataParallel.
    ckpt = {'epoch': 250, 'state_dict': {f'module.{k}': v for k, v in ref['state_dict'].items()}, 'optimizer': {}}
    torch.save(ckpt, tmp_path / 'model_best.pth')
    state, _ = load_state_dict_any(str(tmp_path / 'model_best.pth'), None)
    net = _build(ref['kwargs'])
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(ref['input']), ref['outputs'][0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Any size: the authors' expand2square (test/test_*.py), restated here as the reference
# ---------------------------------------------------------------------------------------------------------------
def _authors_expand2square(timg: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, h, w = timg.size()
    side = int(math.ceil(max(h, w) / float(factor)) * factor)
    img = torch.zeros(1, 3, side, side).type_as(timg)
    mask = torch.zeros(1, 1, side, side).type_as(timg)
    img[:, :, ((side - h) // 2) : ((side - h) // 2 + h), ((side - w) // 2) : ((side - w) // 2 + w)] = timg
    mask[:, :, ((side - h) // 2) : ((side - h) // 2 + h), ((side - w) // 2) : ((side - w) // 2 + w)].fill_(1)
    return img, mask


def _authors_test(net, x: torch.Tensor) -> torch.Tensor:
    """The scripts' loop (one image at a time): expand, restore, select the image's pixels back."""
    outs = []
    for img in x.split(1):
        square, mask = _authors_expand2square(img, factor=128)
        restored = _authors_forward(net, square)
        outs.append(torch.masked_select(restored, mask.bool()).reshape(1, 3, *img.shape[-2:]))
    return torch.cat(outs)


@pytest.mark.parametrize('size', [(100, 150), (37, 53), (128, 128), (129, 20), (3, 5)])
def test_any_size_is_the_authors_test_procedure(net, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        torch.testing.assert_close(out, _authors_test(net, x), rtol=0, atol=1e-6)


def test_the_training_patch_size_is_restored_directly(ref, net):
    # img_size x img_size (the authors' training and validation patches) goes to the net itself, unpadded.
    with torch.no_grad():
        torch.testing.assert_close(net(ref['input']), _authors_forward(net, ref['input']), rtol=0, atol=0)


def test_square_multiple_is_the_authors_128_unless_the_windows_need_more(ref, net):
    assert net.square_multiple == 128
    wide = _build({**ref['kwargs'], 'img_size': 256, 'win_size': 16, 'num_heads': [1, 1, 1, 1, 1, 1, 1, 1, 1]})
    assert wide.square_multiple == 256  # 16-pixel windows at 1/16 scale
    with torch.no_grad():
        out = wide.eval()(torch.rand(1, 3, 40, 30))
    assert out.shape == (1, 3, 40, 30) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------------
# Training, sizes, options
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (40, 50)])
def test_a_training_step_reaches_every_parameter(ref, size):
    torch.manual_seed(0)
    net = _build(ref['kwargs']).train()
    x, gt = torch.rand(2, 3, *size), torch.rand(2, 3, *size)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss = F.l1_loss(net(x), gt)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        assert F.l1_loss(net(x), gt) < loss


def test_paper_parameter_counts_are_the_documented_ones():
    from s2former_plugin.archs import uformer_arch

    common = {'img_size': 128, 'win_size': 8, 'token_projection': 'linear', 'token_mlp': 'leff', 'modulator': True}
    variants = {
        'T': ({'embed_dim': 16}, 5_291_853, '5,291,853'),
        'S': ({'embed_dim': 32}, 20_751_197, '20,751,197'),
        'B': ({'embed_dim': 32, 'depths': [1, 2, 8, 8, 2, 8, 8, 2, 1]}, 50_880_946, '50,880,946'),
    }
    for kwargs, count, text in variants.values():
        assert sum(p.numel() for p in _build({**common, **kwargs}).parameters()) == count
        assert text in uformer_arch.Uformer.__doc__
    assert uformer_arch.PARAMS_DEFAULT == variants['B'][1]


def test_missing_extra_is_a_one_line_error(monkeypatch):
    from s2former_plugin.archs import spandrel_rival

    for mod in [m for m in sys.modules if m.split('.')[0] == 'spandrel']:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, 'spandrel', None)
    monkeypatch.setattr(spandrel_rival.SpandrelRival, '_concrete', {})
    with pytest.raises(spandrel_rival.MissingExtraError) as err:
        _build({})
    assert '\n' not in str(err.value) and str(err.value).startswith('Uformer needs the optional extra')


def test_training_options_parse_and_build_the_authors_net(tmp_path, monkeypatch):
    from basicsr.utils.registry import LOSS_REGISTRY

    from s2former_plugin.archs import uformer_arch

    opt = parse_training_options(REPO / 'options' / 'uformer_rain200h.yml', tmp_path, monkeypatch)
    assert opt['train']['pixel_opt']['type'] in LOSS_REGISTRY
    # The authors' recipe: AdamW 2e-4 (decay 0.02), 250 epochs (57 iterations each on Rain200H at 32 per step),
    # 3 of warm-up, cosine to 1e-6, Charbonnier (eps 1e-3, squared in basicsr's form), 128x128 patches.
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g'] == {'type': 'AdamW', 'lr': 2e-4, 'weight_decay': 0.02, 'betas': [0.9, 0.999], 'eps': 1e-8}
    assert train['total_iter'] == 250 * math.ceil(1800 / 32) == train['scheduler']['periods'][0]
    assert train['warmup_iter'] == 3 * math.ceil(1800 / 32) and train['scheduler']['eta_min'] == 1e-6
    assert train['pixel_opt'] == {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'reduction': 'mean', 'eps': 1e-6}
    assert data['gt_size'] == opt['network_g']['img_size'] == 128 and data['batch_size_per_gpu'] == 16
    assert opt['path']['param_key_g'] == 'state_dict'
    net = _build({k: v for k, v in opt['network_g'].items() if k != 'type'})
    assert type(net).__name__ == 'Uformer' and sum(p.numel() for p in net.parameters()) == uformer_arch.PARAMS_DEFAULT
