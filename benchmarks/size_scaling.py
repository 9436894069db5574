"""Inference time and peak memory of the S2Former network against image size, whole and tiled.

Prints a table, never asserts. Each figure comes from a fresh child process, so the peak memory of one size is not
hidden by pages an earlier, larger call left to the allocator. Examples::

    python benchmarks/size_scaling.py --threads 1 --sizes 128 256 512 1024 2048 --tiled 1024 2048 4096 \
        --plot docs/images/size_scaling_cpu.png
    python benchmarks/size_scaling.py --device cuda --sizes 128 256 512 1024 2048 4096 --tiled 4096 8192

Time: median wall-clock of ``--runs`` calls after one warm-up call (one timed call where the warm-up took over
30 s); on CPU also the process CPU time of the same calls, which with one thread is the compute time, little
changed by other processes on a shared machine (the plot shows it). Memory: on CPU the growth of the resident
set's high-water mark (``VmHWM``) over the resident set before the first call, i.e. what the calls needed beyond
the network and the input; on CUDA the peak of allocated tensor memory over what was allocated before. Tiled runs
use ``s2former_plugin.tiling.tiled_forward`` (the tiling of ``infer --tile`` and ``val: tile``): memory stays that
of one tile plus the whole-image accumulators.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.benchmark.measure import memory_window, time_calls
from s2former_plugin.tiling import tiled_forward

SLOW_WARMUP_S = 30.0


def measure_one(size: int, tile: int | None, args: argparse.Namespace) -> dict:
    """Time and peak memory of ``size`` x ``size`` inference, whole (``tile`` None) or tiled, in this process."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = S2Former(preset=args.preset).eval().to(device)
    x = torch.rand(1, 3, size, size, device=device)

    def call() -> None:
        with torch.no_grad():
            if tile is None:
                net(x)
            else:
                tiled_forward(net, x, tile, args.tile_overlap)

    peak = memory_window(device.type == 'cuda')  # None where the kernel does not track the peak
    start = time.perf_counter()
    call()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    runs = 1 if warmup_s > SLOW_WARMUP_S else args.runs
    times = time_calls({'net': call}, runs, warmup=0, device=device.type)['net']
    peak_mib = peak()
    cpu_s = None if times['cpu_ms'] is None else times['cpu_ms'] / 1000
    return {
        'size': size,
        'tile': tile,
        'seconds': times['latency_ms'] / 1000,
        'cpu_seconds': cpu_s,
        'peak_mib': peak_mib,
        'runs': runs,
    }


def run_child(size: int, tile: int | None, args: argparse.Namespace) -> dict:
    """:func:`measure_one` in a fresh interpreter; a child that dies (e.g. out of memory) is reported, not fatal."""
    argv = [sys.executable, os.path.abspath(__file__), '--child', str(size), str(tile or 0)]
    argv += ['--device', args.device, '--threads', str(args.threads), '--preset', args.preset]
    argv += ['--runs', str(args.runs), '--tile-overlap', str(args.tile_overlap)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}'])[-1]
        return {'size': size, 'tile': tile, 'error': reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(results: list[dict], path: str, title: str) -> None:
    """Time and memory against image size, whole and tiled, on log-log axes."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for tiled, style in ((False, 'o-'), (True, 's--')):
        rows = [r for r in results if 'error' not in r and bool(r['tile']) == tiled]
        if not rows:
            continue
        label = f'tiled ({rows[0]["tile"]} px tiles)' if tiled else 'whole image'
        sizes = [r['size'] for r in rows]
        ax_t.plot(sizes, [r['cpu_seconds'] or r['seconds'] for r in rows], style, label=label)
        ax_m.plot(sizes, [float('nan') if r['peak_mib'] is None else r['peak_mib'] for r in rows], style, label=label)
    ticks = sorted({r['size'] for r in results})
    seconds = 'CPU seconds per image' if results and results[0].get('cpu_seconds') else 'seconds per image'
    for ax, ylabel in ((ax_t, seconds), (ax_m, 'peak memory (MiB)')):
        ax.set_xscale('log', base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_yscale('log')
        ax.set_xlabel('image edge (pixels, square images)')
        ax.set_ylabel(ylabel)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--preset', default='paper')
    parser.add_argument('--sizes', type=int, nargs='*', default=[128, 256, 512, 1024, 2048], help='whole-image runs')
    parser.add_argument('--tiled', type=int, nargs='*', default=[], help='sizes also run tiled')
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--tile-overlap', type=int, default=32)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--plot', help='write the plot (PNG) here')
    parser.add_argument('--json', help='write the figures (JSON) here')
    parser.add_argument('--child', type=int, nargs=2, metavar=('SIZE', 'TILE'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, tile = args.child
        print(json.dumps(measure_one(size, tile or None, args)))
        return

    where = torch.cuda.get_device_name() if args.device.startswith('cuda') else f'CPU, {args.threads} thread(s)'
    title = f'S2Former {args.preset}, torch {torch.__version__}, {where}'
    print(title + f', load average {os.getloadavg()[0]:.2f}')
    print(f'{"size":>6} {"mode":<22} {"seconds":>9} {"CPU s":>9} {"peak MiB":>9}')
    results = []
    jobs = [(s, None) for s in args.sizes] + [(s, args.tile) for s in args.tiled]
    for size, tile in jobs:
        r = run_child(size, tile, args)
        results.append(r)
        mode = f'tiled {tile}/{args.tile_overlap}' if tile else 'whole'
        if 'error' in r:
            print(f'{size:>6} {mode:<22} failed: {r["error"]}')
        else:
            note = '' if r['runs'] == args.runs else f'  ({r["runs"]} timed run)'
            cpu_s = '-' if r['cpu_seconds'] is None else f'{r["cpu_seconds"]:.3f}'
            mib = 'n/a' if r['peak_mib'] is None else f'{r["peak_mib"]:.0f}'  # kernel without a peak RSS
            print(f'{size:>6} {mode:<22} {r["seconds"]:9.3f} {cpu_s:>9} {mib:>9}{note}', flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'title': title, 'results': results}, f, indent=1)
    if args.plot:
        plot(results, args.plot, title)
        print(f'plot: {args.plot}')


if __name__ == '__main__':
    main()
