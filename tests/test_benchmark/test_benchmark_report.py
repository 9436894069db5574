"""The benchmark's summary and table from stored runs (no training): mean ± std over seeds, the paired verdicts,
the batch check; and one budget for all archs."""

from __future__ import annotations

import json

import pytest

from s2former_plugin.benchmark import driver
from s2former_plugin.benchmark.options import DEFAULTS, BenchmarkError
from s2former_plugin.benchmark.report import results_markdown
from s2former_plugin.benchmark.statistics import summarise


def _run(seed: int, psnr: dict, ssim: float = 0.5) -> dict:
    return {
        'metrics': {'psnr': sum(psnr.values()) / len(psnr), 'ssim': ssim},
        'per_image': {'psnr': psnr, 'ssim': {k: ssim for k in psnr}},
        'test_images': len(psnr),
        'train': {'seed': seed, 'total_iter': 10, 'minutes': 1.0, 'curves': {}},
        'data': {'test': 'abc'},
    }


def _opt() -> dict:
    opt = json.loads(json.dumps(DEFAULTS))
    opt['archs'] = [
        {'name': 'ref', 'network_g': {'type': 'S2Former'}},
        {'name': 'same', 'network_g': {'type': 'X'}},
        {'name': 'worse', 'network_g': {'type': 'Y'}},
    ]
    opt['bootstrap']['resamples'] = 500
    opt['speed']['sizes'] = [16]
    opt['speed']['macs_size'] = 16
    opt['pick_device_name'] = 'cpu'
    return opt


def test_summary_and_table():
    opt = _opt()
    runs = {
        'ref': [_run(0, {'a': 20.0, 'b': 22.0, 'c': 24.0}), _run(1, {'a': 21.0, 'b': 23.0, 'c': 25.0})],
        # per image +1, -1, 0 against the reference (seed means): the interval holds 0
        'same': [_run(0, {'a': 21.5, 'b': 21.5, 'c': 24.5}), _run(1, {'a': 21.5, 'b': 21.5, 'c': 24.5})],
        # every image 2 dB lower
        'worse': [_run(0, {'a': 18.5, 'b': 20.5, 'c': 22.5}), _run(1, {'a': 18.5, 'b': 20.5, 'c': 22.5})],
    }
    speed = {n: {'params': 1000, 'macs@16': 2e6, 'speed': {'16': {'latency_ms': 1.0, 'cpu_ms': 1.0}}} for n in runs}
    batches = {'0': {'same': True}, '1': {'same': True}}
    summaries = summarise(opt, runs, speed, batches, 'ref')
    by = {s['name']: s for s in summaries}
    assert by['ref']['metrics']['psnr']['mean'] == pytest.approx(22.5)  # seed means 22 and 23
    assert by['ref']['metrics']['psnr']['std'] == pytest.approx(2**-0.5)  # sqrt(((0.5)^2 * 2) / 1)
    assert by['ref']['vs_reference'] is None
    assert by['same']['vs_reference']['psnr']['verdict'] == 'tie'
    assert by['same']['vs_reference']['psnr']['mean_diff'] == pytest.approx(0.0)
    assert by['worse']['vs_reference']['psnr']['verdict'] == 'worse'
    assert (by['worse']['vs_reference']['psnr']['low'], by['worse']['vs_reference']['psnr']['high']) == (
        pytest.approx(-2.0),
        pytest.approx(-2.0),
    )
    meta = {'reference': 'ref', 'budget': {'how': 'total_iter', 'total_iter': 10}, 'batches': batches}
    table = results_markdown(summaries, opt, meta)
    assert '| ref | 0.001 | 0.002 | 1.0 | 1.0 | - | 22.50 ± 0.71 | 0.5000 ± 0.0000 | (reference) |' in table
    assert '| -2.00 [-2.00, -2.00] | worse | 2 | 10 |' in table and '| tie |' in table
    assert 'Batches: identical' in table and 'WARNING' not in table

    batches['1'] = {'same': False, 'first_difference': {'iteration': 3, 'archs': ['worse']}}
    summaries = summarise(opt, runs, speed, batches, 'ref')
    table = results_markdown(summaries, opt, {**meta, 'batches': batches})
    assert 'ref (batches differ!)' in table and 'WARNING: the archs did not train on the same batches' in table


def test_summary_refuses_mismatched_test_images():
    opt = _opt()
    runs = {n: [_run(0, {'a': 20.0, 'b': 21.0})] for n in ('ref', 'same', 'worse')}
    runs['worse'] = [_run(0, {'a': 20.0, 'z': 21.0})]
    speed = {n: {'params': 1} for n in runs}
    with pytest.raises(BenchmarkError, match='archs:worse: paired comparison: the archs scored different images'):
        summarise(opt, runs, speed, {}, 'ref')


def test_one_budget_from_the_slowest_arch(tmp_path, monkeypatch):
    opt = _opt()
    opt['train'].update(max_minutes=1.0, total_iter=None)
    opt['archs'].append({'name': 'released', 'network_g': {'type': 'S2Former'}, 'checkpoint': 'w.pth'})
    built = []

    def fake_build(opt_, entry, train_dir, device, seed, total_iter):
        built.append(entry['name'])
        return {'name': entry['name']}

    def fake_child(cmd, cwd, log, threads, what):
        spec = json.loads(open(cmd[-1]).read())
        assert sorted(spec['topts']) == ['ref', 'same', 'worse']  # checkpoints are not trained: not timed
        json.dump({'ref': 0.5, 'same': 0.25, 'worse': 0.1}, open(spec['out'], 'w'))

    monkeypatch.setattr(driver, 'build_train_options', fake_build)
    monkeypatch.setattr(driver, 'run_child', fake_child)
    budget = driver.budget_iterations(opt, str(tmp_path), '.', 'cpu')
    assert budget['total_iter'] == 120 and budget['calibrated_on'] == 'ref'  # 60 s / 0.5 s
    assert driver.budget_iterations(opt, str(tmp_path), '.', 'cpu')['total_iter'] == 120  # stored once, reused
    opt['train']['max_minutes'] = 2.0
    with pytest.raises(BenchmarkError, match='train: the budget options changed'):
        driver.budget_iterations(opt, str(tmp_path), '.', 'cpu')
    opt['train']['total_iter'] = 50  # a cap below the calibrated count
    budget = driver.budget_iterations(opt, str(tmp_path / 'other'), '.', 'cpu')
    assert budget['total_iter'] == 50 and budget['how'] == 'capped' and budget['steps_from_minutes'] == 240
    meta = {'reference': 'ref', 'budget': budget, 'batches': {}}
    metric = {'mean': 20.0, 'std': None}
    summaries = [{'name': 'x', 'params': 1, 'macs@16': 1, 'speed': {}, 'metrics': {'psnr': metric, 'ssim': metric},
                  'seeds': [0], 'train': {}, 'test_images': 1}]  # fmt: skip
    assert 'Steps: 50 for every arch and seed (train:total_iter), fewer than the 240 that max_minutes 2.0' in (
        results_markdown(summaries, opt, meta)
    )
