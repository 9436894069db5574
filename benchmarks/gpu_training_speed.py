"""Training and inference speed of S2Former on a GPU: eager, compiled, CUDA-graph-captured, and the official code.

Prints figures and writes them as JSON; never asserts. One process, the same weights and batches for every mode::

    python benchmarks/gpu_training_speed.py --official PATH/TO/official_s2former --json docs/results/gpu_h200.json

Training (paper network, Adam, the PSNR + uncertainty losses on all ten maps, EMA 0.999, ``--crop`` crops): per
batch size and precision (fp32, bf16 autocast), the step time (median after ``--warmup`` steps), images/s, peak
memory, the losses of every step against eager's (same seed, same batches), and the achieved TFLOP/s (three times
the forward's multiply-adds x 2 per image, counted by ``benchmark.measure.count_macs``) against a bf16 matmul
measured in the same run. Modes: ``eager``, ``compiled`` (``torch.compile``, ``--compile-mode``), ``graphed``
(``acceleration.GraphedStep``: forward, losses, backward, optimizer step and EMA replayed as CUDA graphs) and
``official`` (eager). Inference: ``forward(x)`` at ``--infer-sizes``, eager, graph-replayed (``GraphedForward``, what
``infer --cuda-graph`` and ``val: cuda_graph`` run) and the official.

``--budget`` seconds: items not started by then are recorded as skipped (never as a figure). The headline items run
first (fp32 training at each batch, then fp32 inference at the first size; within a case eager, the official, then
the faster modes) and the JSON is rewritten after every item, so a run cut short keeps what it measured. On a CPU
with tiny sizes (``--device cpu --preset small --crop 64 --steps 3 --warmup 1``) the eager parts run as a smoke
test (the official code needs crops of 64 or more).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import s2former_plugin  # noqa: E402

s2former_plugin.register()  # no startup hook where the package is not installed (a bare GPU machine)

from s2former_plugin.acceleration import CompileOption, GraphedStep, compile_network, with_capturable  # noqa: E402
from s2former_plugin.archs.s2former_arch import S2Former  # noqa: E402
from s2former_plugin.benchmark.measure import count_macs  # noqa: E402
from s2former_plugin.errors import first_line  # noqa: E402
from s2former_plugin.graphed_inference import GraphedForward  # noqa: E402
from s2former_plugin.losses.s2former_loss import MultiScalePSNRLoss, UncertaintyDrivenLoss  # noqa: E402

DTYPES = {'fp32': None, 'bf16': torch.bfloat16}
MODES = ('eager', 'graphed', 'compiled')
#: The official ``Transformer`` kwargs of each preset (``small``: the parity fixture's configuration).
OFFICIAL_KWARGS = {
    'paper': {},
    'small': dict(
        dim=[16, 16, 32, 32, 64], transformer_blocks=2, reconstruction_num=[2, 2, 2, 2], conv_num=[1, 1, 1, 1]
    ),
}


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def bf16_matmul_tflops(device: torch.device, n: int) -> float:
    """The bf16 (fp32 on a CPU) matmul rate of this device, mean of 10 products after 3 warm-ups."""
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - start) / 1e12


class Trainer:
    """One network's training step in one mode: eager, compiled or graphed (the official net: eager)."""

    def __init__(self, net, mode: str, dtype, device: torch.device, compile_mode: str, outputs=None):
        self.net, self.mode, self.dtype, self.device = net.train(), mode, dtype, device
        self.outputs = outputs or (lambda n, x: n(x, return_all=True))
        self.ema = [p.detach().clone() for p in net.parameters()]
        self.psnr, self.udl = MultiScalePSNRLoss(), UncertaintyDrivenLoss()
        self.run = compile_network(net, CompileOption(mode=compile_mode)) if mode == 'compiled' else net
        kwargs = with_capturable(torch.optim.Adam, {}) if mode == 'graphed' else {}
        self.opt = torch.optim.Adam(net.parameters(), 2e-4, **kwargs)
        self.graphed = GraphedStep(self.forward_backward, self.update, self.opt, print) if mode == 'graphed' else None

    def forward_backward(self, lq, gt):
        amp = self.dtype is not None
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=amp, cache_enabled=False):
            outputs, uncertainties = self.outputs(self.run, lq)
        outputs, uncertainties = [o.float() for o in outputs], [u.float() for u in uncertainties]
        loss = self.psnr(outputs, gt) + self.udl(outputs, uncertainties, gt)
        loss.backward()
        return {'l_total': loss.detach()}, outputs[0].detach()

    def update(self):
        self.opt.step()
        with torch.no_grad():  # basicsr's EMA, one fused op per list
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.net.parameters()], 1 - 0.999)

    def step(self, lq, gt) -> float:
        result = self.graphed.forward(lq, gt) if self.graphed is not None else None
        if result is None:
            self.opt.zero_grad(set_to_none=True)
            result = self.forward_backward(lq, gt)
        loss = result[0]['l_total'].item()  # the non-finite check's sync, as the model's
        if self.graphed is not None:
            self.graphed.step()
        else:
            self.update()
        return loss


def official_outputs(net, x):
    outputs, uncertainties = net(x)
    return list(outputs), list(uncertainties)


def train_case(args, official, batch: int, precision: str, device: torch.device, flops_per_image: float) -> dict:
    """Every mode's figures for one batch size and precision."""
    torch.manual_seed(0)
    data = [torch.rand(batch, 3, args.crop, args.crop, device=device) for _ in range(4)]
    batches = [((gt + 0.2 * torch.rand_like(gt)).clamp(0, 1), gt) for gt in data]
    steps = args.steps if batch <= 8 else max(args.warmup + 5, args.steps // 4)
    result = {}
    # eager first (the losses' reference), the official next (the ratio's other half), then the faster modes
    modes = ['eager'] * ('eager' in args.modes) + ['official'] * bool(official)
    for mode in modes + [m for m in args.modes if m != 'eager']:
        if time.perf_counter() > args.deadline:
            result[mode] = {'skipped': 'out of --budget'}
            continue
        if mode == 'graphed' and device.type != 'cuda':
            result[mode] = {'skipped': 'CUDA graphs need a CUDA device'}
            continue
        torch.manual_seed(0)
        net = S2Former(args.preset).to(device)
        if mode == 'official':
            with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints
                ref = official.Transformer(img_size=(args.crop, args.crop), **OFFICIAL_KWARGS[args.preset])
            from s2former_plugin.official import ours_state_dict_to_official

            ref.load_state_dict(ours_state_dict_to_official(net.state_dict()), strict=True)
            trainer = Trainer(ref.to(device), 'eager', DTYPES[precision], device, args.compile_mode, official_outputs)
            steps_here = min(steps, args.warmup + 20)  # timing only
        else:
            trainer = Trainer(net, mode, DTYPES[precision], device, args.compile_mode)
            steps_here = steps
        if device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times, losses, started = [], [], time.perf_counter()
        try:
            for i in range(steps_here):
                lq, gt = batches[i % len(batches)]
                sync(device)
                t0 = time.perf_counter()
                losses.append(trainer.step(lq, gt))
                sync(device)
                times.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 (recorded, the other modes still run)
            result[mode] = {'failed': f'{type(exc).__name__}: {first_line(exc, 300)}'}
            print(f'  batch {batch} {precision} {mode}: FAILED {result[mode]["failed"]}', flush=True)
            continue
        step_s = statistics.median(times[args.warmup :])
        entry = {
            'steps': steps_here,
            'first_steps_s': round(sum(times[: args.warmup]), 3),  # compile / capture / autotune included
            'step_ms': round(step_s * 1e3, 3),
            'images_per_s': round(batch / step_s, 1),
            'peak_gib': round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == 'cuda' else None,
            'achieved_tflops': round(flops_per_image * batch / step_s / 1e12, 2),
            'losses': [round(v, 5) for v in losses],
            'wall_s': round(time.perf_counter() - started, 1),
        }
        if trainer.graphed is not None:
            entry['graphed'] = not trainer.graphed.disabled
        result[mode] = entry
        print(
            f'  batch {batch} {precision} {mode:8s}: {entry["step_ms"]:8.2f} ms/step, '
            f'{entry["images_per_s"]:7.1f} img/s, '
            f'peak {entry["peak_gib"]} GiB, {entry["achieved_tflops"]} TFLOP/s, first {args.warmup} steps '
            f'{entry["first_steps_s"]} s, loss {losses[0]:.4f} -> {losses[-1]:.4f}',
            flush=True,
        )
        del trainer, net
    eager = result.get('eager', {}).get('losses')
    for mode, entry in result.items():
        if eager and 'losses' in entry and mode not in ('eager', 'official'):
            n = min(len(eager), len(entry['losses']))
            diffs = [abs(a - b) for a, b in zip(eager[:n], entry['losses'][:n])]
            rel = [d / max(abs(a), 1e-12) for d, a in zip(diffs, eager)]
            entry['max_abs_loss_diff_vs_eager'] = worst(diffs)
            entry['max_rel_loss_diff_vs_eager'] = worst(rel)  # every step within 1 % counts as faithful
            print(
                f'    {mode} vs eager over {n} steps: max |loss diff| {worst(diffs):.3g} ({worst(rel):.3g} relative)',
                flush=True,
            )
    return result


def profile_case(args, batch: int, precision: str, device: torch.device) -> dict:
    """Kernels of one eager training step (after two warm-up steps): how many, and the largest by device time
    (where bf16 autocast's time goes: its casts are kernels of their own)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    trainer = Trainer(S2Former(args.preset).to(device), 'eager', DTYPES[precision], device, args.compile_mode)
    gt = torch.rand(batch, 3, args.crop, args.crop, device=device)
    for _ in range(2):
        trainer.step(gt, gt)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with profile(activities=activities) as prof:
        trainer.step(gt, gt)
        sync(device)
    events = prof.key_averages()
    attr = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    kernels = [e for e in events if getattr(e, attr, 0) > 0 and (device.type != 'cuda' or e.device_type.name == 'CUDA')]
    top = sorted(kernels, key=lambda e: getattr(e, attr), reverse=True)[:12]
    casts = sum(e.count for e in events if e.key == 'aten::_to_copy')
    result = {
        'kernel_launches': sum(e.count for e in kernels),
        'aten_to_copy_calls': casts,
        'top_ms': {e.key[:80]: round(getattr(e, attr) / 1e3, 3) for e in top},
    }
    print(f'  profile batch {batch} {precision}: {result["kernel_launches"]} kernels, {casts} casts', flush=True)
    return result


def infer_case(args, official, size: int, precision: str, device: torch.device) -> dict:
    amp = precision != 'fp32'
    torch.manual_seed(0)
    net = S2Former(args.preset).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    calls = {'eager': lambda: net(x)}
    if device.type == 'cuda':  # infer --cuda-graph / val: cuda_graph (captured at its second call, the warm-up)
        graphed = GraphedForward(net, print)
        calls['graphed'] = lambda: graphed(x)
    if official:
        from s2former_plugin.official import ours_state_dict_to_official

        with contextlib.redirect_stdout(io.StringIO()):
            ref = official.Transformer(img_size=(size, size), **OFFICIAL_KWARGS[args.preset])
        ref.load_state_dict(ours_state_dict_to_official(net.state_dict()), strict=True)
        ref = ref.to(device).eval()
        calls['official'] = lambda: ref(x)
    result = {}
    for name, call in calls.items():
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=DTYPES[precision] or torch.bfloat16, enabled=precision != 'fp32'),
        ):
            for _ in range(3):
                call()
            times = []
            for _ in range(args.infer_runs):
                sync(device)
                t0 = time.perf_counter()
                call()
                sync(device)
                times.append(time.perf_counter() - t0)
        result[name] = round(statistics.median(times) * 1e3, 3)
    if 'graphed' in calls and not graphed.graphs:  # the capture failed (said above): that time is eager's
        result['graphed_eager_fallback'] = result.pop('graphed')
    if 'graphed' in result:  # the replay must give eager's image (TF32 convolutions: about 1e-4 apart)
        with torch.no_grad(), torch.autocast('cuda', dtype=DTYPES[precision] or torch.bfloat16, enabled=amp):
            diff = (calls['graphed']().float() - net(x).float()).abs().max().item()
        result['graphed_max_abs_diff'] = diff
        if not diff <= 1e-2:
            print(f'  inference {size}x{size} {precision}: graphed left out, {diff:.3g} off eager', flush=True)
            result['graphed_left_out'] = result.pop('graphed')
    print(
        f'  inference {size}x{size} {precision}: '
        + ', '.join(f'{k} {v:.3g}' + ('' if 'diff' in k else ' ms') for k, v in result.items()),
        flush=True,
    )
    return result


def worst(values: list[float]) -> float:
    """The largest of ``values``, NaN if any is not finite (``max`` would keep or drop a NaN by its position)."""
    return max(values) if all(math.isfinite(v) for v in values) else math.nan


def faithful_modes(case: dict, tolerance: float = 0.01) -> dict:
    """Step times of ours' modes whose loss at every step is within ``tolerance`` (relative) of eager's, named as
    they ran (``graphed (eager fallback)`` where the capture fell back); a mode that drifted is left out, loudly."""
    ours = {}
    for mode, entry in case.items():
        if mode == 'official' or 'step_ms' not in entry:
            continue
        name = mode if entry.get('graphed', True) else f'{mode} (eager fallback)'
        drift = entry.get('max_rel_loss_diff_vs_eager')
        if drift is None and mode != 'eager':
            name += ' (losses unchecked: no eager run)'
        elif drift is not None and not drift <= tolerance:  # NaN drifts are left out too
            print(f'  {mode}: left out of the speed-up, its losses are up to {drift:.3g} off eager (over {tolerance})')
            continue
        ours[name] = entry['step_ms']
    return ours


def speedup(official_ms: float | None, ours: dict) -> dict | None:
    """The official time over ours' fastest mode, with the mode named (None where either is missing)."""
    measured = {k: v for k, v in ours.items() if isinstance(v, float | int)}
    if not official_ms or not measured:
        return None
    mode = min(measured, key=measured.get)
    return {'speedup': round(official_ms / measured[mode], 3), 'ours_mode': mode, 'ours_ms': measured[mode]}


def headlines(report: dict, batches: list[int]) -> None:
    """The headline ratios: fp32, the official eager time over ours' fastest faithful mode (None if not measured)."""
    for batch in batches:
        case = report['training'].get(f'batch{batch}_fp32', {})
        report[f'training_speedup_batch{batch}'] = speedup(
            case.get('official', {}).get('step_ms'), faithful_modes(case)
        )
    infer = report['inference'].get('256_fp32', {})
    report['inference_speedup_256'] = speedup(
        infer.get('official'), {k: v for k, v in infer.items() if k in ('eager', 'graphed')}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--official', help='folder holding UDR_S2Former.py, base_net_snow.py, condconv.py')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--preset', default='paper')
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--batches', type=int, nargs='+', default=[8, 36])
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--modes', nargs='+', default=['eager', 'graphed', 'compiled'], choices=MODES)
    parser.add_argument('--compile-mode', default='default')
    parser.add_argument('--steps', type=int, default=200, help='steps at batch <= 8 (a quarter at larger batches)')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--infer-sizes', type=int, nargs='*', default=[256, 512, 1024])
    parser.add_argument('--infer-runs', type=int, default=20)
    parser.add_argument('--matmul-n', type=int, default=8192)
    parser.add_argument('--budget', type=float, default=450, help='seconds; later items are recorded as skipped')
    parser.add_argument('--no-profile', dest='profile', action='store_false', help='skip the kernel profile')
    parser.add_argument('--json', help='write the figures here')
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f'--warmup must be >= 0 and below --steps (got --warmup {args.warmup}, --steps {args.steps})')
    args.deadline = time.perf_counter() + args.budget
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('gpu_training_speed: CUDA is not available here (use --device cpu for a smoke test)', file=sys.stderr)
        return 2
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # as basicsr.train
    official = None
    if args.official:
        from arch_speed import load_official

        official = load_official(args.official)
    card = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    print(f'torch {torch.__version__}, {card}, preset {args.preset}, crop {args.crop}', flush=True)
    peak = bf16_matmul_tflops(device, args.matmul_n)
    macs = count_macs(S2Former(args.preset), args.crop)['macs']
    flops_per_image = 3 * 2 * macs  # forward + backward (about twice the forward)
    print(f'  matmul {peak:.3g} TFLOP/s; training step {flops_per_image / 1e9:.2f} GFLOP per image', flush=True)
    report = {
        'card': card,
        'torch': torch.__version__,
        'preset': args.preset,
        'crop': args.crop,
        'matmul_tflops': round(peak, 1),
        'train_gflop_per_image': round(flops_per_image / 1e9, 3),
        'training': {},
        'inference': {},
    }
    # Headline items first, so a run cut short by --budget (or killed) still has them; the JSON is rewritten after
    # every item.
    first_size, *other_sizes = args.infer_sizes or [None]
    plan = []
    for precision in args.precisions:
        plan += [('training', batch, precision) for batch in args.batches]
        plan += [('inference', first_size, precision)] if first_size is not None else []
    plan += [('inference', size, precision) for size in other_sizes for precision in args.precisions]
    plan += [('profile', args.batches[0], precision) for precision in (args.precisions if args.profile else [])]
    for kind, n, precision in plan:
        key = f'batch{n}_{precision}' if kind != 'inference' else f'{n}_{precision}'
        if kind == 'training':
            report['training'][key] = train_case(args, official, n, precision, device, flops_per_image)
        elif time.perf_counter() > args.deadline:
            report.setdefault(kind, {})[key] = {'skipped': 'out of --budget'}
        elif kind == 'inference':
            report['inference'][key] = infer_case(args, official, n, precision, device)
        else:
            report.setdefault('profile', {})[key] = profile_case(args, n, precision, device)
        headlines(report, args.batches)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    for key in [k for k in report if k.startswith(('training_speedup', 'inference_speedup'))]:
        print(f'{key}: {report[key]}')
    if args.json:
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
