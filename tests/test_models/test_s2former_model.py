"""S2FormerModel in-process: losses, EMA, NaN stop, exact resume, tiled validation, fine-tuning (distributed
validation under a real process group: tests/test_models/test_distributed_validation.py)."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import cv2
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.models import build_model
from basicsr.utils import tensor2img
from helpers import parsed_options, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

from s2former_plugin import compat
from s2former_plugin.official import build_from_official


@pytest.fixture()
def setup(tmp_path, vgg19_file):
    torch.manual_seed(0)
    random.seed(0)  # basicsr's crops and flips: the same batch whatever ran before in the process
    write_paired_folder(tmp_path / 'data', n=3, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', vgg19_file), tmp_path)
    train_set = build_dataset(opt['datasets']['train'])
    batch = next(iter(DataLoader(train_set, batch_size=2)))
    return tmp_path, opt, batch


def test_training_step_uses_all_three_losses(setup):
    _, opt, batch = setup
    model = build_model(opt)
    model.feed_data(batch)
    ema_before = copy.deepcopy(model.net_g_ema.state_dict())
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert set(log) == {'l_psnr', 'l_percep', 'l_udl', 'l_total'}
    assert log['l_total'] == pytest.approx(log['l_psnr'] + log['l_percep'] + log['l_udl'], rel=1e-5)
    changed = [k for k, v in model.net_g_ema.state_dict().items() if not torch.equal(v, ema_before[k])]
    assert changed, 'EMA did not move'


def test_each_loss_reads_its_outputs_and_the_step_keeps_the_final_image(setup):
    """The logged losses are those of the right maps (the perceptual loss on the final image, not a side output),
    and ``model.output`` after the step is the final image: their sum alone (above) does not show either."""
    _, opt, batch = setup
    model = build_model(opt)
    model.feed_data(batch)
    with torch.no_grad():
        outputs, uncertainties = model.net_g(model.lq, return_all=True)
        expected = {
            'l_psnr': model.cri_psnr(outputs, model.gt).item(),
            'l_percep': model.cri_perceptual(outputs[0], model.gt).item(),
            'l_udl': model.cri_udl(outputs, uncertainties, model.gt).item(),
        }
        assert model.cri_perceptual(outputs[1], model.gt).item() != pytest.approx(expected['l_percep'], rel=1e-3)
    model.optimize_parameters(1)
    log = model.get_current_log()
    for key, value in expected.items():
        assert log[key] == pytest.approx(value, rel=1e-4), key
    # The training forward (with gradients, plain ops) and this one (fast ops) round differently, and a flipped
    # near-tie of the ranking moves a few pixels by ~1e-4: compare the mean difference, against a side output's.
    near, side = ((model.output - o).abs().mean().item() for o in (outputs[0], outputs[1]))
    assert near < 1e-5 and side > 1e-3, (near, side)


def test_unknown_loss_key_is_rejected(setup):
    _, opt, _ = setup
    opt['train']['pixel_opt'] = {'type': 'L1Loss'}
    with pytest.raises(ValueError, match='train:pixel_opt is not used'):
        build_model(opt)


@pytest.mark.parametrize(
    ('key', 'value'), [('tile_blend', 'offical'), ('tile', -1), ('tile_overlap', 32), ('tile', 'big')]
)
def test_bad_validation_options_fail_at_build_time(setup, key, value):
    _, opt, _ = setup
    opt['val'][key] = value
    with pytest.raises(ValueError, match=f'val:{key}'):
        build_model(opt)


def test_nan_loss_stops_before_the_update(setup):
    _, opt, batch = setup
    model = build_model(opt)
    before = copy.deepcopy(model.net_g.state_dict())
    model.feed_data({**batch, 'lq': torch.full_like(batch['lq'], float('nan'))})
    with pytest.raises(FloatingPointError, match='iteration 7'):
        model.optimize_parameters(7)
    after = model.net_g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_stop_message_names_the_losses_and_the_latest_checkpoint(setup):
    """The advice names the checkpoint to restart from: the highest iteration saved (not ``latest``, not the
    lexically last), or a placeholder when none was saved yet; and the loss values that were not finite."""
    _, opt, batch = setup
    models = Path(opt['path']['models'])
    model = build_model(opt)
    model.feed_data({**batch, 'lq': torch.full_like(batch['lq'], float('nan'))})
    with pytest.raises(FloatingPointError) as info:
        model.optimize_parameters(3)
    message = str(info.value)
    assert message.startswith('Non-finite loss at iteration 3 (l_psnr=nan, l_percep=nan, l_udl=nan, l_total=nan);')
    assert message.endswith(f'path:pretrain_network_g: {models}/net_g_<iter>.pth')

    for name in ('net_g_5.pth', 'net_g_40.pth', 'net_g_100.pth', 'net_g_latest.pth'):
        (models / name).write_bytes(b'')
    with pytest.raises(FloatingPointError) as info:
        model.optimize_parameters(101)
    assert str(info.value).endswith(f'path:pretrain_network_g: {models / "net_g_100.pth"}')
    assert '\n' not in str(info.value)


def test_resume_restores_network_ema_optimizer_and_scheduler(setup):
    root, opt, batch = setup
    model = build_model(copy.deepcopy(opt))
    for it in range(1, 4):
        model.update_learning_rate(it)
        model.feed_data(batch)
        model.optimize_parameters(it)
    model.save(epoch=1, current_iter=3)

    opt2 = copy.deepcopy(opt)
    opt2['auto_resume'] = True
    state = compat.load_resume_state(opt2)
    resumed = build_model(opt2)
    resumed.resume_training(state)
    for a, b in ((model.net_g, resumed.net_g), (model.net_g_ema, resumed.net_g_ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    opt_a, opt_b = model.optimizer_g.state_dict(), resumed.optimizer_g.state_dict()
    assert opt_a['param_groups'] == opt_b['param_groups']
    for k, s in opt_a['state'].items():
        assert all(torch.equal(s[n], opt_b['state'][k][n]) for n in s)
    assert model.schedulers[0].state_dict() == resumed.schedulers[0].state_dict()
    assert resumed.get_current_learning_rate() == model.get_current_learning_rate()


def _val_loader(root, opt, size):
    write_paired_folder(root / 'val', n=3, size=size, seed=1)
    val_opt = dict(opt['datasets']['val'], dataroot_gt=str(root / 'val' / 'gt'), dataroot_lq=str(root / 'val' / 'lq'))
    return DataLoader(build_dataset(val_opt))


def test_tiled_validation_on_odd_sizes_saves_uncertainty(setup):
    root, opt, _ = setup
    opt['val']['metrics']['ssim'] = {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True}
    model = build_model(opt)
    model.validation(_val_loader(root, opt, (37, 53)), current_iter=3, tb_logger=None, save_img=True)
    assert set(model.metric_results) == {'psnr', 'ssim'}
    assert all(v == v and abs(v) < 1e3 for v in model.metric_results.values())
    saved = sorted((root / 'experiments' / 's2f' / 'visualization' / 'tiny_val').glob('*_3.png'))
    assert len(saved) == 3
    assert cv2.imread(str(saved[0])).shape == (37, 2 * 53, 3)  # derained | colour-mapped uncertainty


def test_validation_after_training_is_numbered_total_iter_and_not_repeated(setup):
    # basicsr.train validates once more after its loop, with its counter one or two past total_iter (4 here)
    root, opt, _ = setup
    loader = _val_loader(root, opt, (24, 24))
    folder = root / 'experiments' / 's2f' / 'visualization' / 'tiny_val'
    model = build_model(opt)
    model.validation(loader, current_iter=6, tb_logger=None, save_img=True)
    assert sorted(p.name.rsplit('_', 1)[1] for p in folder.glob('*.png')) == ['4.png'] * 3
    assert {r['iter'] for r in model.best_metric_results['tiny_val'].values()} == {4}

    model = build_model(opt)
    model.validation(loader, current_iter=4, tb_logger=None, save_img=True)
    for png in folder.glob('*.png'):
        png.unlink()
    model.validation(loader, current_iter=6, tb_logger=None, save_img=True)  # same weights as at 4: skipped
    assert not list(folder.glob('*.png'))


def test_validation_tile_batch_and_cuda_graph_keep_the_outputs(setup, caplog):
    root, opt, _ = setup
    model = build_model(opt)
    x = torch.rand(1, 3, 40, 56)
    model.opt['val'].update(tile=32, tile_overlap=16)
    one, unc_one = model.predict(x)
    model.opt['val']['tile_batch'] = 3  # 6 tiles in two forward passes of 3
    batched, unc_batched = model.predict(x)
    assert torch.allclose(one, batched, atol=1e-5) and torch.allclose(unc_one, unc_batched, atol=1e-5)
    model.opt['val']['cuda_graph'] = True  # on the CPU: eager forwards, said once
    for _ in range(2):
        graphed, _ = model.predict(x)
        assert torch.equal(graphed, batched)
    said = [r.getMessage() for r in caplog.records if 'cuda_graph' in r.getMessage()]
    assert said == ['val:cuda_graph: validation runs on cpu, not CUDA; eager']


def test_tiled_prediction_matches_whole_image_closely(setup):
    root, opt, _ = setup
    model = build_model(opt)
    x = torch.rand(1, 3, 40, 40)
    model.opt['val']['tile'] = None
    whole, _ = model.predict(x)
    model.opt['val'].update(tile=32, tile_overlap=16)
    tiled, _ = model.predict(x)
    assert whole.shape == tiled.shape == x.shape
    assert (whole - tiled).abs().mean() < 0.05
    # Validation runs exactly the shared tiling on the EMA network's final image and uncertainty.
    from s2former_plugin.tiling import tiled_forward

    ema = model.net_g_ema.eval()
    expected = tiled_forward(lambda t: tuple(o[0] for o in ema(t, return_all=True)), x, 32, 16)
    assert torch.equal(tiled, expected[0])
    model.opt['val']['tile_blend'] = 'official'
    official, _ = model.predict(x)
    assert official.shape == x.shape and not torch.equal(official, tiled)


def test_finetune_from_official_checkpoint(setup, parity_fixture):
    root, opt, _ = setup
    path = root / 'udrs2former_small.pth'
    torch.save(parity_fixture['state_dict'], path)  # a released checkpoint is a plain official state dict
    opt['path']['pretrain_network_g'] = str(path)
    model = build_model(opt)
    reference = build_from_official(parity_fixture['config'], parity_fixture['state_dict']).state_dict()
    for net in (model.net_g, model.net_g_ema):
        assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())


def test_missing_pretrained_file_is_named(setup):
    root, opt, _ = setup
    opt['path']['pretrain_network_g'] = str(root / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build_model(opt)


@pytest.mark.parametrize('ema_decay', [0.9, 0])
def test_prediction_uses_the_ema_network_when_there_is_one(setup, ema_decay):
    """Validation scores the EMA weights (what is saved as ``params_ema`` and deployed), the trained ones without
    EMA; right after building both nets are equal, so the training net is moved away from the EMA first."""
    _, opt, _ = setup
    opt['train']['ema_decay'] = ema_decay
    model = build_model(opt)
    with torch.no_grad():
        for p in model.net_g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.opt['val']['tile'] = None
    x = torch.rand(1, 3, 24, 24)
    predicted, _ = model.predict(x)
    nets = {'ema': getattr(model, 'net_g_ema', None), 'trained': model.net_g}
    with torch.no_grad():
        outputs = {k: n.eval()(x, return_all=True)[0][0] for k, n in nets.items() if n is not None}
    expected = 'ema' if ema_decay else 'trained'
    assert set(outputs) == ({'ema', 'trained'} if ema_decay else {'trained'})
    assert torch.equal(predicted, outputs[expected])
    if ema_decay:
        assert not torch.allclose(outputs['ema'], outputs['trained'], atol=1e-3)


@pytest.mark.parametrize('strict', [True, False])
def test_strict_loading_refuses_a_checkpoint_with_missing_keys(setup, strict):
    root, opt, _ = setup
    state = build_model(opt).net_g.state_dict()
    dropped = next(iter(state))
    del state[dropped]
    path = root / 'partial.pth'
    torch.save({'params': state, 'params_ema': state}, path)
    opt['path'].update(pretrain_network_g=str(path), strict_load_g=strict)
    if strict:
        with pytest.raises(RuntimeError, match=dropped):
            build_model(opt)
    else:
        model = build_model(opt)  # the other weights loaded
        loaded = model.net_g.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_validation_of_one_image_reports_its_own_score(setup):
    """The mean over a one-image set is that image's score (the count is not floored above 1)."""
    root, opt, _ = setup
    write_paired_folder(root / 'one', n=1, size=(24, 24), seed=2)
    val_opt = dict(opt['datasets']['val'], dataroot_gt=str(root / 'one' / 'gt'), dataroot_lq=str(root / 'one' / 'lq'))
    dataset = build_dataset(val_opt)
    model = build_model(opt)
    model.validation(DataLoader(dataset), current_iter=1, tb_logger=None, save_img=False)
    item = dataset[0]
    output, _ = model.predict(item['lq'].unsqueeze(0))
    data = {'img': tensor2img(output), 'img2': tensor2img(item['gt'].unsqueeze(0))}
    expected = float(calculate_metric(data, dict(opt['val']['metrics']['psnr'])))
    assert model.metric_results['psnr'] == pytest.approx(expected, rel=1e-12)


def test_basicsr_test_api_derains_the_fed_batch(setup):
    """``feed_data`` + ``test`` + ``get_current_visuals``, as basicsr's own scripts call a model."""
    _, opt, _ = setup
    model = build_model(opt)
    model.opt['val']['tile'] = None
    x = torch.rand(1, 3, 24, 24)
    model.feed_data({'lq': x})
    model.test()
    expected, uncertainty = model.predict(x)
    assert torch.equal(model.output, expected) and torch.equal(model.uncertainty, uncertainty)
    assert expected.shape == x.shape and uncertainty.shape == x.shape
    assert torch.equal(model.get_current_visuals()['result'], expected.cpu())
