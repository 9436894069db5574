"""S2FormerModel with ``train:compile`` / ``cuda_graph`` / ``tf32`` and the optimizer's switches (``fused``,
``foreach``), on the CPU: the options reach torch, the compiled net sits inside and unwraps for state dicts, EMA
and validation, the training step traces as one graph (``torch._dynamo.explain``: no code is generated), and a
CUDA-graph request on the CPU runs eager steps after one line. The capture itself: ``test_graphed_step.py``."""

from __future__ import annotations

import random

import pytest
import torch
import torch._dynamo
from basicsr.data import build_dataset
from helpers import basicsr_log, build_seeded_model, parsed_options, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.models.s2former_options import OptionError, check_training_options


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    write_paired_folder(tmp_path / 'data', n=2, size=(16, 16))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)  # psnr + udl losses
    batch = next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2)))
    return opt, batch


@pytest.mark.parametrize('switch', ['fused', 'foreach'])
def test_optimizer_switches_reach_torch(setup, switch):
    opt, _ = setup
    model = build_seeded_model(opt, optim_g={'type': 'AdamW', 'lr': 1e-4, switch: True})
    assert isinstance(model.optimizer_g, torch.optim.AdamW)
    assert model.optimizer_g.defaults[switch] is True
    assert model.optimizer_g.defaults['capturable'] is False  # only train:cuda_graph asks for it


def test_optimizer_switch_of_the_wrong_type_is_refused(setup):
    opt, _ = setup
    opt['train']['optim_g'] = {'type': 'AdamW', 'fused': 'yes'}
    with pytest.raises(OptionError, match=r"^train:optim_g:fused: must be true or false \(got 'yes'\)$"):
        check_training_options(opt)


@pytest.mark.parametrize(
    ('train', 'message'),
    [
        ({'compile': {'mode': 'turbo'}}, "train:compile:mode: unknown mode 'turbo'"),
        (
            {'compile': {'mode': 'reduce-overhead'}, 'cuda_graph': True},
            "train:cuda_graph: compile mode 'reduce-overhead' already",
        ),
        ({'cuda_graph': True, 'amp': 'fp16'}, 'train:cuda_graph: not with amp: fp16'),
        ({'cuda_graph': 'on'}, "train:cuda_graph: must be true or false (got 'on')"),
        ({'tf32': 1}, 'train:tf32: must be true or false (got 1)'),
        ({'compiled': True}, "train:compiled: unknown key; did you mean 'compile'?"),
    ],
)
def test_acceleration_options_refused_in_one_line(setup, train, message):
    opt, _ = setup
    opt['train'].update(train)
    with pytest.raises(OptionError) as info:
        check_training_options(opt)
    assert str(info.value).startswith(message) and '\n' not in str(info.value)


def test_tf32_is_set_at_start_up(setup):
    opt, _ = setup
    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        build_seeded_model(opt, tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        build_seeded_model(opt, tf32=False)
        assert not torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == 'highest'
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def test_compiled_net_inside_eager_net_for_state_ema_and_validation(setup):
    opt, batch = setup
    eager = build_seeded_model(opt, ema_decay=0.5)
    model = build_seeded_model(opt, ema_decay=0.5, compile={'backend': 'eager'})  # dynamo traces, no codegen
    bare = model.get_bare_model(model.net_g)
    assert model.net_g is not bare and type(bare) is S2Former and model.net_g._orig_mod is bare
    assert list(bare.state_dict()) == list(eager.get_bare_model(eager.net_g).state_dict())  # no _orig_mod. prefix
    assert model._eval_network() is model.net_g_ema
    for m in (eager, model):
        m.feed_data(batch)
        m.optimize_parameters(1)
    assert model.get_current_log() == pytest.approx(eager.get_current_log(), rel=1e-5)
    for (name, p), q in zip(bare.named_parameters(), eager.get_bare_model(eager.net_g).parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    # Validation on another size runs the eager EMA net: no recompiling, any size.
    out, unc = model.predict(torch.rand(1, 3, 40, 24))
    assert out.shape == unc.shape == (1, 3, 40, 24)


def test_training_step_forward_and_losses_are_one_graph(setup):
    opt, batch = setup
    model = build_seeded_model(opt, amp='bf16')  # under autocast, with the float32 islands of the ranking
    model.feed_data(batch)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model._losses)(model.lq, model.gt)
    assert [b.reason for b in explained.break_reasons] == []
    assert explained.graph_count == 1 and explained.op_count > 500


def test_cuda_graph_on_the_cpu_says_why_once_and_trains_eagerly(setup):
    opt, batch = setup
    with basicsr_log() as records:
        model = build_seeded_model(opt, cuda_graph=True)
    lines = [r.getMessage() for r in records if 'cuda_graph' in r.getMessage()]
    assert lines == ['train:cuda_graph: the step runs on cpu, not CUDA; eager steps']
    assert model.graphed_step is None and model.optimizer_g.defaults.get('capturable') is False
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert torch.isfinite(torch.tensor(model.get_current_log()['l_total']))


def test_feed_data_without_ground_truth(setup):
    opt, batch = setup
    model = build_seeded_model(opt)
    model.feed_data({'lq': batch['lq']})
    assert torch.equal(model.lq, batch['lq']) and not hasattr(model, 'gt')
