"""Device-path correctness: checks runnable on CPU (the ``meta`` device, bf16 autocast) and ``gpu``-marked CUDA
checks (deselected by default; they run where a GPU is present, e.g. ``benchmarks/gpu_checks.sh``)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from s2former_plugin.archs import s2former_blocks as blocks
from s2former_plugin.archs import s2former_ranking as udr
from s2former_plugin.archs.s2former_arch import S2Former


def _reference_grid(ssa, x, constraint):
    """The sampling grid as first written: two full-size cached grids, ``base + (local * scales + offsets)``."""
    b, h, w, _ = x.shape
    ws, heads = ssa.ws, ssa.num_heads
    nh, nw = h // ws, w // ws
    pooled = F.leaky_relu((x * constraint).view(b, nh, ws, nw, ws, -1).mean((2, 4)))
    offsets = blocks.pointwise(pooled, ssa.offset_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
    scales = blocks.pointwise(pooled, ssa.scale_head).view(b, nh, nw, heads, 2).permute(0, 3, 1, 2, 4)
    offsets = (offsets / torch.tensor([nw, nh], dtype=x.dtype)).reshape(b * heads, nh, 1, nw, 1, 2)
    scales = scales.reshape(b * heads, nh, 1, nw, 1, 2)
    ref = torch.stack(torch.meshgrid(torch.linspace(-1, 1, w), torch.linspace(-1, 1, h), indexing='ij'), 0)
    ref = ref.permute(0, 2, 1).unsqueeze(0)
    centres = F.avg_pool2d(ref, kernel_size=ws).reshape(1, 2, nh, 1, nw, 1)
    step_h = torch.arange(ws) * 2 * ws / ws / (h - 1)
    step_w = torch.arange(ws) * 2 * ws / ws / (w - 1)
    step_h, step_w = step_h - step_h.mean(), step_w - step_w.mean()
    local = torch.stack(torch.meshgrid(step_w.repeat(nw), step_h.repeat(nh), indexing='ij'), 0)
    local = local.permute(0, 2, 1).reshape(1, 2, nh, ws, nw, ws)
    base = centres + local
    base, local = (t.permute(0, 2, 3, 4, 5, 1).to(x.dtype) for t in (base, local))
    return (base + (local * scales + offsets)).reshape(b * heads, h, w, 2)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize(('h', 'w'), [(8, 8), (64, 192), (40, 24), (96, 64)])
def test_separable_sampling_grid_is_bitwise_the_full_grid(dtype, h, w):
    torch.manual_seed(0)
    ssa = blocks.SparseSamplingAttention(16, 2, 8).to(dtype)
    x = torch.randn(2, h, w, 16, dtype=dtype)
    constraint = udr.ssa_constraint(torch.randn(2, 16, h, w, dtype=dtype))
    assert torch.equal(ssa.sampling_grid(x, constraint), _reference_grid(ssa, x, constraint))


def test_sampling_grid_cache_holds_per_axis_vectors_only():
    cached = blocks._sampling_axes(1024, 2048, 8, torch.device('cpu'), torch.float32)
    # two full-size grids would be 2 x 1024 x 2048 x 2 x 4 bytes = 32 MiB; per axis it is a few KiB
    assert sum(t.numel() * t.element_size() for t in cached) < 4 * (2 * 1024 + 2 * 2048) + 64


class _HostToDevice(TorchFunctionMode):
    """Records tensors created from host data on, or copied from the host to, a non-CPU device."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, '__name__', str(func))
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name in ('tensor', 'as_tensor') and torch.device(kwargs.get('device') or 'cpu').type != 'cpu':
            self.calls.append(name)
        elif name in ('to', 'cuda') and src is not None and src.device.type == 'cpu':
            if isinstance(out, torch.Tensor) and out.device.type != 'cpu':
                self.calls.append(name)
        return out


@pytest.mark.parametrize('train', [False, True])
def test_warm_forward_copies_nothing_from_the_host(train):
    # The meta device stands in for CUDA: a tensor built from host data per call is a blocking copy there.
    net = S2Former('small').to('meta').train(train)
    x = torch.empty(1, 3, 64, 128, device='meta')
    with torch.set_grad_enabled(train):
        net(x, return_all=True)  # warm-up fills the per-size caches
        with _HostToDevice() as rec:
            net(x, return_all=True)
    assert rec.calls == []


# ----------------------------------------------------------------------------------------------------------------
# Half precision: the rankings and the normalisation statistics stay float32 under autocast
# ----------------------------------------------------------------------------------------------------------------
def test_ranking_guide_keeps_its_top_k_under_bf16_autocast():
    torch.manual_seed(0)
    head = blocks.UncertaintyHead(16)
    with torch.no_grad():  # pre-activations in [-5.2, -3.7]: distinct ELU values in float32, ties in bfloat16
        head.conv1.weight.mul_(0.3)
        head.conv1.bias.fill_(-4.5)
    x = torch.rand(2, 16, 16, 16) * 4 - 2
    with torch.autocast('cpu', dtype=torch.bfloat16):
        guide = head.features(x)
        constraint = udr.ssa_constraint(guide)
    assert guide.dtype == torch.float32
    kept = (constraint == 1).sum((1, 2))  # per image and channel
    assert torch.equal(kept, torch.full_like(kept, int(udr.RANK_KEEP_RATIO * 16 * 16)))


def test_local_modulation_is_the_float32_one_under_bf16_autocast():
    torch.manual_seed(0)
    var = torch.randn(2, 16, 32, 32) * 3
    expected = udr.lr_modulation(var, 8, 0.25)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = udr.lr_modulation(var, 8, 0.25)
    assert torch.equal(got, expected)


@pytest.mark.parametrize('grad', [False, True])
def test_bias_free_layer_norm_is_float32_under_fp16_autocast(grad):
    torch.manual_seed(0)
    norm = blocks.BiasFreeLayerNorm(8)
    x = (torch.randn(2, 8, 4, 4) * 600).half().float().requires_grad_(grad)  # |x| > 256: x^2 overflows float16
    expected = norm(x)
    with torch.autocast('cpu', dtype=torch.float16), torch.set_grad_enabled(grad):
        got = norm(x.half())
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)
    if grad:
        got.square().sum().backward()
        assert torch.isfinite(x.grad).all()


def test_local_reconstruction_logits_do_not_overflow_fp16():
    torch.manual_seed(0)
    lr = blocks.LocalReconstruction(16, 1, 8)
    with torch.no_grad():
        lr.qkv.weight.mul_(400)  # q.k ~ 1e5 unscaled: inf in float16 (the scale is folded into the modulation)
    x = torch.randn(1, 8, 8, 16)
    modulation = udr.lr_modulation(torch.randn(1, 16, 8, 8), 8, lr.scale)
    with torch.autocast('cpu', dtype=torch.float16), torch.no_grad():
        out = lr(x, modulation)
    assert torch.isfinite(out).all()


def test_network_trains_under_bf16_autocast():
    torch.manual_seed(0)
    net = S2Former('small')
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outputs, uncertainties = net(x, return_all=True)
        loss = sum(o.float().mean() + u.float().mean() for o, u in zip(outputs, uncertainties))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    with torch.no_grad():
        reference = net(x)
    assert (outputs[0].float() - reference).abs().mean() < 0.05


# ----------------------------------------------------------------------------------------------------------------
# Process groups on a GPU host (CUDA mocked: the choices are made before any CUDA call)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def gpu_host(monkeypatch):
    """Two visible GPUs; records ``set_device`` and ``init_process_group`` instead of calling them."""
    import torch.distributed as dist

    calls = {'set_device': []}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda i: calls['set_device'].append(i))
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, **kw: calls.setdefault('backend', backend))
    return calls


def test_process_group_backend_is_device_aware(gpu_host, monkeypatch):
    from s2former_plugin import compat

    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    compat.init_dist('pytorch')
    # CPU tensors (a num_gpu: 0 run, the CPU-side reductions) go through gloo, CUDA tensors through NCCL
    assert gpu_host == {'set_device': [1], 'backend': 'cpu:gloo,cuda:nccl'}


def test_more_ranks_than_gpus_stops_every_rank(gpu_host, monkeypatch):
    from basicsr.models.base_model import BaseModel

    from s2former_plugin import compat

    monkeypatch.setenv('RANK', '2')
    monkeypatch.setenv('LOCAL_RANK', '2')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '3')
    compat.init_dist('pytorch')
    assert gpu_host['set_device'] == []  # not GPU 2 % 2 = 0, shared with rank 0
    for rank in (0, 2):  # every rank reaches the same verdict, so none waits for the others
        monkeypatch.setenv('LOCAL_RANK', str(rank))
        model = BaseModel({'num_gpu': 1, 'is_train': True, 'dist': True})
        with pytest.raises(RuntimeError, match='3 processes on this node but 2 visible GPU'):
            model.model_to_device(torch.nn.Linear(1, 1))
    cpu_model = BaseModel({'num_gpu': 0, 'is_train': True, 'dist': False})
    assert isinstance(cpu_model.model_to_device(torch.nn.Linear(1, 1)), torch.nn.Linear)  # CPU runs unaffected


# ----------------------------------------------------------------------------------------------------------------
# infer: out of GPU memory on one image (simulated on CPU by a network that refuses large inputs)
# ----------------------------------------------------------------------------------------------------------------
class _MemoryLimited(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, max_pixels: int):
        super().__init__()
        self.net, self.max_pixels = net, max_pixels

    def forward(self, x, return_all=False):
        if x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return self.net(x, return_all)


@pytest.fixture()
def photos(tmp_path):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'big.png'), rng.integers(0, 256, (150, 130, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / 'in' / 'small.png'), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return tmp_path


def _infer(monkeypatch, root, out, max_pixels, *extra):
    from s2former_plugin import infer

    torch.manual_seed(0)
    net = S2Former('small').eval()
    from s2former_plugin.inference import LoadedNetwork

    loaded = LoadedNetwork(_MemoryLimited(net, max_pixels), 'test net', '--config')
    monkeypatch.setattr(infer, 'open_network', lambda w, c: loaded)
    argv = ['--weights', 'unused.pth', '--input', str(root / 'in'), '--output', str(root / out), '--device', 'cpu']
    return infer.main([*argv, '--config', 'unused.yml', '--no-progress', '--tile-overlap', '8', *extra])


def test_infer_retries_an_out_of_memory_image_with_smaller_tiles(photos, monkeypatch, capsys):
    assert _infer(monkeypatch, photos, 'out', 96 * 96, '--tile', '0') == 0
    err = capsys.readouterr().err
    assert 'out of GPU memory with tile off on a 130x150 image: cache freed, retrying with tile 75' in err
    assert _infer(monkeypatch, photos, 'direct', 10**9, '--tile', '75') == 0  # what the retry must equal
    for name in ('big.png', 'small.png'):
        assert (photos / 'out' / name).read_bytes() == (photos / 'direct' / name).read_bytes()


def test_infer_skips_by_name_what_no_tile_fits_and_goes_on(photos, monkeypatch, capsys):
    assert _infer(monkeypatch, photos, 'out', 10 * 10, '--tile', '0') == 1
    err = capsys.readouterr().err
    assert f'out of GPU memory even with tile 75, skipped: {photos / "in" / "big.png"}' in err
    assert sorted(p.name for p in (photos / 'out').iterdir()) == ['small.png']


# ----------------------------------------------------------------------------------------------------------------
# Benchmark on GPU: the calibrated step time is the training's
# ----------------------------------------------------------------------------------------------------------------
class _FakeCudaModel:
    """Training steps as cuDNN's benchmark mode makes them: the first two slow (algorithm search), then fast."""

    device = torch.device('cuda')

    def __init__(self, steps: list):
        self.steps = steps

    def feed_data(self, data):
        pass

    def optimize_parameters(self, it):
        import time

        self.steps.append(torch.backends.cudnn.benchmark)
        time.sleep(0.3 if len(self.steps) <= 2 else 0.01)


def test_step_time_calibration_matches_training_on_cuda(monkeypatch):
    import basicsr.models

    from s2former_plugin.benchmark import train_child

    steps = []
    monkeypatch.setattr(basicsr.models, 'build_model', lambda opt: _FakeCudaModel(steps))
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: None)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    topt = {
        'train': {'total_iter': None, 'scheduler': {'type': 'MultiStepLR'}},
        'datasets': {'train': {'batch_size_per_gpu': 1, 'gt_size': 8}},
    }
    step = train_child.calibrate({'net': topt}, steps=2)['net']
    assert len(steps) == train_child.CALIBRATION_WARMUP['cuda'] + 2
    assert all(steps), 'calibrated without the cudnn.benchmark mode basicsr.train trains with'
    assert step < 0.2, f'{step:.2f} s/step: the algorithm search was timed as a training step'


def test_cpu_time_is_reported_on_cpu_only(monkeypatch):
    from s2former_plugin import benchmark

    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: None)
    calls = {'f': lambda: sum(range(1000))}
    assert benchmark.time_calls(calls, runs=2, device='cpu')['f']['cpu_ms'] is not None
    assert benchmark.time_calls(calls, runs=2, device='cuda')['f']['cpu_ms'] is None


def test_deterministic_option(monkeypatch, tmp_path):
    from basicsr.models import build_model
    from helpers import parsed_options, tiny_s2former_options

    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)  # as basicsr.train sets it
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', False)
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    try:
        build_model({**opt, 'deterministic': True})
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    finally:
        torch.use_deterministic_algorithms(False)
    with pytest.raises(ValueError, match=r"deterministic: must be true or false \(got 'yes please'\)"):
        build_model({**opt, 'deterministic': 'yes please'})


# ----------------------------------------------------------------------------------------------------------------
# On a GPU (deselected by default: `-m gpu`; benchmarks/gpu_checks.sh runs them)
# ----------------------------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.mark.gpu
@cuda
def test_cuda_float64_equals_cpu():
    torch.manual_seed(0)
    net = S2Former('small').double().eval()
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x, return_all=True)
        got = net.cuda()(x.cuda(), return_all=True)
    for a, b in zip(expected[0] + expected[1], got[0] + got[1]):
        assert torch.allclose(a, b.cpu(), atol=1e-10, rtol=0)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize('train', [False, True])
def test_cuda_warm_forward_never_synchronises(train):
    torch.manual_seed(0)
    net = S2Former('small').cuda().train(train)
    x = torch.rand(2, 3, 64, 128, device='cuda')
    with torch.set_grad_enabled(train):
        net(x, return_all=True)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')  # any blocking host-device transfer raises
        try:
            outputs, uncertainties = net(x, return_all=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(outputs[0]).all()


@pytest.mark.gpu
@cuda
def test_cuda_graph_capture_replays_the_forward(monkeypatch):
    # TF32 off: with it, the eager and the captured forward may run different cuDNN algorithms (seen 3e-4 apart on an
    # H200), which would hide a stale capture no better than a loose tolerance
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    torch.manual_seed(0)
    net = S2Former('small').cuda().eval()
    static_x = torch.rand(1, 3, 64, 64, device='cuda')
    with torch.no_grad():
        first = net(static_x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up on a side stream fills the caches, as capture requires
                net(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = net(static_x)
        x = torch.rand(1, 3, 64, 64, device='cuda')
        static_x.copy_(x)
        graph.replay()
        eager = net(x)
        diff = (static_out - eager).abs().max().item()
        assert diff < 1e-5, f'replayed graph vs eager forward: max difference {diff:.2e}'
        assert (static_out - first).abs().max().item() > 1e-2  # the replay read the new input


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_training_step(dtype):
    torch.manual_seed(0)
    net = S2Former('small').cuda()
    x = torch.rand(2, 3, 64, 64, device='cuda')
    scaler = torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)
    with torch.autocast('cuda', dtype=dtype):
        outputs, uncertainties = net(x, return_all=True)
        loss = sum(o.float().mean() + u.float().mean() for o, u in zip(outputs, uncertainties))
    scaler.scale(loss).backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    with torch.no_grad():
        reference = net(x)
    assert (outputs[0].float() - reference).abs().mean() < 0.05


@pytest.mark.gpu
@cuda
def test_infer_cli_on_cuda_with_fp16_and_cuda_graph(tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np
    from helpers import REPO

    torch.manual_seed(0)
    torch.save(S2Former('small').state_dict(), tmp_path / 'net.pth')
    (tmp_path / 'in').mkdir()
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), img)
    outs = {}
    for name, extra in (('fp32', []), ('fp16', ['--fp16']), ('graphed', ['--cuda-graph'])):
        argv = ['-m', 's2former_plugin.infer', '--weights', str(tmp_path / 'net.pth'), '--input', str(tmp_path / 'in')]
        argv += ['--output', str(tmp_path / name), '--device', 'cuda', '--no-progress', '--tile', '64']
        argv += ['--tile-overlap', '16', *extra]
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ('cuda, fp16, tile' in proc.stdout) == (name == 'fp16')
        outs[name] = cv2.imread(str(tmp_path / name / 'a.png')).astype(np.float64)
        assert 'warning' not in proc.stderr, proc.stderr[-2000:]
    assert outs['fp16'].shape == img.shape and np.abs(outs['fp16'] - outs['fp32']).mean() < 3.0
    # 2x2 tiles of 64 (one shape, replayed from the second tile on): the image of the eager run, to a grey level
    assert np.abs(outs['graphed'] - outs['fp32']).max() <= 1
