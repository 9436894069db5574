"""S2FormerModel's set-up from its options: the checks run first, the EMA net, the optimizer over the trainable
parameters only, the training settings read from ``train:``, and what is frozen and logged."""

from __future__ import annotations

import random

import pytest
import torch
from basicsr.models import build_model
from helpers import basicsr_log, build_seeded_model, parsed_options, tiny_s2former_options, write_paired_folder

from s2former_plugin.models.s2former_options import OptionError


@pytest.fixture()
def opt(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    write_paired_folder(tmp_path / 'data', n=2, size=(16, 16))
    return parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)  # psnr + udl losses


@pytest.fixture()
def log_lines():
    with basicsr_log() as records:
        yield lambda: [r.getMessage() for r in records]


@pytest.mark.parametrize(
    ('where', 'value', 'error'),
    [
        ('train', {'ema_decy': 0.9}, OptionError),
        ('val', {'tile': -1}, ValueError),
        ('val', {'metrics': {'psnr': {'type': 'calculate_psnr', 'better': 'sideways'}}}, ValueError),
    ],
)
def test_options_are_checked_before_any_network_is_built(opt, monkeypatch, where, value, error):
    import s2former_plugin.archs.s2former_arch as arch

    built = []
    monkeypatch.setattr(arch.S2Former, '__init__', lambda *a, **k: built.append(1) or pytest.fail('net built'))
    opt[where].update(value)
    with pytest.raises(error):
        build_model(opt)
    assert not built


def test_at_least_one_loss_is_needed(opt):
    with pytest.raises(ValueError) as info:
        build_seeded_model(opt, psnr_opt=None, udl_opt=None)
    assert str(info.value) == 'S2FormerModel: set at least one of train:psnr_opt, train:perceptual_opt, train:udl_opt'
    model = build_seeded_model(opt, psnr_opt=None)  # one is enough
    assert model.cri_psnr is None and model.cri_perceptual is None and model.cri_udl is not None
    model = build_seeded_model(opt, udl_opt=None)
    assert model.cri_psnr is not None and model.cri_udl is None


@pytest.mark.parametrize('ema_decay', [None, 0, 0.5])
def test_ema_network_only_with_a_positive_decay(opt, log_lines, ema_decay):
    if ema_decay is None:
        del opt['train']['ema_decay']
    model = build_seeded_model(opt, **({} if ema_decay is None else {'ema_decay': ema_decay}))
    assert model.ema_decay == (ema_decay or 0)
    uses_ema = [line for line in log_lines() if 'Exponential Moving Average' in line]
    if not ema_decay:
        assert not hasattr(model, 'net_g_ema') and not uses_ema
        return
    assert uses_ema == [f'Use Exponential Moving Average with decay: {ema_decay}']
    ema = model.net_g_ema
    assert ema is not model.net_g and not ema.training and model.net_g.training
    trained = model.net_g.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in ema.state_dict().items())


def test_ema_network_loads_params_ema_of_the_pretrained_checkpoint(opt, tmp_path):
    state = build_seeded_model(opt).net_g.state_dict()
    ema_state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / 'pretrained.pth'
    torch.save({'params': state, 'params_ema': ema_state}, path)
    opt['path']['pretrain_network_g'] = str(path)
    model = build_seeded_model(opt, ema_decay=0.9)
    for net, expected in ((model.net_g, state), (model.net_g_ema, ema_state)):
        loaded = net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    # strict_load_g reaches the EMA net too: a checkpoint without some EMA key is refused unless it is false.
    dropped = next(iter(ema_state))
    torch.save({'params': state, 'params_ema': {k: v for k, v in ema_state.items() if k != dropped}}, path)
    for strict in (True, None):  # strict unless the options say otherwise, as for net_g
        if strict is None:
            del opt['path']['strict_load_g']
        else:
            opt['path']['strict_load_g'] = strict
        with pytest.raises(RuntimeError, match=dropped):
            build_seeded_model(opt, ema_decay=0.9)
    opt['path']['strict_load_g'] = False
    assert build_seeded_model(opt, ema_decay=0.9).net_g_ema.training is False


def test_training_settings_read_from_the_options(opt):
    model = build_seeded_model(opt)
    assert (model.max_grad_norm, model.amp_dtype, model.accumulate) == (None, None, 1)
    assert not model.grad_scaler.is_enabled()
    model = build_seeded_model(opt, max_grad_norm=0.5, amp='bf16', accumulate=None)
    assert (model.max_grad_norm, model.amp_dtype, model.accumulate) == (0.5, torch.bfloat16, 1)
    assert not model.grad_scaler.is_enabled()  # bf16 needs no loss scaling
    model = build_seeded_model(opt, amp='fp16', accumulate=2)
    assert (model.amp_dtype, model.accumulate) == (torch.float16, 2)
    assert model.grad_scaler.is_enabled()
    assert model.net_g.training


def test_optimizer_holds_the_trainable_parameters_with_the_options(opt, log_lines):
    opt['train']['optim_g'] = {'type': 'AdamW', 'lr': 3e-4, 'weight_decay': 0.02, 'betas': [0.8, 0.9]}
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}  # CyclicLR resets lr
    model = build_seeded_model(opt, udl_opt=None)  # no UDL: the uncertainty heads are frozen
    assert model.optimizers == [model.optimizer_g] and isinstance(model.optimizer_g, torch.optim.AdamW)
    group = model.optimizer_g.param_groups[0]
    assert (group['lr'], group['weight_decay'], tuple(group['betas'])) == (3e-4, 0.02, (0.8, 0.9))
    trainable = [p for p in model.net_g.parameters() if p.requires_grad]
    assert len(trainable) < len(list(model.net_g.parameters()))
    assert [id(p) for p in group['params']] == [id(p) for p in trainable]
    lines = log_lines()
    said = [line for line in lines if line.startswith('No loss reaches ')]
    assert len(said) == 1 and said[0].endswith(': frozen (kept as initialised or loaded)')
    heads = said[0].removeprefix('No loss reaches ').removesuffix(': frozen (kept as initialised or loaded)')
    heads = heads.split(', ')
    assert heads and all(name.startswith('uncertainty') or 'uncert' in name.lower() for name in heads), heads
    frozen = {n for n, p in model.net_g.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.net_g.named_parameters() if any(n.startswith(h + '.') for h in heads)}
    assert not [line for line in lines if 'will not be optimized' in line]  # basicsr's line per parameter


def test_nothing_frozen_or_logged_when_every_head_has_a_loss(opt, log_lines):
    model = build_seeded_model(opt)  # psnr + udl reach every output
    assert all(p.requires_grad for p in model.net_g.parameters())
    assert not [line for line in log_lines() if 'No loss reaches' in line]
    assert [id(p) for p in model.optimizer_g.param_groups[0]['params']] == [id(p) for p in model.net_g.parameters()]


def test_a_test_time_model_freezes_nothing(opt):
    opt['is_train'] = False
    model = build_seeded_model(opt, udl_opt=None)  # no UDL would freeze the uncertainty heads in training
    assert all(p.requires_grad for p in model.net_g.parameters())
    assert not hasattr(model, 'optimizer_g')
