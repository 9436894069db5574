"""Training's ``path: save_safetensors`` option: every saved network also as ``.safetensors``, equal to the ``.pth``."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_BASICSR_ARCH, build_seeded_model, parsed_options, tiny_s2former_options, write_paired_folder

from s2former_plugin.checkpoint import read_checkpoint
from s2former_plugin.compat.entry import check_path_options
from s2former_plugin.errors import OptionError


def _model(tmp_path, save: bool | None, rival: bool = False):
    write_paired_folder(tmp_path / 'data')
    opt = tiny_s2former_options(tmp_path / 'data', None)
    if rival:  # basicsr's own model class: the option is the plugin's, at BaseModel.save_network
        opt['model_type'] = 'SRModel'
        opt['network_g'] = dict(TINY_BASICSR_ARCH)
        opt['train'] = {k: v for k, v in opt['train'].items() if k not in ('psnr_opt', 'udl_opt')}
        opt['train']['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0}
    if save is not None:
        opt['path']['save_safetensors'] = save
    return build_seeded_model(parsed_options(opt, tmp_path)), tmp_path / 'experiments' / opt['name'] / 'models'


@pytest.mark.parametrize('rival', [False, True], ids=['S2FormerModel', 'SRModel'])
def test_the_option_saves_safetensors_beside_each_pth_with_equal_weights(tmp_path, rival):
    model, models = _model(tmp_path, True, rival)
    model.save(0, 2)
    pth, st = models / 'net_g_2.pth', models / 'net_g_2.safetensors'
    assert pth.is_file() and st.is_file()
    a, b = read_checkpoint(pth), read_checkpoint(st)
    assert a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    if not rival:
        assert b.metadata['arch'] == 'S2Former' and b.metadata['source'] == 'net_g_2.pth'


@pytest.mark.parametrize('save', [None, False])
def test_without_the_option_only_the_pth_is_written(tmp_path, save):
    model, models = _model(tmp_path, save)
    model.save(0, 2)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth']


@pytest.mark.parametrize(
    ('path', 'message'),
    [
        ({'save_safetensors': 'yes'}, 'path:save_safetensors'),
        ({'save_safetensor': True}, "path:save_safetensor: unknown key; did you mean 'save_safetensors'?"),
        ({'save_safetensors_': True}, "did you mean 'save_safetensors'"),
    ],
)
def test_a_wrong_value_or_a_near_miss_of_the_option_is_refused(path, message):
    with pytest.raises(OptionError, match=message.replace('?', r'\?')):
        check_path_options({'path': path})


def test_basicsr_path_keys_are_not_taken_for_the_option():
    check_path_options({'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}})
    check_path_options({'path': {'save_safetensors': True}})
    check_path_options({})
