"""Speed, memory and complexity of the S2Former network, optionally against the official implementation.

Prints figures, never asserts. Example (the official files extracted from Owen718/UDR-S2Former_deraining into a
folder of your own; nothing of them is in this repository)::

    python benchmarks/arch_speed.py --official PATH/TO/official_s2former

CPU runs use ``--threads`` threads (2 by default); with CUDA, GPU fp32, bf16-autocast and fp16-autocast latencies
follow, for inference and for the training step. ``--no-train`` times inference only (the size-scaling runs);
``--profile`` (CPU) splits each time into multiply-add kernels and the rest.
"""

# ruff: noqa: B023  (the lambdas built in loops are called within the same iteration)
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.benchmark.measure import count_macs, measure_speed, time_calls, training_step
from s2former_plugin.official import ours_state_dict_to_official


# ---------------------------------------------------------------------------------------------- helpers
# Timing, resident-memory and multiply-add counting are s2former_plugin.benchmark's (time_calls, measure_speed,
# count_macs): one way of measuring for this script and the arch-comparison benchmark.
def load() -> str:
    return 'load average ' + ' '.join(f'{v:.2f}' for v in os.getloadavg())


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory allocated during one call (CUDA allocator peak; on CPU from the profiler's
    per-op allocation records, replayed in time order)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # '[memory]' rows are allocations/frees outside any op; ops carry their own (self) allocations.
    records = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == '[memory]' else e.self_cpu_memory_usage)
        for e in prof.events()
    )
    level = peak = 0
    for _, nbytes in records:
        level += nbytes
        peak = max(peak, level)
    return peak / 2**20


# Kernels whose work is multiply-adds (convolutions, matmuls, attention, their backward): both implementations run
# the same ones, so the ratio to the official code can only grow through the rest (element-wise ops, copies,
# normalisation, softmax, ranking, resampling).
_GEMM_KERNELS = ('convolution', 'conv2d', 'mm', 'linear_pointwise', 'scaled_dot_product')


def is_gemm_kernel(key: str) -> bool:
    """Whether a profiler event (op name) is a multiply-add kernel, :data:`_GEMM_KERNELS`."""
    return any(k in key for k in _GEMM_KERNELS)


def self_time_share(events) -> float:
    """Share of the events' self CPU time (``key``, ``self_cpu_time_total``) spent in multiply-add kernels."""
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if is_gemm_kernel(e.key)) / total


def gemm_share(fn: Callable[[], object], calls: int = 3) -> float:
    """Median over ``calls`` profiled calls (torch.profiler, CPU) of the share of self CPU time spent in
    :data:`_GEMM_KERNELS` (the profiler's per-op overhead inflates both parts; the share is what is used)."""
    from torch.profiler import ProfilerActivity, profile

    shares = []
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        shares.append(self_time_share(prof.key_averages()))
    return sorted(shares)[len(shares) // 2]


def print_gemm_split(shares: dict[str, float], ms: dict[str, float], ours: str) -> None:
    """Each net's CPU time ``ms`` split by its share into multiply-add kernels and the rest, and the speed-up over
    the official code that ours would reach with none of the rest (the ceiling of what removing overhead gives)."""
    for name, share in shares.items():
        print(f'    {name:16s} conv/matmul/attention {share:4.0%} ({share * ms[name]:6.0f} ms), rest {1 - share:4.0%}')
    if 'official' in shares:
        ceiling = ms['official'] / (shares[ours] * ms[ours])
        print(f"    ceiling: official / ours' multiply-add time = {ceiling:.2f}x ({ours})")


def matmul_gflops(device: torch.device, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = time_calls({'mm': lambda: a @ b}, runs=5, warmup=2, device=device.type)['mm']['latency_ms'] / 1e3
    return 2 * n**3 / t / 1e9


def load_official(folder: str) -> object:
    """Import the official ``UDR_S2Former`` module from a user-extracted copy (CPU: inject ``device``)."""
    folder = str(Path(folder).resolve())
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location('UDR_S2Former', Path(folder) / 'UDR_S2Former.py')
    module = importlib.util.module_from_spec(spec)
    module.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        spec.loader.exec_module(module)
    return module


def build_official(module, size: int, state_dict: dict, device: torch.device) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):
        net = module.Transformer(img_size=(size, size))
    net.load_state_dict(ours_state_dict_to_official(state_dict), strict=True)
    return net.to(device).eval()


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--official', help='folder holding UDR_S2Former.py, base_net_snow.py, condconv.py')
    parser.add_argument('--preset', default='paper')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--train-batch', type=int, default=4)
    parser.add_argument('--train-size', type=int, default=128)
    parser.add_argument('--train-runs', type=int, default=3)
    parser.add_argument('--no-gpu', action='store_true')
    parser.add_argument('--no-cpu', action='store_true', help='CUDA figures only')
    parser.add_argument('--no-train', action='store_true', help='inference figures only')
    parser.add_argument(
        '--profile',
        action='store_true',
        help='CPU: split each time into convolution/matmul/attention kernels and the rest (torch.profiler)',
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device('cpu')
    ours = S2Former(preset=args.preset).eval()
    official = load_official(args.official) if args.official else None
    print(f'torch {torch.__version__}, CPU threads {args.threads}, preset {args.preset}, {load()}')

    macs = count_macs(_ReturnAll(ours), 256)['macs']  # all ten maps, as the official forward computes them
    params = sum(p.numel() for p in ours.parameters())
    print(f'params {params:,}; multiply-adds at 1x3x256x256: {macs / 1e9:.2f} G (return_all forward)')
    devices = [] if args.no_cpu else [cpu]
    devices += [torch.device('cuda')] if torch.cuda.is_available() and not args.no_gpu else []
    for device in devices:
        peak = matmul_gflops(device)
        print(f'\n== {device.type}: 2048x2048 fp32 matmul {peak:.1f} GFLOP/s')
        net = ours.to(device)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size, device=device)
            size_macs = macs * (size / 256) ** 2
            modes = precision_modes(device)
            ref = build_official(official, size, net.state_dict(), device) if official else None
            for mode, ctx in modes.items():
                with ctx():
                    nets = {'ours forward(x)': net, 'ours return_all': _ReturnAll(net)}
                    if ref is not None:
                        nets['official'] = ref
                        with torch.no_grad():
                            a, b = net(x, return_all=True), ref(x)
                        diff = max_diff(a[0] + a[1], b[0] + b[1])
                        print(f'  {size}x{size} {mode}: max |ours - official| over 10 maps = {diff:.2e}')
                    res = measure_speed(nets, size, args.runs, device.type, warmup=args.warmup)
                    print(f'  ({load()})')
                    for name, module in nets.items():
                        with torch.no_grad():
                            mem = peak_memory_mib(lambda: module(x), device)
                        ms, rss = res[name]['latency_ms'], res[name]['peak_mem_mb']
                        gflops = 2 * size_macs / ms / 1e6
                        print(
                            f'  {size}x{size} {mode:13s} {name:16s} {ms:9.1f} ms{_cpu(res[name]["cpu_ms"])}'
                            f'  peak tensors {mem:6.0f} MiB, rss +{rss if rss is not None else float("nan"):5.0f} MiB'
                            f'  {gflops:5.1f} GFLOP/s ({100 * gflops / peak:.0f}% of matmul)'
                        )
                    if args.profile and device.type == 'cpu':
                        with torch.no_grad():
                            shares = {name: gemm_share(lambda: module(x)) for name, module in nets.items()}
                        print_gemm_split(shares, {n: r['cpu_ms'] for n, r in res.items()}, 'ours return_all')
                    if ref is not None:
                        t_ref, c_ref = res['official']['latency_ms'], res['official']['cpu_ms']
                        t_all, c_all = res['ours return_all']['latency_ms'], res['ours return_all']['cpu_ms']
                        t_fwd, c_fwd = res['ours forward(x)']['latency_ms'], res['ours forward(x)']['cpu_ms']
                        by_cpu = f'; by CPU time {c_ref / c_all:.2f}x, {c_ref / c_fwd:.2f}x' if c_ref else ''
                        print(
                            f'  speed-up vs official: {t_ref / t_all:.2f}x (return_all), {t_ref / t_fwd:.2f}x'
                            f' (forward(x)){by_cpu}'
                        )
            del ref

        if args.no_train:
            continue
        # training step: forward + backward of the sum of the means of all ten maps, same weights, same input
        for mode, ctx in precision_modes(device).items():
            with ctx():
                train_step(net, official, device, mode, args)
        net.eval()


def train_step(net: S2Former, official, device: torch.device, mode: str, args: argparse.Namespace) -> None:
    """Time forward + backward of the sum of the means of all ten maps, ours and official, same weights and input."""
    b, s = args.train_batch, args.train_size
    nets = {'ours': _ReturnAll(net)}
    if official:
        nets['official'] = build_official(official, s, net.state_dict(), device)
    res = measure_speed(nets, s, args.train_runs, device.type, batch=b, grad=True)
    ours_ms, ours_cpu = res['ours']['latency_ms'], res['ours']['cpu_ms']
    print(f'\n  ({load()})')
    print(f'  train fwd+bwd {b}x3x{s}x{s} {mode}: ours {ours_ms:.1f} ms{_cpu(ours_cpu)}', end='')
    if official:
        ref = nets['official']
        # the gradients of the last timed step (same input for both)
        ours_grads = ours_state_dict_to_official({n: p.grad for n, p in net.named_parameters()})
        ref_grads = dict(ref.named_parameters())
        diffs = [(ours_grads[n] - p.grad).abs().max().item() for n, p in ref_grads.items()]
        scale = max(p.grad.abs().max().item() for p in ref_grads.values())
        t_ref, c_ref = res['official']['latency_ms'], res['official']['cpu_ms']
        by_cpu = f' (by CPU time {c_ref / ours_cpu:.2f}x)' if c_ref else ''
        print(
            f', official {t_ref:.1f} ms{_cpu(c_ref)}, speed-up {t_ref / ours_ms:.2f}x{by_cpu};'
            f' max |grad diff| {max(diffs):.2e} (largest grad {scale:.2e})'
        )
        del ref
    else:
        print()
    if args.profile and device.type == 'cpu':
        x = torch.rand(b, 3, s, s, device=device)
        shares = {name: gemm_share(lambda: training_step(module, x)) for name, module in nets.items()}
        print_gemm_split(shares, {n: r['cpu_ms'] for n, r in res.items()}, 'ours')


def precision_modes(device: torch.device) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    """fp32 everywhere; on CUDA also bf16 and fp16 autocast (the ``train: amp`` settings)."""
    modes: dict[str, Callable[[], contextlib.AbstractContextManager]] = {'fp32': contextlib.nullcontext}
    if device.type == 'cuda':
        modes['bf16-autocast'] = lambda: torch.autocast('cuda', dtype=torch.bfloat16)
        modes['fp16-autocast'] = lambda: torch.autocast('cuda', dtype=torch.float16)
    return modes


def _cpu(ms: float | None) -> str:
    """The process CPU time, measured on CPU only (on CUDA it is the host's launching and waiting)."""
    return '' if ms is None else f' (cpu {ms:7.0f} ms)'


class _ReturnAll(nn.Module):
    def __init__(self, net: S2Former):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, return_all=True)


if __name__ == '__main__':
    main()
