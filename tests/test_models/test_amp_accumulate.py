"""S2FormerModel's ``train:amp`` (bf16 / fp16 autocast, GradScaler) and ``train:accumulate`` (micro-batches)."""

from __future__ import annotations

import copy
import logging
import math
import random
import re
from pathlib import Path

import pytest
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from helpers import (
    basicsr_log,
    build_seeded_model,
    parsed_options,
    run,
    tiny_s2former_options,
    write_paired_folder,
    write_yaml,
)
from torch.utils.data import DataLoader

from s2former_plugin import compat
from s2former_plugin.models.s2former_options import NonFiniteLoss, OptionError, check_training_options


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    random.seed(0)  # basicsr's crops and flips: the same batch whatever ran before in the process
    write_paired_folder(tmp_path / 'data', n=4, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)  # psnr + udl losses
    train_set = build_dataset(opt['datasets']['train'])
    batch = next(iter(DataLoader(train_set, batch_size=4)))
    return tmp_path, opt, batch


def _steps(model, batch: dict, n: int) -> list[dict]:
    logs = []
    for it in range(1, n + 1):
        model.feed_data(batch)
        model.optimize_parameters(it)
        logs.append(dict(model.get_current_log()))
    return logs


@pytest.mark.parametrize(
    ('key', 'value', 'expected'),
    [
        ('amp', 'fp32', 'train:amp: expected bf16, fp16 or ~'),
        ('amp', True, 'train:amp'),
        ('accumulate', 0, 'train:accumulate: must be an integer >= 1'),
        ('accumulate', 1.5, 'train:accumulate'),
        ('acumulate', 2, "did you mean 'accumulate'"),
    ],
)
def test_bad_amp_and_accumulate_options_are_refused_in_one_line(setup, key, value, expected):
    _, opt, _ = setup
    opt['train'][key] = value
    with pytest.raises(OptionError, match=expected) as info:
        check_training_options(opt)
    assert '\n' not in str(info.value)


def test_bf16_losses_track_float32(setup):
    """bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2 %) on every matmul/conv input. With the same
    weights (step 1) the losses (about -20 dB of PSNR loss) agree within 0.5 % (at most 0.11 % measured over 40
    random batches); the updates then drift apart (Adam's first steps move each weight by about lr whatever the
    size of its gradient), at most 0.9 / 1.0 / 2.3 % at steps 2 / 3 / 4 over those batches, so 5 % there. A wrong
    cast (a loss in bf16, the ranking in bf16 tying) or a missing update shows as a larger gap or no change."""
    _, opt, batch = setup
    ref = _steps(build_seeded_model(opt), batch, 4)
    model = build_seeded_model(opt, amp='bf16')
    autocast_seen, loss_dtypes = [], set()
    model.net_g.register_forward_hook(lambda m, i, o: autocast_seen.append(torch.is_autocast_enabled('cpu')))
    udl = model.cri_udl.forward
    model.cri_udl.forward = lambda outs, us, gt: loss_dtypes.update(t.dtype for t in (*outs, *us)) or udl(outs, us, gt)
    amp = _steps(model, batch, 4)
    assert autocast_seen == [True] * 4
    assert loss_dtypes == {torch.float32}  # the bf16 uncertainty maps are cast before the losses
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())  # master weights stay float32
    for step, (r, a) in enumerate(zip(ref, amp, strict=True)):
        for key in ('l_psnr', 'l_udl', 'l_total'):
            assert math.isfinite(a[key])
            tol = 5e-3 if step == 0 else 5e-2
            assert a[key] == pytest.approx(r[key], rel=tol, abs=tol), (step, key)
    assert any(a['l_total'] != r['l_total'] for r, a in zip(ref, amp, strict=True))  # autocast did change numbers
    assert ref[-1]['l_total'] != ref[0]['l_total'] and amp[-1]['l_total'] != amp[0]['l_total']


@pytest.mark.parametrize(('amp', 'dtype'), [('bf16', torch.bfloat16), ('fp16', torch.float16)])
def test_the_forward_runs_under_the_chosen_autocast_dtype(setup, amp, dtype):
    """``amp: fp16`` must autocast to float16, not to the device's default autocast type (bfloat16 on the CPU)."""
    _, opt, batch = setup
    model = build_seeded_model(opt, amp=amp)
    seen = []
    model.net_g.register_forward_hook(
        lambda m, i, o: seen.append((torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu')))
    )
    _steps(model, {k: v[:2] for k, v in batch.items()}, 1)
    assert seen == [(True, dtype)]


def test_fp16_grad_scaler_unscales_before_clipping(setup, monkeypatch):
    """CPU autocast runs float16 in this torch, so the GradScaler path itself is exercised here."""
    _, opt, batch = setup
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', lambda params, m: norms.append(clip(params, m)) or norms[-1])
    _steps(build_seeded_model(opt, max_grad_norm=1e6), batch, 1)
    model = build_seeded_model(opt, amp='fp16', max_grad_norm=1e6)
    assert model.grad_scaler.is_enabled() and model.grad_scaler.get_scale() == 65536.0
    # At 65536 this net's first scaled gradients overflow float16 (the scaler would skip the step and back off):
    # start where they fit, to compare the clipped norm.
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=256.0)
    _steps(model, batch, 1)
    fp32_norm, fp16_norm = (float(n) for n in norms)
    assert fp16_norm == pytest.approx(fp32_norm, rel=0.05)  # the true norm, not 65536 times it


def test_fp16_overflow_skips_the_step_but_a_nan_loss_stops(setup):
    _, opt, batch = setup
    batch = {k: v[:2] for k, v in batch.items()}  # float16 on the CPU is slow
    model = build_seeded_model(opt, amp='fp16')
    before = copy.deepcopy(model.net_g.state_dict())
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=3e38)  # scaled gradients overflow: its business
    _steps(model, batch, 1)
    after = model.net_g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'an inf-gradient step was not skipped'
    assert model.grad_scaler.get_scale() == pytest.approx(1.5e38)  # backed off by half
    model.grad_scaler.update(new_scale=64.0)
    _steps(model, batch, 1)  # at a scale that fits, the step updates
    assert any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())

    model.feed_data({**batch, 'lq': torch.full_like(batch['lq'], float('nan'))})
    with pytest.raises(NonFiniteLoss, match='iteration 3'):
        model.optimize_parameters(3)


def test_grad_scaler_state_is_saved_and_resumed(setup):
    root, opt, batch = setup
    model = build_seeded_model(opt, amp='fp16')
    _steps(model, {k: v[:2] for k, v in batch.items()}, 1)
    model.grad_scaler.update(new_scale=1234.0)  # as after a few back-offs
    model.save(epoch=0, current_iter=2)

    opt2 = copy.deepcopy(opt)
    opt2['train']['amp'] = 'fp16'
    opt2['auto_resume'] = True
    state = compat.load_resume_state(opt2)  # weights_only=True
    assert state['grad_scaler']['scale'] == 1234.0
    resumed = build_seeded_model(opt2)
    resumed.resume_training(state)
    assert resumed.grad_scaler.state_dict() == model.grad_scaler.state_dict()

    no_amp = build_seeded_model(opt)  # a float32 run saves no scaler state
    assert no_amp.extra_training_state() == {}


def test_resuming_fp16_from_a_float32_state_says_the_scaling_starts_afresh(setup):
    root, opt, batch = setup
    model = build_seeded_model(opt)  # float32: its state holds no scaler
    _steps(model, {k: v[:2] for k, v in batch.items()}, 1)
    model.save(epoch=0, current_iter=1)

    opt2 = copy.deepcopy(opt)
    opt2['train']['amp'] = 'fp16'
    opt2['auto_resume'] = True
    state = compat.load_resume_state(opt2)
    assert 'grad_scaler' not in state
    resumed = build_seeded_model(opt2)
    with basicsr_log() as records:
        resumed.resume_training(state)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == [
        'train:amp: fp16: the training state holds no GradScaler state (saved without fp16); '
        'loss scaling starts afresh at 65536'
    ]
    assert resumed.grad_scaler.get_scale() == 65536.0


def test_accumulate_two_of_two_equals_one_batch_of_four(setup):
    """Float64, same data: each micro-batch loss divided by 2 makes the summed gradients those of the batch of 4
    (every loss term is a mean over images), so Adam's update, the EMA and the logged losses agree to rounding."""
    _, opt, batch = setup
    batch = {**batch, 'lq': batch['lq'].double(), 'gt': batch['gt'].double()}
    whole, split = build_seeded_model(opt), build_seeded_model(opt, accumulate=2)
    for model in (whole, split):
        model.net_g.double()
        model.net_g_ema.double()
    ema_before = copy.deepcopy(split.net_g_ema.state_dict())
    shapes = []
    split.net_g.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))

    log_whole, log_split = _steps(whole, batch, 1)[0], _steps(split, batch, 1)[0]
    assert shapes == [(2, 3, 16, 16), (2, 3, 16, 16)]  # two micro-batches of two
    for key in log_whole:
        assert log_split[key] == pytest.approx(log_whole[key], rel=1e-12)
    for name, value in whole.net_g.state_dict().items():
        torch.testing.assert_close(split.net_g.state_dict()[name], value, rtol=1e-10, atol=1e-12, msg=name)

    # One optimizer step and one EMA update for the two micro-batches.
    assert all(s['step'] == 1 for s in split.optimizer_g.state.values())
    decay = split.ema_decay
    net = split.net_g.state_dict()
    for name, value in split.net_g_ema.named_parameters():
        expected = decay * ema_before[name] + (1 - decay) * net[name]
        torch.testing.assert_close(value.detach(), expected, rtol=1e-12, atol=1e-14)

    _steps(whole, batch, 1), _steps(split, batch, 1)
    for name, value in whole.net_g.state_dict().items():
        torch.testing.assert_close(split.net_g.state_dict()[name], value, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize('accumulate', [1, 2])
def test_logged_losses_are_the_losses_of_the_step(setup, accumulate):
    """The logged values are the batch's losses before the update (the mean over micro-batches), not merely equal
    between the two settings: the batch-of-4 comparison above would pass with both logs negated."""
    _, opt, batch = setup
    model = build_seeded_model(opt, accumulate=accumulate)
    model.feed_data(batch)
    with torch.no_grad():
        parts = [model._losses(lq, gt)[0] for lq, gt in zip(model.lq.chunk(2), model.gt.chunk(2), strict=True)]
    log = _steps(model, batch, 1)[0]
    assert set(log) == set(parts[0])
    for key in log:
        assert log[key] == pytest.approx(sum(p[key].item() for p in parts) / 2, rel=1e-4, abs=1e-6), key


def test_accumulate_needs_a_divisible_batch(setup):
    _, opt, batch = setup
    model = build_seeded_model(opt, accumulate=3)
    model.feed_data(batch)
    with pytest.raises(ValueError, match='train:accumulate: 3 does not divide the batch of 4'):
        model.optimize_parameters(1)


@pytest.mark.parametrize('accumulate', [1, 2])
def test_loader_reads_the_micro_batches_of_one_step_per_iteration(setup, accumulate):
    """basicsr's loop runs one iteration per loader batch: the batch holds all micro-batches of one optimizer step,
    and the epoch count grows so that total_iter optimizer steps are reached."""
    import basicsr.train

    _, opt, _ = setup
    opt['train'].update(accumulate=accumulate, total_iter=6)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    loader, _, _, total_epochs, total_iters = basicsr.train.create_train_val_dataloader(opt, logging.getLogger('t'))
    assert opt['datasets']['train']['batch_size_per_gpu'] == 1  # the option is left as written
    batches = list(loader)
    assert [b['lq'].shape[0] for b in batches] == [accumulate] * (4 // accumulate)  # 4 images
    assert total_iters == 6 and total_epochs == math.ceil(6 / (4 // accumulate))


@pytest.mark.slow
def test_basicsr_train_counts_optimizer_steps_and_saves_the_scaler(tmp_path):
    """``python -m basicsr.train`` with accumulate 2 x batch 1 and fp16: each logged iteration is one optimizer
    step (one scheduler step, lr following CyclicLR per step), total_iter steps are run, the state holds the
    scaler."""
    write_paired_folder(tmp_path / 'data', n=4, size=(24, 24))
    opt = tiny_s2former_options(tmp_path / 'data', None, name='acc', total_iter=3, save_freq=3)
    opt['train'].update(amp='fp16', accumulate=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['val']['val_freq'] = 100
    write_yaml(tmp_path / 'acc.yml', opt)
    # This checkout's code, wherever the installed plugin points (discovery itself is tested elsewhere).
    proc = run(['-m', 'basicsr.train', '-opt', 'acc.yml'], cwd=tmp_path, PYTHONPATH=str(Path(__file__).parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'acc'
    log = next(exp.glob('train_*.log')).read_text()
    assert 'Require iter number per epoch: 2' in log and 'Total epochs: 2; iters: 3' in log
    assert 'train:accumulate: 2 micro-batches of 1 per optimizer step' in log
    iters = [int(v) for v in re.findall(r'iter:\s+(\d+), lr:', log)]
    lrs = [float(v) for v in re.findall(r'lr:\(([\d.e+-]+),\)', log)]
    assert iters == [1, 2, 3]
    # CyclicLR from 1e-3 to 2e-3 in 4 steps up, stepped by basicsr from the second iteration on: one scheduler
    # step per optimizer step.
    assert lrs == pytest.approx([1e-3, 1.25e-3, 1.5e-3])
    state = torch.load(exp / 'training_states' / '3.state', weights_only=True)
    assert state['iter'] == 3 and set(state['grad_scaler']) >= {'scale', '_growth_tracker'}


def _ddp_accumulate_worker(rank: int, init_file: str, opt: dict, batches: list[dict], results) -> None:
    """One rank of a 2-process gloo group: two optimizer steps of accumulate 2 x micro-batch 1 on its own batch,
    counting the gradient buckets DDP all-reduces in each micro-batch's backward."""
    import datetime

    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # the net built in float64: tight comparison with one process
    dist.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)
        model = build_model(dict(opt, dist=True, rank=rank, world_size=2))
        reduced = []  # one entry per bucket all-reduced, tagged with the micro-batch whose backward sent it

        def counting_allreduce(state, bucket):
            reduced.append(len(forwards))
            return default_hooks.allreduce_hook(None, bucket)  # the real collective

        forwards = []
        model.net_g.register_comm_hook(None, counting_allreduce)
        model.net_g.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
        logs = _steps(model, batches[rank], 2)
        results[rank] = {
            'forwards': forwards,
            'reduced_after_forward': reduced,
            'params': {k: v.detach().clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()},
            'logs': logs,
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_accumulate_under_ddp_reduces_once_per_step_and_equals_one_batch(setup):
    """Two gloo processes, each accumulating 2 micro-batches of 1 image: DDP must all-reduce the gradients in the
    last micro-batch's backward only (``no_sync`` before it), and the update must equal one process stepping on
    all 4 images at once. Skipping the all-reduce leaves the replicas apart; reducing every micro-batch gives the
    same values but twice the communication, seen in the bucket count."""
    import torch.multiprocessing as mp

    root, opt, batch = setup
    batch = {k: v.double() for k, v in batch.items() if k in ('lq', 'gt')}
    batches = [{k: v[2 * r : 2 * r + 2] for k, v in batch.items()} for r in range(2)]  # each rank its own images
    ddp_opt = copy.deepcopy(opt)
    ddp_opt['train']['accumulate'] = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_accumulate_worker, args=(str(root / 'init'), ddp_opt, batches, results), nprocs=2, join=True)
        ranks = [results[r] for r in range(2)]

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        whole = build_seeded_model(opt)  # one process, the 4 images in one batch, no accumulation
        whole_logs = _steps(whole, batch, 2)
    finally:
        torch.set_default_dtype(default)

    for res in ranks:
        assert res['forwards'] == [1, 1, 1, 1]  # 2 steps x 2 micro-batches of one image
        # Buckets are sent only during the backward of micro-batches 2 and 4, the last of each step (DDP
        # regroups its buckets after the first step, so the two counts may differ).
        assert set(res['reduced_after_forward']) == {2, 4}
        for name, value in whole.net_g.state_dict().items():
            torch.testing.assert_close(res['params'][name], value, rtol=1e-9, atol=1e-12, msg=name)
    # The logged losses: basicsr reduces them onto rank 0, the only rank that logs.
    for got, expected in zip(ranks[0]['logs'], whole_logs, strict=True):
        assert set(got) == set(expected)
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-9), key
