"""NeRDRainModel: a training iteration on all seven outputs, single-image validation, and the shipped options run."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from helpers import REPO, build_seeded_model, parsed_options, run, tiny_basicsr_options, write_paired_folder, write_yaml

from s2former_plugin.archs.nerdrain_arch import NeRDRain
from s2former_plugin.losses.nerdrain_loss import NeRDRainLoss

TINY_NET = {'type': 'NeRDRain', 'dim': 4, 'num_blocks': [1, 1, 1], 'heads': [1, 2, 4]}


def _options(tmp_path, **train) -> dict:
    opt = tiny_basicsr_options(write_paired_folder(tmp_path / 'data', n=2, size=(32, 32)), name='nerd')
    opt['model_type'] = 'NeRDRainModel'
    opt['network_g'] = dict(TINY_NET)
    opt['train'].update(ema_decay=0, pixel_opt={'type': 'NeRDRainLoss', 'loss_weight': 1.0}, **train)
    return parsed_options(opt, tmp_path)


def _batch(size=(16, 16)) -> dict:
    g = torch.Generator().manual_seed(0)
    return {'lq': torch.rand(2, 3, *size, generator=g), 'gt': torch.rand(2, 3, *size, generator=g)}


def test_one_iteration_trains_on_all_outputs_with_the_authors_loss(tmp_path):
    import basicsr  # noqa: F401 - registers the plugin

    model = build_seeded_model(_options(tmp_path))
    assert type(model).__name__ == 'NeRDRainModel' and isinstance(model.cri_pix, NeRDRainLoss)
    net = model.get_bare_model(model.net_g)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = _batch()
    # The loss the step must take: the authors' total on the seven outputs of the weights before the step.
    with torch.no_grad():
        expected = NeRDRainLoss()(net(data['lq'], return_all=True), data['gt']).item()
    model.feed_data(data)
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert set(log) == {'l_char', 'l_fft', 'l_edge', 'l_inr', 'l_pix'}
    assert log['l_pix'] == pytest.approx(expected, rel=1e-5)
    assert log['l_pix'] == pytest.approx(
        log['l_char'] + 0.01 * log['l_fft'] + 0.05 * log['l_edge'] + 0.1 * log['l_inr']
    )
    assert model.output.shape == data['lq'].shape  # the final image is the model's output
    changed = {k.split('.')[0] for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert {'INR', 'INR2', 'BF1', 'BF2', 'BF3', 'output_small', 'output_mid', 'output_max'} <= changed
    assert 'reduce_chan_level1_max3' not in changed  # unused by the authors' forward


def test_a_single_output_pixel_loss_sees_the_final_image(tmp_path):
    import basicsr  # noqa: F401

    opt = _options(tmp_path)
    opt['train']['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
    model = build_seeded_model(opt)
    data = _batch()
    net = model.get_bare_model(model.net_g)
    with torch.no_grad():
        expected = (net(data['lq']) - data['gt']).abs().mean().item()
    model.feed_data(data)
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_pix'}
    assert model.get_current_log()['l_pix'] == pytest.approx(expected, rel=1e-5)


def test_testing_returns_one_image_of_any_size(tmp_path):
    import basicsr  # noqa: F401

    model = build_seeded_model(_options(tmp_path))
    model.feed_data(_batch(size=(13, 10)))
    model.test()
    net = model.get_bare_model(model.net_g)
    assert isinstance(net, NeRDRain) and model.output.shape == (2, 3, 13, 10)
    with torch.no_grad():
        torch.testing.assert_close(model.output, net.eval()(model.lq), rtol=0, atol=0)


@pytest.mark.slow
def test_shipped_options_train_with_plain_basicsr(tmp_path):
    # options/nerdrain_rain200h.yml through `python -m basicsr.train`, with the data, the net and the length shrunk;
    # the validation images (28x36) are not multiples of 16.
    data = write_paired_folder(tmp_path / 'data', n=3, size=(28, 36))
    opt = yaml.safe_load((REPO / 'options' / 'nerdrain_rain200h.yml').read_text())
    opt['network_g'].update({k: v for k, v in TINY_NET.items() if k != 'type'})
    for phase, dataset in opt['datasets'].items():
        dataset.update(dataroot_gt=str(data / 'gt'), dataroot_lq=str(data / 'lq'), io_backend={'type': 'disk'})
        dataset['filename_tmpl'] = '{}'
        if phase == 'train':
            dataset.update(gt_size=16, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['train'].update(total_iter=2, warmup_iter=1)
    opt['train']['scheduler']['periods'] = [1, 1]
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt.update(num_gpu=0, name='tiny_nerdrain')
    opt_file = write_yaml(tmp_path / 'o.yml', opt)
    proc = run(['-m', 'basicsr.train', '-opt', str(opt_file)], tmp_path, PYTHONPATH=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = next((tmp_path / 'experiments' / 'tiny_nerdrain').glob('train_*.log')).read_text()
    assert 'Network [NeRDRain] is created' in log and 'Model [NeRDRainModel] is created' in log
    assert 'End of training' in log and 'l_edge:' in log and 'l_inr:' in log
    psnr = [float(v) for v in re.findall(r'# psnr: ([-\d.]+)', log)]
    assert psnr and all(math.isfinite(v) for v in psnr)
