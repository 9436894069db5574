"""GraphedForward: which calls are captured and replayed (a stand-in capture on the CPU, the CUDA graph itself in the
``gpu``-marked tests), outputs that survive the next replay, and the eager fallbacks."""

from __future__ import annotations

import pytest
import torch

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.graphed_inference import GraphedForward


class FakeCapture:
    """Stands in for a CUDA graph: records each capture; a replay runs ``fn`` into one static output buffer (as a
    graph writes into its own memory), so a result not copied out would change at the next replay."""

    def __init__(self, fail: bool = False):
        self.captured, self.replays, self.fail = [], 0, False
        self.fail = fail

    def __call__(self, fn, x):
        if self.fail:
            raise RuntimeError('operation not permitted when stream is capturing')
        self.captured.append(tuple(x.shape))
        static_out = fn(x.clone())

        def replay(new):
            self.replays += 1
            static_out.copy_(fn(new))
            return static_out

        return replay


class Doubler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.calls = 0

    def forward(self, x, offset: float = 0.0):
        self.calls += 1
        return x * self.scale + offset


def _graphed(net, capture, **kw):
    lines = []
    return GraphedForward(net.eval(), lines.append, capture=capture, devices=('cpu',), **kw), lines


@torch.no_grad()
def test_a_shape_is_captured_at_its_second_call_and_replayed_after():
    capture = FakeCapture()
    graphed, lines = _graphed(Doubler(), capture)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(graphed(x), 2 * x)  # first sighting: eager
    assert capture.captured == []
    for _ in range(3):
        y = torch.rand(1, 3, 4, 4)
        assert torch.equal(graphed(y), 2 * y)
    assert capture.captured == [(1, 3, 4, 4)] and capture.replays == 3 and lines == []


@torch.no_grad()
def test_results_stay_valid_after_the_next_replay():
    graphed, _ = _graphed(Doubler(), FakeCapture())
    a, b, c = (torch.full((1, 1, 2, 2), v) for v in (1.0, 2.0, 3.0))
    graphed(a)
    first = graphed(b)  # captured, replayed
    second = graphed(c)  # replayed into the same buffer
    assert torch.equal(first, torch.full((1, 1, 2, 2), 4.0)) and torch.equal(second, torch.full((1, 1, 2, 2), 6.0))


@torch.no_grad()
def test_shapes_keyword_arguments_and_autocast_are_graphs_of_their_own():
    capture = FakeCapture()
    graphed, _ = _graphed(Doubler(), capture)
    calls = [
        (torch.rand(1, 3, 4, 4), {}),
        (torch.rand(2, 3, 4, 4), {}),
        (torch.rand(1, 3, 4, 4), {'offset': 1.0}),
    ]
    for x, kw in calls * 2:
        assert torch.allclose(graphed(x, **kw), 2 * x + kw.get('offset', 0.0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for _ in range(2):
            graphed(calls[0][0])
    assert capture.captured == [(1, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4), (1, 3, 4, 4)]


@torch.no_grad()
def test_shapes_past_max_graphs_run_eagerly():
    capture = FakeCapture()
    graphed, _ = _graphed(Doubler(), capture, max_graphs=1)
    for size in (4, 8):
        for _ in range(3):
            x = torch.rand(1, 1, size, size)
            assert torch.equal(graphed(x), 2 * x)
    assert capture.captured == [(1, 1, 4, 4)]


def test_gradients_training_mode_and_other_devices_run_eagerly():
    capture = FakeCapture()
    net = Doubler()
    graphed, _ = _graphed(net, capture)
    x = torch.rand(1, 1, 4, 4)
    for _ in range(3):
        graphed(x)  # gradients enabled
    with torch.no_grad():
        net.train()
        for _ in range(3):
            graphed(x)
        net.eval()
        cuda_only = GraphedForward(net, print, capture=capture)  # the default: CUDA inputs only
        for _ in range(3):
            cuda_only(x)
    assert capture.captured == [] and net.calls == 9


@torch.no_grad()
def test_a_failed_capture_is_said_once_and_every_later_call_runs_eagerly():
    net = Doubler()
    graphed, lines = _graphed(net, FakeCapture(fail=True))
    for _ in range(4):
        x = torch.rand(1, 1, 4, 4)
        assert torch.equal(graphed(x), 2 * x)
    assert lines == [
        'cuda graph: capture failed (RuntimeError: operation not permitted when stream is capturing); '
        'eager forwards from now on'
    ]
    assert graphed.failed and net.calls == 4


@torch.no_grad()
def test_the_replay_follows_weights_updated_in_place():
    net = Doubler()
    graphed, _ = _graphed(net, FakeCapture())
    x = torch.ones(1, 1, 2, 2)
    graphed(x)
    graphed(x)  # captured
    net.scale.fill_(5.0)  # as an optimizer step or EMA update does
    assert torch.equal(graphed(x), torch.full((1, 1, 2, 2), 5.0))


# On a GPU (deselected by default: `-m gpu`)
gpu = pytest.mark.gpu


@gpu
@pytest.mark.parametrize('amp', [None, torch.bfloat16])
def test_cuda_graph_replay_equals_the_eager_forward(amp):
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # bitwise-comparable kernels
    torch.manual_seed(0)
    net = S2Former('small').cuda().eval()
    lines = []
    graphed = GraphedForward(net, lines.append)
    atol = 1e-5 if amp is None else 2e-2

    def compare(step):
        x = torch.rand(2, 3, 64, 96, device='cuda')
        outputs, uncertainties = graphed(x, return_all=True)
        ref_outputs, ref_uncertainties = net(x, return_all=True)
        for a, b in zip([*outputs, *uncertainties], [*ref_outputs, *ref_uncertainties], strict=True):
            assert torch.allclose(a.float(), b.float(), atol=atol), step

    with torch.no_grad(), torch.autocast('cuda', dtype=amp or torch.bfloat16, enabled=amp is not None):
        for step in range(4):
            compare(step)
        assert len(graphed.graphs) == 1 and lines == []
        for p in net.parameters():  # weights changed in place, as by an optimizer step: the replay follows them
            p.mul_(0.9)
        compare('after the update')
    assert len(graphed.graphs) == 1
