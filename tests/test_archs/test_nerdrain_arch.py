"""NeRD-Rain against the authors' class, at any size through their test procedure, in training and from its options.

The reference (``tests/data/rivals/nerdrain_small_seed7.pt``) holds the outputs of the authors' own
``MultiscaleNet`` (cschenxiang/NeRD-Rain ``model.py`` + ``mlp.py``, ``.cuda()`` calls removed; see
``../shared/README.md``): the seven outputs in their order, in float32 and float64.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, parse_training_options

from s2former_plugin.archs import nerdrain_arch
from s2former_plugin.archs.nerdrain_arch import NeRDRain
from s2former_plugin.losses.nerdrain_loss import NeRDRainLoss

FIXTURE = Path(__file__).resolve().parents[1] / 'data' / 'rivals' / 'nerdrain_small_seed7.pt'
#: The seven outputs' shapes for the fixture's 2x3x64x96 input, in the authors' order.
SHAPES = [(64, 96), (32, 48), (16, 24), (32, 48), (32, 48), (16, 24), (16, 24)]


@pytest.fixture(scope='module')
def ref() -> dict:
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def net(ref) -> NeRDRain:
    net = NeRDRain(**ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()


def _tiny(win_size: int = 256, seed: int = 0) -> NeRDRain:
    torch.manual_seed(seed)
    return NeRDRain(dim=4, num_blocks=[1, 1, 1], heads=[1, 2, 4], win_size=win_size).eval()


def test_fixture_names_the_authors_class(ref):
    assert ref['source'] == 'cschenxiang/NeRD-Rain model.py (+ mlp.py)' and ref['class'] == 'MultiscaleNet'
    assert ref['kwargs'] == {'dim': 8, 'num_blocks': [1, 1, 1], 'heads': [1, 2, 4]}
    assert [tuple(o.shape[-2:]) for o in ref['outputs']] == SHAPES


def test_the_authors_keys_in_their_order(ref):
    mine = NeRDRain(**ref['kwargs']).state_dict()
    assert list(mine) == list(ref['state_dict'])
    assert all(mine[k].shape == v.shape for k, v in ref['state_dict'].items())


def test_equals_the_authors_seven_outputs_float32(ref, net):
    with torch.no_grad():
        outs = net(ref['input'], return_all=True)
        final = net(ref['input'])  # default: one image, the authors' test procedure (one window here)
    assert len(outs) == nerdrain_arch.NUM_OUTPUTS == len(ref['outputs'])
    for i, (o, r) in enumerate(zip(outs, ref['outputs'])):
        assert o.shape == r.shape, i
        torch.testing.assert_close(o, r, rtol=0, atol=1e-5, msg=f'output {i}')
    assert isinstance(final, torch.Tensor) and final.shape == ref['input'].shape
    torch.testing.assert_close(final, ref['outputs'][0], rtol=0, atol=1e-5)


def test_equals_the_authors_seven_outputs_float64(ref):
    net = NeRDRain(**ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    net = net.eval().double()
    with torch.no_grad():
        outs = net(ref['input'].double(), return_all=True)
    for i, (o, r) in enumerate(zip(outs, ref['outputs_float64'])):
        assert o.dtype == r.dtype == torch.float64, i
        torch.testing.assert_close(o, r, rtol=0, atol=1e-10, msg=f'output {i}')


def test_strict_loading_refuses_renamed_keys(ref):
    state = dict(ref['state_dict'])
    state['INR.mlp.layers.0.weight'] = state.pop('INR.imnet.layers.0.weight')
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*INR\.imnet\.layers\.0\.weight'):
        NeRDRain(**ref['kwargs']).load_state_dict(state, strict=True)


# ---- any size: the authors' test.py ----


def _authors_test_script(net: NeRDRain, x: torch.Tensor, win: int) -> torch.Tensor:
    """What the authors' test.py computes, written out from their window_partitionx / window_reversex (layers.py).

    Windows: the ``win`` grid over the largest multiple of ``win``, the column of windows on the last ``win``
    columns (rows of the grid), the row of windows on the last ``win`` rows (columns of the grid), the bottom-right
    ``win x win`` corner; one batch through the network; each kept where the grid does not reach.
    """
    b, c, hx, wx = x.shape
    h, w = win * (hx // win), win * (wx // win)

    def grid(t: torch.Tensor) -> list[torch.Tensor]:  # batch-major (B, rows, cols), as their view/permute
        return [t[i : i + 1, :, r : r + win, q : q + win] for i in range(b) for r in range(0, t.shape[2], win)
                for q in range(0, t.shape[3], win)]  # fmt: skip

    parts = [grid(x[:, :, :h, :w])]
    if w != wx:
        parts.append(grid(x[:, :, :h, -win:]))
    if h != hx:
        parts.append(grid(x[:, :, -win:, :w]))
    if h != hx and w != wx:
        parts.append([x[:, :, -win:, -win:]])
    counts = [sum(t.shape[0] for t in p) for p in parts]
    with torch.no_grad():
        restored = net.multiscale_forward(torch.cat([t for p in parts for t in p]))[0]
    chunks = restored.split(counts)

    def ungrid(t: torch.Tensor, hh: int, ww: int) -> torch.Tensor:
        t = t.reshape(b, hh // win, ww // win, c, win, win).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(b, c, hh, ww)

    res = torch.zeros(b, c, hx, wx)
    res[:, :, :h, :w] = ungrid(chunks[0], h, w)
    k = 1
    if w != wx:
        res[:, :, :h, w:] = ungrid(chunks[k], h, win)[:, :, :, w - wx :]
        k += 1
    if h != hx:
        res[:, :, h:, :w] = ungrid(chunks[k], win, w)[:, :, h - hx :, :]
        k += 1
    if h != hx and w != wx:
        res[:, :, h:, w:] = chunks[k][:, :, h - hx :, w - wx :]
    return res


@pytest.mark.parametrize('size', [(37, 53), (64, 40), (45, 32), (32, 71)])
def test_any_size_equals_the_authors_test_script(size):
    # Windows of 32 keep the images small; the authors' default 256 divides into the same procedure.
    net = _tiny(win_size=32)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, _authors_test_script(net, x, 32), rtol=0, atol=1e-5)


@pytest.mark.parametrize('size', [(21, 30), (16, 48), (1, 1), (3, 20)])
def test_sides_shorter_than_the_window_are_padded_and_cropped(size):
    # The authors' script fails here; one window of the image, padded bottom/right to a multiple of 16.
    net = _tiny()
    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    mode = 'reflect' if (-h % 16) < h and (-w % 16) < w else 'replicate'
    padded = F.pad(x, (0, -w % 16, 0, -h % 16), mode=mode)
    with torch.no_grad():
        out = net(x)
        full = net.multiscale_forward(padded)[0]
    assert out.shape == x.shape
    torch.testing.assert_close(out, full[..., :h, :w], rtol=0, atol=0)


def test_one_side_shorter_than_the_window_windows_the_other():
    net = _tiny(win_size=32)
    x = torch.rand(1, 3, 20, 45, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = net(x)
        left = net.multiscale_forward(F.pad(x[..., :32], (0, 0, 0, 12), mode='reflect'))[0][..., :20, :]
        right = net.multiscale_forward(F.pad(x[..., -32:], (0, 0, 0, 12), mode='reflect'))[0][..., :20, :]
    torch.testing.assert_close(out[..., :32], left, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[..., 32:], right[..., -13:], rtol=0, atol=1e-5)


def test_return_all_needs_multiples_of_16():
    with pytest.raises(ValueError, match='multiples of 16, got 20x32') as err:
        _tiny()(torch.rand(1, 3, 20, 32), return_all=True)
    assert '\n' not in str(err.value)


def test_follows_the_input_dtype_and_device():
    net = _tiny().double()
    x = torch.rand(1, 3, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        outs = net(x, return_all=True)
        final = net(torch.rand(1, 3, 17, 21, dtype=torch.float64))
    assert all(o.dtype == torch.float64 and o.device == x.device for o in outs) and final.dtype == torch.float64


def test_batch_items_are_independent():
    net = _tiny(win_size=32)
    x = torch.rand(2, 3, 40, 37, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1:], net(x[1:]), rtol=0, atol=1e-5)


# ---- building, training, options ----


def test_build_network_through_basicsr(ref, net):
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.archs import build_network

    built = build_network({'type': 'NeRDRain', **ref['kwargs']})
    assert type(built) is NeRDRain and built.win_size == 256
    built.load_state_dict(ref['state_dict'], strict=True)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), net(x), rtol=0, atol=0)


def test_a_training_step_reaches_every_used_parameter():
    torch.manual_seed(0)
    net = _tiny().train()
    x, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss_fn = NeRDRainLoss()
    loss = loss_fn(net(x, return_all=True), gt)
    loss.backward()
    for name, p in net.named_parameters():
        if name.startswith('reduce_chan_level1_max3.'):  # the authors' forward never uses it
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt.step()
    with torch.no_grad():
        assert loss_fn(net(x, return_all=True), gt) < loss  # one step downhill on the batch it saw


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'LayerNorm_type': 'withbias'}, 'LayerNorm_type'),
        ({'heads': [1, 2, 4, 8]}, 'num_blocks and heads need 3 values'),
        ({'dim': 6, 'heads': [4, 2, 4]}, 'heads'),
        ({'dim': 7}, 'dim must be even'),
        ({'out_channels': 1}, 'out_channels'),
        ({'win_size': 100}, 'win_size'),
    ],
)
def test_bad_configurations_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        NeRDRain(**kwargs)
    assert '\n' not in str(err.value) and str(err.value).startswith('NeRDRain: ')


def test_paper_default_parameter_count_and_options_file(tmp_path, monkeypatch):
    from basicsr.archs import build_network
    from basicsr.utils.registry import LOSS_REGISTRY

    opt = parse_training_options(REPO / 'options' / 'nerdrain_rain200h.yml', tmp_path, monkeypatch)
    assert opt['model_type'] == 'NeRDRainModel'
    assert opt['find_unused_parameters'] is True
    # The authors' recipe: Adam 1e-4, 3 warm-up epochs then cosine to 1e-6 over 3000 epochs of 1,800 pairs, batch
    # 1, 256x256 patches, their loss weights.
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.999], 'eps': 1e-8}
    assert train['total_iter'] == 3000 * 1800 and train['warmup_iter'] == 3 * 1800
    assert (
        train['scheduler']['periods'] == [3 * 1800, 2997 * 1800]
        and sum(train['scheduler']['periods']) == (train['total_iter'])
    )
    assert train['scheduler']['eta_min'] == 1e-6
    pixel = train['pixel_opt']
    assert pixel['type'] in LOSS_REGISTRY and pixel['type'] == 'NeRDRainLoss'
    assert (pixel['fft_weight'], pixel['edge_weight'], pixel['inr_weight'], pixel['eps']) == (0.01, 0.05, 0.1, 1e-3)
    assert (data['gt_size'], data['batch_size_per_gpu'], data['use_hflip'], data['use_rot']) == (256, 1, True, True)
    net = build_network(opt['network_g'])
    assert type(net) is NeRDRain and net.win_size == 256
    count = sum(p.numel() for p in net.parameters())
    assert count == nerdrain_arch.PARAMS_DEFAULT == 22_893_146 and '22,893,146' in NeRDRain.__doc__
    assert count == sum(p.numel() for p in NeRDRain().parameters())
