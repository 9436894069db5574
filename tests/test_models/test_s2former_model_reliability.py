"""``S2FormerModel`` on NaN: a non-finite loss stops training with advice that works (the last good weights, and
what a resume or a new run from them changes), a NaN prediction stops validation naming the image.

Each test is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def s2f_model(tmp_path):
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from helpers import parsed_options, tiny_s2former_options, write_paired_folder
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    write_paired_folder(tmp_path / 'data', n=2, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    batch = next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2)))
    return opt, build_model, batch


def test_nan_stop_advice_works(s2f_model):
    from s2former_plugin.models.s2former_options import NonFiniteLoss

    opt, build_model, batch = s2f_model
    model = build_model(opt)
    model.feed_data(batch)
    model.optimize_parameters(1)
    model.save(0, 1)
    model.save_training_state(0, 1)
    model.feed_data({**batch, 'lq': torch.full_like(batch['lq'], float('nan'))})
    with pytest.raises(NonFiniteLoss) as info:
        model.optimize_parameters(2)
    message = str(info.value)
    weights = message.split('path:pretrain_network_g: ')[1]
    assert os.path.isfile(weights) and weights.endswith('net_g_1.pth') and 'train:max_grad_norm' in message
    # What the advice rests on: a resumed run keeps the saved learning rate but reads max_grad_norm from the YAML.
    state = torch.load(os.path.join(opt['path']['training_states'], '1.state'), weights_only=True)
    opt['train']['optim_g']['lr'] = opt['train']['optim_g']['lr'] / 10
    opt['train']['max_grad_norm'] = 0.5
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert resumed.optimizers[0].param_groups[0]['lr'] == model.optimizers[0].param_groups[0]['lr']
    assert resumed.max_grad_norm == 0.5
    # The advice's fine-tuning route does take the lowered learning rate.
    assert "scheduler's base_lr/max_lr" in message  # a CyclicLR sets the lr itself
    opt['train']['scheduler'].update(base_lr=1e-4, max_lr=2e-4)
    opt['path']['pretrain_network_g'] = weights
    fresh = build_model(opt)
    assert fresh.optimizers[0].param_groups[0]['lr'] == pytest.approx(1e-4)


def test_validation_refuses_a_nan_prediction(s2f_model, monkeypatch):
    from basicsr.data import build_dataloader, build_dataset

    from s2former_plugin.models.s2former_options import NonFiniteLoss

    opt, build_model, _ = s2f_model
    model = build_model(opt)
    val_set = build_dataset(opt['datasets']['val'])
    loader = build_dataloader(val_set, opt['datasets']['val'], num_gpu=0, dist=False)
    monkeypatch.setattr(model, 'predict', lambda lq: (torch.full_like(lq, float('nan')), torch.zeros_like(lq)))
    with pytest.raises(NonFiniteLoss, match=r'validation: the network output for .*000\.png holds NaN/inf'):
        model.validation(loader, 1, None, False)
