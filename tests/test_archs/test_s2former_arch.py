"""Tests of the S2Former network: official parity, checkpoint compatibility, any-size inputs, registries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.archs.s2former_ranking import topk_mask
from s2former_plugin.official import (
    build_from_official,
    infer_config,
    is_official_state_dict,
    load_official_checkpoint,
    official_config_to_ours,
    official_key_to_ours,
    our_key_to_official,
    ours_state_dict_to_official,
)

DATA = Path(__file__).resolve().parents[1] / 'data'
FIXTURE = DATA / 'official_small_seed1.pt'
MANIFEST = DATA / 'official_default_manifest.json'


@pytest.fixture(scope='module')
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope='module')
def small_net(fixture) -> S2Former:
    return build_from_official(fixture['config'], fixture['state_dict']).eval()


# ---------------------------------------------------------------------------------------------- official parity
def test_parity_with_official(fixture, small_net):
    for case in fixture['cases']:
        with torch.no_grad():
            outputs, uncertainties = small_net(case['input'], return_all=True)
        for ours, ref in zip(outputs + uncertainties, case['outputs'] + case['uncertainties'], strict=True):
            assert ours.shape == ref.shape
            assert (ours - ref).abs().max().item() <= 1e-4
        with torch.no_grad():
            assert torch.equal(small_net(case['input']), outputs[0])


def test_small_preset_is_fixture_config(fixture):
    assert S2Former(preset='small').config == S2Former(**official_config_to_ours(fixture['config'])).config


def test_paper_net_matches_official_manifest():
    manifest = json.loads(MANIFEST.read_text())
    net = S2Former()
    assert sum(p.numel() for p in net.parameters()) == manifest['num_parameters'] == 8_525_361
    official = {k: tuple(v.shape) for k, v in ours_state_dict_to_official(net.state_dict()).items()}
    expected = {k: tuple(shape) for k, shape, _ in manifest['state_dict']}
    assert official == expected
    assert all(official_key_to_ours(our_key_to_official(k)) == k for k in net.state_dict())


def test_official_and_own_state_dicts_load_strictly(fixture, small_net):
    net = S2Former(preset='small')
    net.load_state_dict(fixture['state_dict'], strict=True)  # official keys, renamed by the pre-hook
    own = small_net.state_dict()
    assert not is_official_state_dict(own) and is_official_state_dict(fixture['state_dict'])
    net.load_state_dict(own, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), own.values()))


def test_infer_config_round_trip(fixture, small_net):
    expected = S2Former(preset='small').config
    for sd in (fixture['state_dict'], small_net.state_dict()):
        cfg = infer_config(sd)
        net = S2Former(**cfg)
        assert net.config == expected
        net.load_state_dict(sd, strict=True)


def test_official_config_errors(tmp_path):
    with pytest.raises(ValueError, match='bogus'):
        official_config_to_ours({'bogus': 1})
    with pytest.raises(ValueError, match='VAN'):
        build_from_official({'VAN': True})
    with pytest.raises(ValueError, match='preset'):
        S2Former(preset='huge')
    with pytest.raises(FileNotFoundError, match='not found'):
        load_official_checkpoint(tmp_path / 'missing.pth')


def test_load_official_checkpoint(tmp_path, fixture):
    path = tmp_path / 'udrs2former_small.pth'
    torch.save({'module.' + k: v for k, v in fixture['state_dict'].items()}, path)
    sd = load_official_checkpoint(path)
    assert sd.keys() == fixture['state_dict'].keys()


# ---------------------------------------------------------------------------------------------- any size
@pytest.mark.parametrize('shape', [(1, 3, 123, 217), (3, 3, 37, 300), (1, 3, 1, 1), (2, 3, 5, 7)])
def test_any_size(small_net, shape):
    x = torch.rand(shape)
    with torch.no_grad():
        outputs, uncertainties = small_net(x, return_all=True)
        assert torch.equal(small_net(x), outputs[0])
    h, w = shape[-2:]
    sizes = [(h, w)] + [(math.ceil(h / 2**i), math.ceil(w / 2**i)) for i in range(4)]
    for o, u, (sh, sw) in zip(outputs, uncertainties, sizes, strict=True):
        assert o.shape == u.shape == (shape[0], 3, sh, sw)
        assert torch.isfinite(o).all() and torch.isfinite(u).all()


def test_topk_mask_matches_topk():
    scores = torch.randn(3, 5, 1000)
    k = int(0.8 * 1000)
    ref = torch.zeros_like(scores).scatter_(-1, scores.topk(k, dim=-1).indices, 1.0).bool()
    assert torch.equal(topk_mask(scores), ref)


# ---------------------------------------------------------------------------------------------- training
def test_backward_after_inference_mode():
    """Gradients reach every parameter, also when the grid cache was filled under inference_mode."""
    torch.manual_seed(0)
    net = S2Former(preset='small')
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        net(x)
    outputs, uncertainties = net(x, return_all=True)
    sum(t.mean() for t in outputs + uncertainties).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------------------------------------- registries
def test_basicsr_registry():
    from basicsr.archs import build_network

    net = build_network({'type': 'S2Former', 'preset': 'small'})
    assert isinstance(net, S2Former) and net.config == S2Former(preset='small').config


def test_mmengine_registry():
    from mmengine.registry import MODELS

    net = MODELS.build(dict(type='S2Former', preset='small', num_bottleneck_blocks=1))
    assert isinstance(net, S2Former) and net.config['num_bottleneck_blocks'] == 1


@pytest.mark.parametrize(
    'key', ['encoder_level1.0.model.0.conv.9.weight', 'head.weight', 'ENCODER_LEVEL1.0.model.0.conv.0.weight']
)
def test_a_key_outside_the_table_is_named(key):
    with pytest.raises(KeyError) as info:
        official_key_to_ours(key)
    assert info.value.args == (f'no UDR-S2Former key mapping for {key!r}',)
    with pytest.raises(KeyError, match='no UDR-S2Former key mapping'):
        our_key_to_official('encoders.0.0.unknown.weight')
