"""onnxruntime against PyTorch on the CPU: the same network, the same threads, whole images.

Prints figures, never asserts. Example (the paper's network with random weights, 2 threads each)::

    python benchmarks/onnx_speed.py --preset paper --sizes 256 1024 --threads 2

The network is exported once with ``s2former_plugin.onnx_backend.export_onnx`` (final output only) and both runtimes
run a 64x64 image once (first-call set-up); then each size is run by both runtimes taking turns (``--warmup``
untimed, then ``--runs`` timed calls, the median reported; see ``s2former_plugin.benchmark.time_calls``), so a busy
machine slows both alike. Wall-clock and process CPU time are reported, with the mean absolute difference of the
two outputs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from s2former_plugin.archs.s2former_arch import PRESETS, S2Former
from s2former_plugin.benchmark.measure import time_calls
from s2former_plugin.onnx_backend import OnnxNetwork, export_onnx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='paper', choices=sorted(PRESETS))
    p.add_argument('--sizes', type=int, nargs='+', default=[256, 1024], help='square image sides')
    p.add_argument('--threads', type=int, default=2, help='intra-op threads of both runtimes')
    p.add_argument('--runs', type=int, default=1, help='timed calls per runtime and size (median reported)')
    p.add_argument('--warmup', type=int, default=0, help='untimed calls per runtime and size before those')
    args = p.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = S2Former(preset=args.preset).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'net.onnx')
        start = time.perf_counter()
        export_onnx(net, path)
        print(f'export ({args.preset}): {time.perf_counter() - start:.1f} s, {os.path.getsize(path) / 2**20:.1f} MB')
        onnx_net = OnnxNetwork(path, threads=args.threads)
        print(
            f'torch {torch.__version__}, onnxruntime {__import__("onnxruntime").__version__}, {args.threads} threads, '
            f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}'
        )
        with torch.no_grad():
            net(torch.rand(1, 3, 64, 64)), onnx_net(torch.rand(1, 3, 64, 64))  # first-call set-up of both runtimes
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            out: dict[str, torch.Tensor] = {}
            calls = {
                'pytorch': lambda x=x, out=out: out.update(pytorch=net(x)),
                'onnxruntime': lambda x=x, out=out: out.update(onnxruntime=onnx_net(x)),
            }
            with torch.no_grad():
                res = time_calls(calls, runs=args.runs, warmup=args.warmup)
            diff = (out['pytorch'] - out['onnxruntime']).abs().mean().item()
            t, o = res['pytorch'], res['onnxruntime']
            print(
                f'{size}x{size}: pytorch {t["latency_ms"] / 1e3:.2f} s (cpu {t["cpu_ms"] / 1e3:.2f} s), '
                f'onnxruntime {o["latency_ms"] / 1e3:.2f} s (cpu {o["cpu_ms"] / 1e3:.2f} s), '
                f'pytorch/onnxruntime {t["latency_ms"] / o["latency_ms"]:.2f}x, mean |diff| {diff:.1e}, '
                f'load average {os.getloadavg()[0]:.2f}'
            )


if __name__ == '__main__':
    main()
