"""checkpoint: safetensors read on purpose (metadata, the same checks as .pth), the writers bit for bit, recorded
configurations compared with the options that build a network, and training's safetensors beside the .pth."""

import json

import pytest
import torch

from s2former_plugin import checkpoint
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.archs.s2former_keys import ours_state_dict_to_official
from s2former_plugin.official import config_from_weights, load_official_checkpoint


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(3)
    return S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_safetensors_round_trip_is_bit_exact_with_metadata(net, tmp_path):
    path = tmp_path / 'net.safetensors'
    meta = checkpoint.save_safetensors(net, path, {'source': 'net_g_5.pth'})
    assert meta['arch'] == 'S2Former' and meta['source'] == 'net_g_5.pth'
    assert json.loads(meta['config']) == json.loads(json.dumps(net.config))
    ckpt = checkpoint.read_checkpoint(path)
    assert ckpt.used == 'safetensors' and ckpt.metadata == meta
    assert _bitwise_equal(ckpt.state, net.state_dict())
    # read through the safetensors package, not torch.load
    from safetensors.torch import load_file

    assert _bitwise_equal(load_file(str(path)), net.state_dict())


def test_safetensors_read_through_safetensors_not_torch_load(net, tmp_path, monkeypatch):
    checkpoint.save_safetensors(net, tmp_path / 'n.safetensors')

    def refuse(*args, **kwargs):
        raise AssertionError('torch.load used for a safetensors file')

    monkeypatch.setattr(torch, 'load', refuse)
    state, used = checkpoint.load_state_dict_any(tmp_path / 'n.safetensors')
    assert used == 'safetensors' and _bitwise_equal(state, net.state_dict())


def test_half_and_int_tensors_keep_their_dtype(tmp_path):
    state = {'a': torch.randn(3, 4).half(), 'b': torch.arange(6).view(2, 3), 'c': torch.randn(5).bfloat16()}
    checkpoint.save_safetensors(state, tmp_path / 's.safetensors', {'arch': 'X'})
    ckpt = checkpoint.read_checkpoint(tmp_path / 's.safetensors')
    assert _bitwise_equal(ckpt.state, state) and ckpt.metadata['arch'] == 'X' and 'config' not in ckpt.metadata
    checkpoint.save_torch(state, tmp_path / 's.pth', {'arch': 'X'})
    back = checkpoint.read_checkpoint(tmp_path / 's.pth')
    assert back.used == 'params' and _bitwise_equal(back.state, state) and back.metadata == {'arch': 'X'}


def test_same_checks_as_pth(net, tmp_path):
    bad = dict(net.state_dict())
    bad['embed.weight'] = bad['embed.weight'].clone()
    bad['embed.weight'][0, 0, 0, 0] = float('nan')
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / 'nan.safetensors'))
    with pytest.raises(ValueError, match=r'nan\.safetensors \(safetensors\): non-finite .* embed\.weight'):
        checkpoint.read_checkpoint(tmp_path / 'nan.safetensors')
    with pytest.raises(ValueError, match='non-finite'):  # nor are such weights written
        checkpoint.save_safetensors(bad, tmp_path / 'w.safetensors')
    assert not (tmp_path / 'w.safetensors').exists()
    (tmp_path / 'junk.safetensors').write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    with pytest.raises(ValueError, match=r'^.*junk\.safetensors: not a readable safetensors file') as info:
        checkpoint.read_checkpoint(tmp_path / 'junk.safetensors')
    assert '\n' not in str(info.value)
    with pytest.raises(FileNotFoundError):
        checkpoint.read_checkpoint(tmp_path / 'none.safetensors')


def test_module_prefix_and_official_keys_in_safetensors(net, tmp_path):
    official = ours_state_dict_to_official(net.state_dict())
    checkpoint.save_safetensors({f'module.{k}': v for k, v in official.items()}, tmp_path / 'o.safetensors')
    ckpt = checkpoint.read_checkpoint(tmp_path / 'o.safetensors')
    assert ckpt.used == 'safetensors, official keys' and _bitwise_equal(ckpt.state, net.state_dict())
    assert _bitwise_equal(load_official_checkpoint(tmp_path / 'o.safetensors'), official)


def test_recorded_config_is_compared_with_the_building_options(net, tmp_path):
    checkpoint.save_safetensors(net, tmp_path / 'n.safetensors')
    state, _ = checkpoint.load_state_dict_any(tmp_path / 'n.safetensors', expect_config=net.config)
    assert _bitwise_equal(state, net.state_dict())
    default = S2Former(preset='small').config  # num_heads[4] 16: the weights fit, the configuration does not
    with pytest.raises(ValueError, match=r'records another network configuration .*num_heads: \[1, 2, 4, 8, 4\]'):
        checkpoint.load_state_dict_any(tmp_path / 'n.safetensors', expect_config=default)
    torch.save({'params': net.state_dict()}, tmp_path / 'plain.pth')  # nothing recorded: nothing to compare
    checkpoint.load_state_dict_any(tmp_path / 'plain.pth', expect_config=default)


def test_config_from_weights_says_what_is_assumed(net):
    cfg, assumed = config_from_weights(net.state_dict())
    assert assumed == ['num_heads[4]'] and cfg['num_heads'] == [1, 2, 4, 8, 16]
    cfg, assumed = config_from_weights(net.state_dict(), json.loads(json.dumps(net.config)))
    assert assumed == [] and cfg == net.config
    lying = dict(net.config, dims=[16, 16, 32, 32, 32])
    with pytest.raises(ValueError, match='recorded configuration contradicts the weights.*dims'):
        config_from_weights(net.state_dict(), lying)
    with pytest.raises(ValueError, match='^cannot infer the S2Former configuration from w.pth'):
        config_from_weights({'conv.weight': torch.zeros(1)}, None, 'w.pth')


def test_bad_metadata_config_is_one_line(net, tmp_path):
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / 'b.safetensors'), {'config': '{'}
    )
    ckpt = checkpoint.read_checkpoint(tmp_path / 'b.safetensors')
    with pytest.raises(ValueError, match='metadata config is not JSON'):
        checkpoint.recorded_config(ckpt.metadata, 'b.safetensors')


def test_given_config_must_match_the_networks(net, tmp_path):
    with pytest.raises(ValueError, match='metadata config differs'):
        checkpoint.save_safetensors(net, tmp_path / 'x.safetensors', {'config': {'preset': 'paper'}})


def test_training_saves_safetensors_beside_the_pth(net, tmp_path):
    ema = S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()
    pth = tmp_path / 'models' / 'net_g_10.pth'
    pth.parent.mkdir()
    path = checkpoint.save_safetensors_beside(pth, {'params': net, 'params_ema': ema})
    assert path == str(tmp_path / 'models' / 'net_g_10.safetensors')
    ckpt = checkpoint.read_checkpoint(path)
    assert ckpt.metadata['param_key'] == 'params_ema' and ckpt.metadata['source'] == 'net_g_10.pth'
    assert _bitwise_equal(ckpt.state, ema.state_dict())
    assert checkpoint.save_safetensors_beside(pth, {'params': net}).endswith('net_g_10.safetensors')
    assert _bitwise_equal(checkpoint.read_checkpoint(path).state, net.state_dict())
