"""Measuring a network: parameters, multiply-adds, latency (wall and CPU time) and peak memory.

Generic (any ``nn.Module`` mapping ``B x 3 x H x W`` to an image); the benchmark and ``benchmarks/*.py`` share it.
"""

from __future__ import annotations

import gc
import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


# ----------------------------------------------------------------------------------------------------------------
# Measurements (generic: any nn.Module mapping B x 3 x H x W to an image)
# ----------------------------------------------------------------------------------------------------------------
def _sdpa_macs(inputs: list, outputs: list) -> int:
    from mmengine.analysis.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    v = get_shape(inputs[2])
    batch = math.prod(q[:-2])
    return int(batch * q[-2] * k[-2] * (q[-1] + v[-1]))  # Q K^T and attention x V


def count_macs(net, size: int, device: str = 'cpu') -> dict:
    """Multiply-adds of one ``size`` x ``size`` RGB image through ``net`` (``mmengine.analysis.FlopAnalyzer``).

    Returns:
        ``{'macs': int, 'uncounted_ops': {op: occurrences}}``.
    """
    import torch
    from mmengine.analysis import FlopAnalyzer

    x = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad():
        analyzer = FlopAnalyzer(net.eval(), (x,))
        analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
        macs = int(analyzer.total())
        uncounted = dict(analyzer.unsupported_ops())
    return {'macs': macs, 'uncounted_ops': uncounted}


def status_kb(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...); ``OSError`` where there is none."""
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise OSError(f'{key} not in /proc/self/status')


def time_calls(calls: dict, runs: int = 5, warmup: int = 1, device: str = 'cpu') -> dict:
    """Median wall-clock and process CPU time of each zero-argument callable in ``calls``.

    The callables take turns run by run (after ``warmup`` calls each), so a busy machine slows all of them alike;
    the process CPU time (all threads) is, with one thread, the compute time alone, robust to other processes.
    On CUDA the CPU time is the host's launching and waiting, not the work: ``cpu_ms`` is then ``None``.

    Returns:
        ``{name: {'latency_ms': float, 'cpu_ms': float | None}}``.
    """
    import torch

    def sync() -> None:
        if torch.device(device).type == 'cuda':
            torch.cuda.synchronize()

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, runs)):
        for name, fn in calls.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    def median_ms(ts: list[float]) -> float:
        return 1000 * sorted(ts)[len(ts) // 2]

    on_cpu = torch.device(device).type == 'cpu'
    return {
        name: {'latency_ms': median_ms(wall[name]), 'cpu_ms': median_ms(cpu[name]) if on_cpu else None}
        for name in calls
    }


def _sum_of_means(out: Any) -> Any:
    """A scalar loss touching every output: the sum of the means of all tensors in (nested) lists/tuples."""
    if isinstance(out, list | tuple):
        return sum(_sum_of_means(o) for o in out)
    return out.mean()


def training_step(module: torch.nn.Module, x: torch.Tensor) -> None:
    """The timed training step: ``zero_grad``, forward, backward of the sum of the means of all outputs."""
    module.zero_grad(set_to_none=True)
    _sum_of_means(module(x)).backward()


def measure_speed(
    net, size: int, runs: int = 5, device: str = 'cpu', *, batch: int = 1, warmup: int = 1, grad: bool = False
) -> dict:
    """Latency and peak memory of whole-image inference of ``batch`` ``size`` x ``size`` RGB images.

    Latency: median of ``runs`` calls after ``warmup`` (at least one) warm-up calls, wall-clock (``latency_ms``)
    and process CPU time (``cpu_ms``). Peak memory: CUDA ``max_memory_allocated`` minus the memory allocated
    before; CPU: peak resident set (``VmHWM``, reset via ``/proc/self/clear_refs``) minus the resident set before
    the calls (``None`` where the kernel does not allow the reset). The warm-up is inside the memory window:
    one-time buffers are part of what a call needs.

    ``net`` may also be a dict ``{name: module}``: the modules then run on the same input, taking turns run by
    run (see :func:`time_calls`), the memory of each is measured over its own warm-up, and the result is
    ``{name: result}``. ``grad=True`` times a training step instead (modules in train mode, ``zero_grad``,
    forward, backward of the sum of the means of all outputs).

    Returns:
        ``{'latency_ms': float, 'cpu_ms': float, 'peak_mem_mb': float | None}`` (per name for a dict).
    """
    import torch

    nets = net if isinstance(net, dict) else {'net': net}
    x = torch.rand(batch, 3, size, size, device=device)
    cuda = torch.device(device).type == 'cuda'

    def call(module) -> Any:
        def run() -> None:
            if grad:
                training_step(module, x)
            else:
                module(x)

        return run

    calls = {name: call(module.train(grad)) for name, module in nets.items()}
    peaks: dict[str, float | None] = {}
    with torch.set_grad_enabled(grad):
        for name, fn in calls.items():  # one memory window per module, around its warm-up
            peak = memory_window(cuda)
            for _ in range(max(1, warmup)):
                fn()
            if cuda:
                torch.cuda.synchronize()
            peaks[name] = peak()
        times = time_calls(calls, runs, warmup=0, device=device)
    results = {name: {**times[name], 'peak_mem_mb': peaks[name]} for name in nets}
    return results if isinstance(net, dict) else results['net']


_PEAK_RSS_WORKS: bool | None = None


def _reset_peak_rss() -> int:
    """Reset ``VmHWM`` to the current resident set (``/proc/self/clear_refs``); returns ``VmRSS`` in kB."""
    gc.collect()
    with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
        f.write('5')
    return status_kb('VmRSS')


def peak_rss_works() -> bool:
    """Whether this kernel resets and tracks the peak resident set, checked once per process.

    Some kernels and sandboxes accept the write to ``clear_refs`` but never raise ``VmHWM`` above the resident
    set at the time it is read; a peak read there would be a plausible 0 MB. The probe touches 32 MB, frees it and
    asks for a peak of at least 24 MB.
    """
    global _PEAK_RSS_WORKS
    if _PEAK_RSS_WORKS is None:
        try:
            base = _reset_peak_rss()
            probe = b'\x01' * (32 * 2**20)  # written byte by byte: every page resident
            del probe
            _PEAK_RSS_WORKS = status_kb('VmHWM') - base >= 24 * 1024
        except OSError:
            _PEAK_RSS_WORKS = False
    return _PEAK_RSS_WORKS


def memory_window(cuda: bool) -> Any:
    """Start a peak-memory window; returns a function giving the peak (MB) above the start, or ``None``.

    CPU: ``None`` where the kernel does not reset or track ``VmHWM`` (:func:`peak_rss_works`).
    """
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        return lambda: (torch.cuda.max_memory_allocated() - base) / 2**20
    if not peak_rss_works():
        return lambda: None
    base_kb = _reset_peak_rss()
    return lambda: max(0, status_kb('VmHWM') - base_kb) / 1024


def measure_interleaved(nets: dict, size: int, runs: int = 5, device: str = 'cpu', *, warmup: int = 1) -> dict:
    """Latency and peak memory of whole-image inference of every net of ``nets``, measured interleaved.

    All nets live in this one process and take turns: ``warmup`` untimed rounds, then ``runs`` timed rounds; in
    each round every net runs one forward of the same ``1 x 3 x size x size`` input, the order rotated by one each
    round (so no net always follows the same other net). A change of the machine's load during the measurement
    therefore reaches all nets alike, which measuring one net after the other cannot promise. Every call, warm-up
    included, has its own memory window (:func:`measure_speed` explains the CUDA and CPU figures).

    Returns:
        ``{name: {'latency_ms': median wall ms, 'latency_min_ms', 'latency_max_ms', 'cpu_ms': median process CPU
        ms (``None`` on CUDA), 'peak_mem_mb': the largest peak over all its calls (``None`` where the kernel
        does not allow the reset), 'runs': runs}}``.
    """
    import torch

    cuda = torch.device(device).type == 'cuda'
    x = torch.rand(1, 3, size, size, device=device)
    names = list(nets)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for r in range(max(0, warmup) + max(1, runs)):
            timed = r >= warmup
            for name in names[r % len(names) :] + names[: r % len(names)]:
                module = nets[name].eval()
                peak = memory_window(cuda)
                start, start_cpu = time.perf_counter(), time.process_time()
                module(x)
                if cuda:
                    torch.cuda.synchronize()
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                mb = peak()
                if mb is not None:
                    peaks[name].append(mb)
                if timed:
                    wall[name].append(elapsed)
                    cpu[name].append(elapsed_cpu)

    def median_ms(ts: list[float]) -> float:
        s = sorted(ts)
        mid = len(s) // 2
        return 1000 * (s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2)

    return {
        n: {
            'latency_ms': median_ms(wall[n]),
            'latency_min_ms': 1000 * min(wall[n]),
            'latency_max_ms': 1000 * max(wall[n]),
            'cpu_ms': None if cuda else median_ms(cpu[n]),
            'peak_mem_mb': max(peaks[n]) if peaks[n] else None,
            'runs': len(wall[n]),
        }
        for n in names
    }
