"""``train:cuda_graph`` on CUDA: S2FormerModel's captured step (forward, losses, backward, optimizer step, EMA)
follows the eager step, with ``accumulate`` and ``amp: bf16``, and falls back to eager with one log line when the
batch shape changes. ``gpu``-marked: deselected by default, run with ``python -m pytest -m gpu``."""

from __future__ import annotations

import random

import pytest
import torch
from basicsr.data import build_dataset
from helpers import basicsr_log, build_seeded_model, parsed_options, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

pytestmark = pytest.mark.gpu


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    write_paired_folder(tmp_path / 'data', n=4, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    opt['num_gpu'] = 1
    batches = list(DataLoader(build_dataset(opt['datasets']['train']), batch_size=4))
    return opt, batches[0]


def _train(model, batch, n: int) -> list[float]:
    logs = []
    for it in range(1, n + 1):
        model.feed_data(batch)
        model.optimize_parameters(it)
        logs.append(model.get_current_log()['l_total'])
    return logs


@pytest.mark.parametrize(('accumulate', 'amp'), [(1, None), (2, None), (2, 'bf16')])
def test_captured_step_follows_the_eager_step(setup, accumulate, amp):
    opt, batch = setup
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare without TF32 noise
    common = dict(accumulate=accumulate, amp=amp, ema_decay=0.9, max_grad_norm=1.0)
    eager = build_seeded_model(opt, **common)
    graphed = build_seeded_model(opt, cuda_graph=True, **common)
    assert graphed.graphed_step is not None and graphed.optimizer_g.defaults['capturable'] is True
    assert graphed.device.type == 'cuda'
    n = 8  # 3 eager warm-up steps, the capture, 4 replays
    eager_logs, graphed_logs = _train(eager, batch, n), _train(graphed, batch, n)
    assert graphed.graphed_step.graphs is not None and not graphed.graphed_step.disabled
    tol = 1e-4 if amp is None else 2e-2
    assert graphed_logs == pytest.approx(eager_logs, rel=tol)
    for p, q in zip(graphed.net_g_ema.parameters(), eager.net_g_ema.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tol * 10, atol=tol)


def test_learning_rate_schedule_reaches_the_captured_step(setup):
    opt, batch = setup
    sched = {'type': 'MultiStepLR', 'milestones': [5], 'gamma': 0.1}
    eager = build_seeded_model(opt, scheduler=sched)
    graphed = build_seeded_model(opt, scheduler=sched, cuda_graph=True)
    for model in (eager, graphed):
        for it in range(1, 9):
            model.update_learning_rate(it)
            model.feed_data(batch)
            model.optimize_parameters(it)
    assert float(graphed.optimizer_g.param_groups[0]['lr']) == pytest.approx(eager.optimizer_g.param_groups[0]['lr'])
    for p, q in zip(graphed.net_g.parameters(), eager.net_g.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


def test_a_new_batch_shape_falls_back_to_eager_with_one_line(setup):
    opt, batch = setup
    model = build_seeded_model(opt, cuda_graph=True)
    with basicsr_log() as records:
        _train(model, batch, 5)  # captured
        smaller = {k: v[:2] if torch.is_tensor(v) else v for k, v in batch.items()}
        logs = _train(model, smaller, 2) + _train(model, batch, 1)
    lines = [r.getMessage() for r in records if 'cuda_graph' in r.getMessage()]
    assert lines == [
        'train:cuda_graph: the batch changed from 4x3x16x16, 4x3x16x16 to 2x3x16x16, 2x3x16x16; eager steps from now on'
    ]
    assert model.graphed_step.disabled and all(torch.isfinite(torch.tensor(logs)))
