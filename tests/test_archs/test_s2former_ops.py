"""The speed-only ops: the switch and its environment variable, fast and plain paths agreeing op by op and on the
whole network (float64 to ~1e-12, float32 to a stated tolerance), official float64 parity on both paths, and an
ONNX export with the plain ops."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import run
from torch import nn

from s2former_plugin.archs import s2former_blocks as blocks
from s2former_plugin.archs import s2former_ops as ops
from s2former_plugin.archs import s2former_ranking as udr
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.official import build_from_official, official_key_to_ours

PARITY = Path(__file__).resolve().parents[1] / 'data'  # copies of ../shared/fixtures/official_parity
PATHS = [True, False]  # fast, plain
# float32: the same maths in another operation order (two-pass vs Tensor.var, SDPA vs the formula, a fused kernel)
F32 = dict(rtol=1e-5, atol=1e-6)
F64 = dict(rtol=1e-12, atol=1e-12)


def both_paths(fn):
    """``fn()`` on the fast path, then on the plain one."""
    with ops.fast_ops(True):
        fast = fn()
    with ops.fast_ops(False):
        plain = fn()
    return fast, plain


def grads_of(fn, *tensors):
    """``fn(*tensors)`` and the gradients of ``sum(out * probe)`` w.r.t. ``tensors`` (a fixed random probe)."""
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    grads = torch.autograd.grad((out * probe).sum(), tensors)
    return [out.detach(), *grads]


def assert_all_close(a, b, **tol):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **tol)


# ------------------------------------------------------------------------------------------------------ the switch
def test_switch_and_context_manager():
    assert ops.fast_ops_enabled()  # the default
    try:
        ops.set_fast_ops(False)
        assert not ops.fast_ops_enabled()
        with ops.fast_ops(True):
            assert ops.fast_ops_enabled()
            with pytest.raises(RuntimeError), ops.fast_ops(False):
                assert not ops.fast_ops_enabled()
                raise RuntimeError
            assert ops.fast_ops_enabled()  # restored after an exception too
        assert not ops.fast_ops_enabled()
    finally:
        ops.set_fast_ops(True)


def _import_with_env(value: str) -> subprocess.CompletedProcess:
    """Import the ops module (the one under test) in a fresh interpreter with ``S2FORMER_FAST_OPS=value``."""
    root = Path(ops.__file__).resolve().parents[2]
    code = 'from s2former_plugin.archs import s2former_ops as o; print(o.fast_ops_enabled())'
    return run(['-c', code], cwd=root, timeout=120, PYTHONPATH=str(root), **{ops.ENV_VAR: value})


@pytest.mark.parametrize(('value', 'expected'), [('0', 'False'), ('1', 'True'), ('', 'True')])
def test_environment_variable(value, expected):
    run = _import_with_env(value)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected


def test_environment_variable_typo_is_an_error():
    run = _import_with_env('of')
    assert run.returncode != 0
    assert f"{ops.ENV_VAR}='of'" in run.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------- op by op
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_linear_gelu_paths_agree(dtype):
    torch.manual_seed(0)
    fc = nn.Linear(16, 64).to(dtype)
    x = torch.randn(2, 5, 7, 16, dtype=dtype)
    tol = F32 if dtype == torch.float32 else F64
    with torch.no_grad():  # the fused kernel runs at inference only
        fast, plain = both_paths(lambda: ops.linear_gelu(x, fc))
    torch.testing.assert_close(fast, plain, **tol)
    fast, plain = both_paths(lambda: grads_of(lambda t: ops.linear_gelu(t, fc), x))
    assert_all_close(fast, plain, **tol)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bias_free_layer_norm_paths_agree(dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 24, dtype=dtype) * 3 + 1  # not centred: the norm does not subtract the mean
    weight = torch.rand(24, dtype=dtype) + 0.5
    tol = F32 if dtype == torch.float32 else F64
    with torch.no_grad():
        fast, plain = both_paths(lambda: ops.bias_free_layer_norm(x, weight, 1e-5))
    torch.testing.assert_close(fast, plain, **tol)
    # with autograd: the hand-written backward against autograd through the plain formula
    fast, plain = both_paths(lambda: grads_of(lambda t, w: ops.bias_free_layer_norm(t, w, 1e-5), x, weight))
    assert_all_close(fast, plain, **tol)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('with_bias', [False, True])
def test_attention_paths_agree(dtype, with_bias):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 16, 8, dtype=dtype) for _ in range(3))
    bias = torch.randn(1, 2, 16, 16, dtype=dtype) if with_bias else None
    tol = F32 if dtype == torch.float32 else F64
    with torch.no_grad():
        fast, plain = both_paths(lambda: ops.attention(q, k, v, bias))
    torch.testing.assert_close(fast, plain, **tol)
    fast, plain = both_paths(lambda: grads_of(lambda *t: ops.attention(*t, bias), q, k, v))
    assert_all_close(fast, plain, **tol)


@pytest.mark.parametrize('n', [1, 2, 5, 64, 99, 4096])
def test_topk_mask_paths_agree_eager_and_traced(n):
    scores = torch.randn(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    k = int(udr.RANK_KEEP_RATIO * n)
    ref = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        ref.scatter_(-1, scores.topk(k, dim=-1).indices, True)
    for fast in PATHS:
        with ops.fast_ops(fast):
            assert torch.equal(udr.topk_mask(scores), ref), fast
            assert torch.equal(ops._traced_topk_mask(scores, udr.RANK_KEEP_RATIO), ref), fast


def test_topk_mask_traced_graph_follows_the_size_on_both_paths():
    traced_at, run_at = torch.randn(2, 3, 64), torch.randn(2, 3, 99)
    for fast in PATHS:
        with ops.fast_ops(fast):
            graph = torch.jit.trace(udr.topk_mask, traced_at)
            assert torch.equal(graph(run_at), udr.topk_mask(run_at)), fast
            assert graph(run_at).sum(-1).eq(int(0.8 * 99)).all(), fast


# ---------------------------------------------------------------------------------------------- whole network
@pytest.fixture(scope='module')
def small_net() -> S2Former:
    torch.manual_seed(0)
    return S2Former(preset='small').eval()


def _all_maps(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outputs, uncertainties = net(x, return_all=True)
    return [*outputs, *uncertainties]


def test_small_network_paths_agree_float64(small_net):
    net = copy.deepcopy(small_net).double()
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # padded inside
    with torch.no_grad():
        fast, plain = both_paths(lambda: _all_maps(net, x))
    assert_all_close(fast, plain, **F64)


def test_small_network_gradients_agree_float64(small_net):
    net = copy.deepcopy(small_net).double().train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def step():
        net.zero_grad()
        maps = _all_maps(net, x)
        sum(m.square().mean() for m in maps).backward()
        return [m.detach() for m in maps] + [p.grad.clone() for p in net.parameters()]

    fast, plain = both_paths(step)
    assert_all_close(fast, plain, **F64)


def test_small_network_paths_agree_float32(small_net):
    """Float32: the two paths round differently, which can flip a near-tied ranking decision (as thread counts do
    for the official code, ~3e-3): on average they agree to 1e-6 (measured ~1e-7), every value to 5e-3."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast, plain = both_paths(lambda: _all_maps(small_net, x))
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(fast, plain, strict=True)])
    assert diff.mean() <= 1e-6 and diff.max() <= 5e-3, (diff.mean(), diff.max())


# ---------------------------------------------------------------------------------------- official parity, both paths
@pytest.fixture(scope='module')
def official_net64() -> S2Former:
    state = torch.load(PARITY / 'official_small_seed1.pt', weights_only=True)
    return build_from_official(state['config'], state['state_dict']).double()


@pytest.mark.parametrize('fast', PATHS)
def test_official_float64_parity(official_net64, fast):
    fixture = torch.load(PARITY / 'official_small_seed1_float64.pt', weights_only=True)
    net = official_net64.eval()
    for case in fixture['cases']:
        with torch.no_grad(), ops.fast_ops(fast):
            ours = _all_maps(net, case['input'])
        assert_all_close(ours, [*case['outputs'], *case['uncertainties']], rtol=0, atol=1e-12)


@pytest.mark.parametrize('fast', PATHS)
def test_official_float64_gradient_parity(official_net64, fast):
    fixture = torch.load(PARITY / 'official_small_seed1_float64_grads.pt', weights_only=True)
    net = official_net64.train()
    net.zero_grad()
    with ops.fast_ops(fast):
        maps = _all_maps(net, fixture['input'])
        loss = sum((m * p).mean() for m, p in zip(maps, fixture['probes'], strict=True))
        loss.backward()
    torch.testing.assert_close(loss.detach(), fixture['loss'], rtol=1e-13, atol=0)
    ours = dict(net.named_parameters())
    for name, grad in fixture['grads'].items():
        torch.testing.assert_close(ours[official_key_to_ours(name)].grad, grad, rtol=0, atol=1e-13, msg=name)


# ------------------------------------------------------------------------------------------------ export, plain ops
def test_onnx_export_with_plain_ops(small_net, tmp_path):
    pytest.importorskip('onnxruntime')
    from s2former_plugin.onnx_backend import OnnxNetwork, export_onnx

    path = str(tmp_path / 'plain.onnx')
    with ops.fast_ops(False):
        export_onnx(small_net, path, outputs='final')
    onnx_net = OnnxNetwork(path, threads=1)
    for size in [(64, 64), (37, 53)]:
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
        with torch.no_grad(), ops.fast_ops(False):
            ref = small_net(x)
        got = onnx_net(x)
        assert got.shape == ref.shape and (got - ref).abs().mean() <= 1e-5, size


# ------------------------------------------------------------------------------------ autocast guards, both paths
@pytest.mark.parametrize('fast', PATHS)
def test_float32_guards_hold_on_both_paths(fast):
    """The autocast float32 guards are not speed tricks: the bias-free LN statistics and the ranking stay float32
    under autocast on the plain path too (a float16 variance overflows for |x| > 256; bfloat16 ELU values tie)."""
    torch.manual_seed(0)
    norm = blocks.BiasFreeLayerNorm(8)
    x = (torch.randn(2, 8, 4, 4) * 600).half().float()
    head = blocks.UncertaintyHead(16)
    with torch.no_grad():  # pre-activations in [-5.2, -3.7]: distinct ELU values in float32, ties in bfloat16
        head.conv1.weight.mul_(0.3)
        head.conv1.bias.fill_(-4.5)
    feats = torch.rand(2, 16, 16, 16) * 4 - 2
    with ops.fast_ops(fast), torch.no_grad():
        expected = norm(x)
        with torch.autocast('cpu', dtype=torch.float16):
            got = norm(x.half())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            constraint = udr.ssa_constraint(head.features(feats))
            out = S2Former(preset='small').eval()(torch.rand(1, 3, 64, 64))
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)
    kept = (constraint == 1).sum((1, 2))
    assert torch.equal(kept, torch.full_like(kept, int(udr.RANK_KEEP_RATIO * 16 * 16)))
    assert torch.isfinite(out).all()
