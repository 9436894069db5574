"""float32 against bfloat16-autocast CPU inference of one S2Former, in one process (what ``infer --bf16`` does).

Prints figures, never asserts. Example::

    python benchmarks/cpu_bf16_speed.py --threads 1 --size 256 --preset paper [--profile]

Both variants run the same network (random weights, seed 0) on the same input, taking turns run by run
(``s2former_plugin.benchmark.measure.time_calls``: median wall and process CPU time); the output difference is printed
first. ``--profile`` adds the ten ops with the most self CPU time in each precision (torch.profiler).
"""

from __future__ import annotations

import argparse
import os

import torch

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.benchmark.measure import time_calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--preset', default='paper')
    p.add_argument('--runs', type=int, default=9)
    p.add_argument('--profile', action='store_true')
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = S2Former(preset=args.preset).eval()
    x = torch.rand(1, 3, args.size, args.size)

    def run(dtype: torch.dtype | None):
        @torch.no_grad()
        def forward():
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype is not None):
                return net(x)

        return forward

    calls = {'fp32': run(None), 'bf16': run(torch.bfloat16)}
    diff = (calls['bf16']().float() - calls['fp32']()).abs()
    print(f'torch {torch.__version__}, {args.threads} thread(s), preset {args.preset}, 1x3x{args.size}x{args.size}')
    print(f'|bf16 - fp32| on the output image: mean {diff.mean():.2e}, max {diff.max():.2e}')
    print('load average before', ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    res = time_calls(calls, runs=args.runs, warmup=1)
    print('load average after ', ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    for name, r in res.items():
        print(f'  {name}: wall {r["latency_ms"]:8.1f} ms, cpu {r["cpu_ms"]:8.1f} ms')
    fp32, bf16 = res['fp32'], res['bf16']
    print(
        f'bf16 speed-up: {fp32["cpu_ms"] / bf16["cpu_ms"]:.2f}x by CPU time, '
        f'{fp32["latency_ms"] / bf16["latency_ms"]:.2f}x by wall time'
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, fn in calls.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in ops) / 1e3
            print(f'== {name}: self CPU {total:.0f} ms (profiled)')
            for e in ops[:10]:
                print(f'  {e.key:48s} {e.self_cpu_time_total / 1e3:8.1f} ms  x{e.count}')


if __name__ == '__main__':
    main()
