"""``acceleration``: the compile option, TF32, and the CPU-testable parts of the CUDA-graph step (the fallback
decision, the static inputs and learning rates, shape-change detection). The graph capture itself is in
``tests/test_models/test_graphed_step.py`` (``gpu``-marked)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2former_plugin.acceleration import (
    COMPILE_MODES,
    CompileOption,
    GraphedStep,
    LearningRates,
    StaticBatch,
    check_compile_option,
    compile_network,
    graph_fallback_reason,
    set_tf32,
    unwrap_compiled,
    with_capturable,
)
from s2former_plugin.options import check_switch


def test_the_modes_are_torchs():
    import torch._inductor

    assert set(COMPILE_MODES) == set(torch._inductor.list_mode_options())


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        (None, None),
        (False, None),
        (True, CompileOption()),
        ({}, CompileOption()),
        ({'mode': 'max-autotune'}, CompileOption(mode='max-autotune')),
        ({'mode': 'reduce-overhead', 'dynamic': None}, CompileOption('reduce-overhead', None)),
        ({'dynamic': True, 'fullgraph': False, 'backend': 'eager'}, CompileOption('default', True, False, 'eager')),
    ],
)
def test_compile_values_accepted(value, expected):
    assert check_compile_option(value) == expected


@pytest.mark.parametrize(
    ('value', 'message'),
    [
        ({'mode': 'fast'}, "train:compile:mode: unknown mode 'fast'; torch names default, reduce-overhead"),
        ({'mdoe': 'default'}, "train:compile:mdoe: unknown key; did you mean 'mode'?"),
        ({'turbo': True}, 'train:compile:turbo: unknown key; the keys are backend, dynamic, fullgraph, mode'),
        ({'dynamic': 'yes'}, "train:compile:dynamic: must be true or false or null (got 'yes')"),
        ({'fullgraph': 1}, 'train:compile:fullgraph: must be true or false (got 1)'),
        ({'backend': 3}, 'train:compile:backend: expected a backend name'),
        ('default', "train:compile: expected true, false or a mapping with mode/dynamic/fullgraph, got 'default'"),
    ],
)
def test_compile_values_refused_with_the_option_named(value, message):
    with pytest.raises(ValueError) as info:
        check_compile_option(value)
    assert str(info.value).startswith(message)


def test_switches():
    # train:tf32 and train:cuda_graph are checked by the one option checker (~: leave torch's setting)
    for ok in (None, True, False):
        check_switch(ok, 'train:tf32', nullable=True)
    with pytest.raises(ValueError, match=r"train:tf32: must be true or false or null \(got 'on'\)"):
        check_switch('on', 'train:tf32', nullable=True)


def test_compile_network_wraps_and_unwraps(monkeypatch):
    net = nn.Linear(2, 2)
    assert compile_network(net, None) is net and unwrap_compiled(net) is net
    calls = []
    monkeypatch.setattr(torch, 'compile', lambda model, **kw: calls.append(kw) or model)
    compile_network(net, CompileOption('max-autotune', None, False, 'eager'))
    compile_network(net, CompileOption())
    assert calls == [
        {'mode': 'max-autotune', 'dynamic': None, 'fullgraph': False, 'backend': 'eager'},
        {'mode': None, 'dynamic': False, 'fullgraph': True, 'backend': 'inductor'},
    ]
    monkeypatch.undo()
    compiled = torch.compile(net, backend='eager')  # wrapping only: nothing is traced before the first call
    assert unwrap_compiled(compiled) is net


def test_set_tf32_sets_both_and_none_leaves_them():
    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == 'high'
        set_tf32(None)
        assert torch.backends.cuda.matmul.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == 'highest'
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def test_capturable_only_where_the_optimizer_has_it():
    assert with_capturable(torch.optim.AdamW, {'lr': 1}) == {'capturable': True, 'lr': 1}
    assert with_capturable(torch.optim.Adam, {'capturable': False}) == {'capturable': False}  # explicit kept
    assert with_capturable(torch.optim.SGD, {'lr': 1}) == {'lr': 1}


def test_fallback_reasons():
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert graph_fallback_reason(cuda, False, False, False) is None
    assert graph_fallback_reason(cpu, False, False, False) == 'the step runs on cpu, not CUDA'
    assert 'DDP' in graph_fallback_reason(cuda, True, False, False)
    assert 'GradScaler' in graph_fallback_reason(cuda, False, True, False)
    assert 'reduce-overhead' in graph_fallback_reason(cuda, False, False, True)


def test_static_batch_copies_and_detects_a_shape_change():
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    batch = StaticBatch(lq, gt)
    static = batch.tensors
    assert static[0] is not lq and torch.equal(static[0], lq)
    new = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert batch.matches(*new)
    batch.copy_(*new)
    assert batch.tensors[0] is static[0] and torch.equal(static[0], new[0]) and torch.equal(static[1], new[1])
    assert not batch.matches(torch.rand(2, 3, 8, 16), gt)  # the last batch of an epoch, another crop
    assert not batch.matches(lq.double(), gt)
    assert not batch.matches(lq)
    assert batch.describe(lq, torch.rand(1, 3, 4, 4)) == '2x3x8x8, 1x3x4x4'


def test_learning_rates_become_tensors_and_follow_schedulers_and_assignments():
    params = [nn.Parameter(torch.ones(2))]
    opt = torch.optim.Adam(params, lr=0.5)
    rates = LearningRates(opt, torch.device('cpu'))
    captured = rates.tensors[0]
    assert opt.param_groups[0]['lr'] is captured and captured.item() == 0.5
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    opt.step()
    sched.step()  # torch updates a tensor rate in place
    assert opt.param_groups[0]['lr'] is captured and captured.item() == 0.25
    opt.param_groups[0]['lr'] = 0.125  # basicsr's warm-up assigns floats
    rates.sync()
    assert opt.param_groups[0]['lr'] is captured and captured.item() == 0.125


def test_graphed_step_on_the_cpu_is_never_built_but_its_fallback_says_so_once():
    lines = []
    step = GraphedStep(
        lambda lq, gt: ({}, lq), lambda: None, torch.optim.SGD([nn.Parameter(torch.ones(1))]), lines.append
    )
    step.disable('the batch changed from 2x3x8x8 to 1x3x8x8')
    step.disable('again')
    assert lines == ['train:cuda_graph: the batch changed from 2x3x8x8 to 1x3x8x8; eager steps from now on']
    assert step.forward(torch.ones(1), torch.ones(1)) is None
