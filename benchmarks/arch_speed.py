"""Speed, memory and complexity of the S2Former network, optionally against the official implementation.

Prints figures, never asserts. Example (the official files extracted from Owen718/UDR-S2Former_deraining into a
folder of your own; nothing of them is in this repository)::

    python benchmarks/arch_speed.py --official /tmp/official_s2former

CPU runs use ``--threads`` threads (2 by default); with CUDA, GPU fp32 and bf16-autocast latencies follow.
"""

# ruff: noqa: B023  (the lambdas built in loops are called within the same iteration)
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.official import ours_state_dict_to_official


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> float:
    return median_times({'fn': fn}, device, runs, warmup)['fn']


def median_times(fns: dict[str, Callable[[], object]], device: torch.device, runs: int, warmup: int) -> dict:
    """Median latency of each callable; the callables take turns run by run, so a busy machine slows all alike.
    The process CPU time of each call (all threads) is kept in ``median_times.cpu``: with one thread it is the
    compute time alone, robust to other processes' load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    median_times.cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    return {name: statistics.median(ts) for name, ts in times.items()}


def load() -> str:
    return 'load average ' + ' '.join(f'{v:.2f}' for v in os.getloadavg())


def peak_rss_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory above the level before the call (Linux: VmHWM after resetting it via clear_refs;
    includes allocator caching and oneDNN scratch buffers, unlike the tensor-level figure). NaN elsewhere."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS to the current RSS

        def read(key: str) -> float:
            with open('/proc/self/status') as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

        base = read('VmRSS:')
        fn()
        return read('VmHWM:') - base
    except OSError:
        return float('nan')


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


def matmul_gflops(device: torch.device, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = median_time(lambda: a @ b, device, runs=5, warmup=2)
    return 2 * n**3 / t / 1e9


def count_macs(net: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    """Multiply-adds (fvcore/mmengine convention: one MAC counts as one "flop") of the full forward."""
    from mmengine.analysis import FlopAnalyzer

    def sdpa_handle(inputs, outputs):
        q, k, v = (i.type().sizes() for i in inputs[:3])
        batch = 1
        for s in q[:-2]:
            batch *= s
        return batch * q[-2] * k[-2] * (q[-1] + v[-1])

    class AllOutputs(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            outputs, uncertainties = self.net(x, return_all=True)
            return tuple(outputs + uncertainties)

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        analyzer = FlopAnalyzer(AllOutputs(net), (x,)).set_op_handle('aten::scaled_dot_product_attention', sdpa_handle)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = analyzer.total()
    return macs, sum(p.numel() for p in net.parameters())


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
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device('cpu')
    ours = S2Former(preset=args.preset).eval()
    official = load_official(args.official) if args.official else None
    print(f'torch {torch.__version__}, CPU threads {args.threads}, preset {args.preset}, {load()}')

    macs, params = count_macs(ours, torch.rand(1, 3, 256, 256))
    print(f'params {params:,}; multiply-adds at 1x3x256x256: {macs / 1e9:.2f} G (return_all forward)')
    devices = [cpu] + ([torch.device('cuda')] if torch.cuda.is_available() and not args.no_gpu else [])
    for device in devices:
        peak = matmul_gflops(device)
        print(f'\n== {device.type}: 2048x2048 fp32 matmul {peak:.1f} GFLOP/s')
        net = ours.to(device)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size, device=device)
            size_macs = macs * (size / 256) ** 2
            modes = {'fp32': contextlib.nullcontext}
            if device.type == 'cuda':
                modes['bf16-autocast'] = lambda: torch.autocast('cuda', dtype=torch.bfloat16)
            ref = build_official(official, size, net.state_dict(), device) if official else None
            for mode, ctx in modes.items():
                with torch.no_grad(), ctx():
                    runs = {
                        'ours forward(x)': lambda: net(x),
                        'ours return_all': lambda: net(x, return_all=True),
                    }
                    if ref is not None:
                        runs['official'] = lambda: ref(x)
                        a, b = net(x, return_all=True), ref(x)
                        diff = max_diff(a[0] + a[1], b[0] + b[1])
                        print(f'  {size}x{size} {mode}: max |ours - official| over 10 maps = {diff:.2e}')
                    times = median_times(runs, device, args.runs, args.warmup)
                    cpu_times = median_times.cpu
                    print(f'  ({load()})')
                    for name, fn in runs.items():
                        mem = peak_memory_mib(fn, device)
                        rss = peak_rss_mib(fn) if device.type == 'cpu' else float('nan')
                        gflops = 2 * size_macs / times[name] / 1e9
                        print(
                            f'  {size}x{size} {mode:13s} {name:16s} {times[name] * 1e3:9.1f} ms'
                            f' (cpu {cpu_times[name] * 1e3:7.0f} ms)  peak tensors {mem:6.0f} MiB, rss +{rss:5.0f} MiB'
                            f'  {gflops:5.1f} GFLOP/s ({100 * gflops / peak:.0f}% of matmul)'
                        )
                    if 'official' in times:
                        t_ref, c_ref = times['official'], cpu_times['official']
                        print(
                            f'  speed-up vs official: {t_ref / times["ours return_all"]:.2f}x (return_all), '
                            f'{t_ref / times["ours forward(x)"]:.2f}x (forward(x)); by CPU time '
                            f'{c_ref / cpu_times["ours return_all"]:.2f}x, {c_ref / cpu_times["ours forward(x)"]:.2f}x'
                        )
            del ref

        # training step: forward + backward, batch of crops, same weights, same loss
        b, s = args.train_batch, args.train_size
        x = torch.rand(b, 3, s, s, device=device)
        net.train()

        def step(model, unpack):
            model.zero_grad(set_to_none=True)
            outs, uncs = unpack(model(x))  # official order, both models
            sum(t.mean() for t in outs + uncs).backward()

        wrapped = _ReturnAll(net)
        steps = {'ours': lambda: step(wrapped, lambda r: r)}
        if official:
            ref = build_official(official, s, net.state_dict(), device).train()
            steps['official'] = lambda: step(ref, lambda r: r)
        times = median_times(steps, device, args.train_runs, 1)
        cpu_times = median_times.cpu
        t_ours = times['ours']
        print(f'\n  ({load()})')
        print(f'  train fwd+bwd {b}x3x{s}x{s}: ours {t_ours * 1e3:.1f} ms (cpu {cpu_times["ours"] * 1e3:.0f})', end='')
        if official:
            t_ref = times['official']
            step(wrapped, lambda r: r)
            step(ref, lambda r: r)
            ours_grads = ours_state_dict_to_official({n: p.grad for n, p in net.named_parameters()})
            ref_grads = dict(ref.named_parameters())
            diffs = [(ours_grads[n] - p.grad).abs().max().item() for n, p in ref_grads.items()]
            scale = max(p.grad.abs().max().item() for p in ref_grads.values())
            print(
                f', official {t_ref * 1e3:.1f} ms (cpu {cpu_times["official"] * 1e3:.0f}),'
                f' speed-up {t_ref / t_ours:.2f}x'
                f' (by CPU time {cpu_times["official"] / cpu_times["ours"]:.2f}x); '
                f'max |grad diff| {max(diffs):.2e} (largest grad {scale:.2e})'
            )
            del ref
        else:
            print()
        net.eval()


class _ReturnAll(nn.Module):
    def __init__(self, net: S2Former):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, return_all=True)


if __name__ == '__main__':
    main()
