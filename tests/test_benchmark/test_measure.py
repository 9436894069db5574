"""Interleaved measurement: every net takes turns round by round (rotated order), each call timed and its memory
measured; the training-step calibration of several archs in one process."""

from __future__ import annotations

import torch
from helpers import TINY_BASICSR_ARCH

from s2former_plugin.benchmark.measure import measure_interleaved, peak_rss_works


class _Logged(torch.nn.Module):
    def __init__(self, name: str, log: list, grow: int = 0):
        super().__init__()
        self.name, self.log, self.grow = name, log, grow
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        self.log.append(self.name)
        if self.grow:  # a temporary buffer of `grow` MB
            buf = torch.ones(self.grow * 2**18)
            x = x + buf[:1].sum() * 0
        return self.conv(x)


def test_nets_take_turns_in_rotated_order_and_memory_is_per_call():
    log: list[str] = []
    nets = {'a': _Logged('a', log), 'b': _Logged('b', log, grow=64), 'c': _Logged('c', log)}
    out = measure_interleaved(nets, 8, runs=3, device='cpu', warmup=1)
    # one warm-up round then three timed rounds; round r starts at net r mod 3
    assert log == ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b', 'a', 'b', 'c']
    assert set(out) == {'a', 'b', 'c'}
    for r in out.values():
        assert r['runs'] == 3 and r['latency_min_ms'] <= r['latency_ms'] <= r['latency_max_ms']
        assert r['cpu_ms'] is not None and r['cpu_ms'] >= 0
    if peak_rss_works():  # a kernel that resets and tracks VmHWM
        assert out['b']['peak_mem_mb'] > 48 and out['a']['peak_mem_mb'] < 48
    else:
        assert all(r['peak_mem_mb'] is None for r in out.values())


def test_a_kernel_that_never_raises_the_peak_gives_no_memory_figure(monkeypatch):
    # accepted clear_refs but VmHWM == VmRSS at every read: a figure would be a plausible 0 MB
    from s2former_plugin.benchmark import measure

    monkeypatch.setattr(measure, '_PEAK_RSS_WORKS', None)
    monkeypatch.setattr(measure, 'status_kb', lambda key: 500_000)
    monkeypatch.setattr(measure, '_reset_peak_rss', lambda: 500_000)
    assert not measure.peak_rss_works()
    assert measure.memory_window(False)() is None
    out = measure.measure_speed(torch.nn.Conv2d(3, 3, 1), 8, runs=1)
    assert out['peak_mem_mb'] is None and out['latency_ms'] > 0


def test_calibration_times_every_arch_in_one_process():
    from s2former_plugin.benchmark.options import DEFAULTS
    from s2former_plugin.benchmark.train_child import build_train_options, calibrate

    opt = {**DEFAULTS, 'train': {**DEFAULTS['train'], 'batch_size': 1, 'crop': 16}}
    entries = [
        {'name': 's2f', 'network_g': {'type': 'S2Former', 'preset': 'small'}},
        {'name': 'vgg', 'network_g': dict(TINY_BASICSR_ARCH)},
    ]
    topts = {e['name']: build_train_options(opt, e, '.', 'cpu', 0, 1) for e in entries}
    seconds = calibrate(topts, steps=2)
    assert set(seconds) == {'s2f', 'vgg'} and all(s > 0 for s in seconds.values())
    assert seconds['s2f'] > seconds['vgg']  # 0.43 M parameters against a few hundred
