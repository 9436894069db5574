"""IDT against the authors' class, at any size through their full-size procedure, in training and from its options.

The reference (``tests/data/rivals/idt_small_seed7.pt``) holds outputs of the authors' own class (jiexiaou/IDT
``model.py``, ``IDT`` built for 64x64 inputs, see ``../shared/README.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, parse_training_options

from s2former_plugin.archs import fixed_size_crops, idt_arch
from s2former_plugin.archs.idt_arch import IDT
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
    return torch.load(DATA / 'idt_small_seed7.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def net(ref) -> IDT:
    net = IDT(**ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()


def test_fixture_names_the_authors_class(ref):
    assert ref['source'] == 'jiexiaou/IDT model.py' and ref['class'] == 'IDT'
    assert ref['kwargs']['img_size'] == 64 and ref['input'].shape == (2, 3, 64, 64)


def test_equals_the_authors_outputs_float32(ref):
    net = IDT(**ref['kwargs'])
    assert list(net.state_dict()) == list(ref['state_dict'])  # the authors' keys, in their order
    assert all(net.state_dict()[k].shape == v.shape for k, v in ref['state_dict'].items())
    net.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        out = net.eval()(ref['input'])
    assert len(ref['outputs']) == 1 and out.shape == ref['input'].shape
    torch.testing.assert_close(out, ref['outputs'][0], rtol=0, atol=1e-5)


def test_equals_the_authors_outputs_float64(ref):
    net = IDT(**ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    net = net.eval().double()
    with torch.no_grad():
        out = net(ref['input'].double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref['outputs_float64'][0], rtol=0, atol=1e-10)


def test_strict_loading_refuses_renamed_keys(ref):
    state = dict(ref['state_dict'])
    key = 'encoderlayer_3.blocks.2.attn.Position_Extract.0.weight'  # a spatial-based Transformer's
    state[f'body.{key}'] = state.pop(key)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*encoderlayer_3\.blocks\.2\.attn\.Position_Extract'):
        IDT(**ref['kwargs']).load_state_dict(state, strict=True)
    # A net built for another input size has other position tables: its weights do not fit.
    with pytest.raises(RuntimeError, match='size mismatch'):
        IDT(**{**ref['kwargs'], 'img_size': 128}).load_state_dict(ref['state_dict'], strict=True)


def test_build_network_through_basicsr(ref, net):
    import basicsr  # noqa: F401 - registers the plugin
    from basicsr.archs import build_network

    built = build_network({'type': 'IDT', **ref['kwargs']})
    assert type(built) is IDT
    built.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(ref['input']), net(ref['input']), rtol=0, atol=0)


def test_released_checkpoint_loads_strictly(ref, tmp_path):
    # The authors' train_derain.py saves the DataParallel module's state dict (``module.`` prefixes).
    torch.save({f'module.{k}': v for k, v in ref['state_dict'].items()}, tmp_path / 'net_latest.pth')
    state, _ = load_state_dict_any(str(tmp_path / 'net_latest.pth'), None)
    net = IDT(**ref['kwargs'])
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(ref['input']), ref['outputs'][0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Any size: the authors' test_full_size.py, restated here in its own terms (loops, pops) as the reference
# ---------------------------------------------------------------------------------------------------------------
def _authors_split(img: torch.Tensor, crop: int, overlap: int) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    _, _, h, w = img.shape
    # The authors' loops, with one guard (``hstarts and``): their script fails on a side of exactly one crop,
    # which a side padded up to the crop size is.
    hstarts = list(range(0, h, crop - overlap))
    while hstarts and hstarts[-1] + crop >= h:
        hstarts.pop()
    hstarts.append(h - crop)
    wstarts = list(range(0, w, crop - overlap))
    while wstarts and wstarts[-1] + crop >= w:
        wstarts.pop()
    wstarts.append(w - crop)
    starts = [(hs, ws) for hs in hstarts for ws in wstarts]
    return [img[:, :, hs : hs + crop, ws : ws + crop] for hs, ws in starts], starts


def _authors_merge(outs, starts, crop: int, shape) -> torch.Tensor:
    score = torch.ones((shape[0], shape[1], crop, crop))
    for h in range(crop):
        for w in range(crop):
            score[:, :, h, w] = 1.0 / math.sqrt((h - crop / 2) ** 2 + (w - crop / 2) ** 2 + 1e-3)
    merged, total = torch.zeros(shape), torch.zeros(shape)
    for out, (hs, ws) in zip(outs, starts):
        merged[:, :, hs : hs + crop, ws : ws + crop] += score * out
        total[:, :, hs : hs + crop, ws : ws + crop] += score
    return merged / total


def test_crop_starts_are_the_authors():
    assert fixed_size_crops.crop_starts(480, 128, 20) == [0, 108, 216, 324, 352]
    assert fixed_size_crops.crop_starts(320, 128, 20) == [0, 108, 192]
    assert fixed_size_crops.crop_starts(129, 128, 20) == [0, 1]
    assert fixed_size_crops.crop_starts(236, 128, 20) == [0, 108]  # 108 + 128 == 236: the last crop is the end
    assert fixed_size_crops.crop_starts(64, 64, 20) == [0]
    for size in range(129, 700, 7):
        fake = torch.zeros(1, 1, size, 129)
        assert sorted({s for s, _ in _authors_split(fake, 128, 20)[1]}) == fixed_size_crops.crop_starts(size, 128, 20)
    with pytest.raises(ValueError, match='shorter than one crop'):
        fixed_size_crops.crop_starts(100, 128, 20)


@pytest.mark.parametrize('size', [(64, 64), (100, 150), (150, 65), (37, 53), (40, 130)])
def test_any_size_is_the_authors_full_size_procedure(net, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        h, w = size
        if size == (64, 64):  # one crop: the net itself (the authors' test.py on patches)
            torch.testing.assert_close(out, net.restore(x), rtol=0, atol=0)
            return
        # Sides shorter than a crop (which the authors' script cannot take): padded by reflection first.
        padded = F.pad(x, (0, max(0, 64 - w), 0, max(0, 64 - h)), mode='reflect')
        crops, starts = _authors_split(padded, 64, idt_arch.CROP_OVERLAP)
        assert len(crops) > 1 or min(size) < 64
        ref = _authors_merge([net.restore(c) for c in crops], starts, 64, padded.shape)[..., :h, :w]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_the_crops_are_blended_not_stitched(net):
    # In an overlap both crops count: the merged value lies strictly between the two crop outputs somewhere.
    x = torch.rand(1, 3, 64, 100, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out, left, right = net(x), net.restore(x[..., :64]), net.restore(x[..., 36:])
    lo, hi = torch.minimum(left[..., 36:64], right[..., :28]), torch.maximum(left[..., 36:64], right[..., :28])
    inside = (out[..., 36:64] > lo + 1e-6) & (out[..., 36:64] < hi - 1e-6)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[..., :36], left[..., :36], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., 64:], right[..., 28:], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Training, sizes, options
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (70, 64)])
def test_a_training_step_reaches_the_parameters(size):
    torch.manual_seed(0)
    net = IDT(img_size=64, embed_dim=4, depths=[1] * 9).train()
    x, gt = torch.rand(2, 3, *size), torch.rand(2, 3, *size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = F.l1_loss(net(x), gt)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # The spatial-based Transformers at 1/8 scale of a 64x64 net see one window token: their queries and
        # position table only shape a softmax over one key, so their gradients are exactly zero.
        single = name.startswith(('encoderlayer_3.blocks.2.', 'decoderlayer_0.blocks.1.'))
        dead = single and ('relative_position_bias_table' in name or '.qkv.to_q.' in name)
        assert (p.grad.abs().sum() > 0) != dead, name
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        assert F.l1_loss(net(x), gt) < loss


def test_paper_default_parameter_count_is_the_documented_one():
    with torch.device('meta'):
        net = IDT(img_size=128, embed_dim=32, depths=[3, 3, 2, 2, 1, 1, 2, 2, 3])
    assert sum(p.numel() for p in net.parameters()) == idt_arch.PARAMS_DEFAULT == 16_416_463
    assert '16,416,463' in IDT.__doc__


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'img_size': 96}, 'multiple of 64'),
        ({'img_size': 192}, 'win_size 8 does not tile the 12x12'),
        ({'num_heads': [1, 2, 4]}, 'need 9 values'),
        ({'embed_dim': 6, 'num_heads': [4, 2, 4, 8, 16, 16, 8, 4, 2]}, r'num_heads\[0\] = 4'),
        ({'depths': [1, 1, 1, 1, 0, 1, 1, 1, 1]}, 'level 4 no drop-path rate'),
    ],
)
def test_bad_configurations_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        IDT(**kwargs)
    assert '\n' not in str(err.value) and str(err.value).startswith('IDT: ')


def test_restore_refuses_other_sizes(net):
    with pytest.raises(ValueError, match='takes 64x64 inputs'):
        net.restore(torch.zeros(1, 3, 64, 72))


def test_training_options_parse_and_build_the_authors_net(tmp_path, monkeypatch):
    from basicsr.archs import build_network
    from basicsr.utils.registry import LOSS_REGISTRY

    opt = parse_training_options(REPO / 'options' / 'idt_rain200h.yml', tmp_path, monkeypatch)
    assert opt['train']['pixel_opt']['type'] in LOSS_REGISTRY
    # The authors' recipe: Adam 1e-4, x0.1 at epochs 100/250/350 of 400 (450 iterations each), 128 patches, 4 each.
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.999]}
    assert train['scheduler'] == {'type': 'MultiStepLR', 'milestones': [45000, 112500, 157500], 'gamma': 0.1}
    assert train['total_iter'] == 180000 and data['gt_size'] == opt['network_g']['img_size'] == 128
    assert (data['batch_size_per_gpu'], data['use_hflip'], data['use_rot']) == (4, True, False)
    with torch.device('meta'):
        net = build_network(opt['network_g'])
    assert type(net) is IDT and sum(p.numel() for p in net.parameters()) == idt_arch.PARAMS_DEFAULT
