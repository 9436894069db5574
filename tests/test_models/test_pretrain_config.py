"""``path: pretrain_network_g`` of a ``.safetensors`` that records its configuration: loaded when it is
``network_g``'s, refused in one line when it is not (the bottleneck head count leaves no trace in the shapes)."""

from __future__ import annotations

import pytest
import torch
from basicsr.models import build_model
from helpers import parsed_options, tiny_s2former_options, write_paired_folder

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.checkpoint import save_safetensors
from s2former_plugin.errors import OptionError


def _options(tmp_path, weights):
    write_paired_folder(tmp_path / 'data')
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    opt['path']['pretrain_network_g'] = str(weights)
    return opt


def test_weights_recording_the_same_configuration_are_loaded(tmp_path):
    torch.manual_seed(1)
    net = S2Former(preset='small')
    save_safetensors(net, tmp_path / 'w.safetensors')
    model = build_model(_options(tmp_path, tmp_path / 'w.safetensors'))
    loaded = model.get_bare_model(model.net_g).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in net.state_dict().items())


def test_weights_recording_another_head_count_are_refused_in_one_line(tmp_path):
    net = S2Former(preset='small')
    config = dict(net.config, num_heads=[1, 2, 4, 8, 8])  # same shapes, another bottleneck head count
    save_safetensors(net.state_dict(), tmp_path / 'w.safetensors', {'arch': 'S2Former', 'config': config})
    with pytest.raises(OptionError, match=r'w\.safetensors: the checkpoint records another network configuration') as e:
        build_model(_options(tmp_path, tmp_path / 'w.safetensors'))
    assert '\n' not in str(e.value) and 'num_heads' in str(e.value)
