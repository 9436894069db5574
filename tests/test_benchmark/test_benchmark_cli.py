"""The benchmark CLI end to end on tiny synthetic pairs: two archs, two seeds each, trained through basicsr on the
same batches, measured together, compared per image and reported; option errors; evaluation as infer + report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import TINY_BASICSR_ARCH, run, write_paired_folder, write_yaml

from s2former_plugin import benchmark


def _options(data: Path) -> dict:
    return {
        'name': 'tiny_bench',
        'device': 'cpu',
        'data': {'layout': 'paired', 'dataroot': str(data), 'train': {'pairs': '1-3'}, 'test': {'pairs': [4, 5]}},
        'train': {
            'batch_size': 2,
            'crop': 16,
            'total_iter': 2,
            'seeds': 2,
            'print_freq': 1,
            'save_checkpoint_freq': 2,
            'use_rot': False,
            'threads': 1,
        },
        'eval': {'tile': 16, 'tile_overlap': 4},
        'speed': {'sizes': [16], 'macs_size': 16, 'runs': 1, 'threads': 1},
        'bootstrap': {'resamples': 200},
        'archs': [
            {'name': 's2f', 'network_g': {'type': 'S2Former', 'preset': 'small'}},
            {'name': 'vgg', 'network_g': dict(TINY_BASICSR_ARCH)},
        ],
    }


@pytest.mark.slow
def test_benchmark_end_to_end_seeds_same_batches_and_skip(tmp_path, capsys):
    data = write_paired_folder(tmp_path / 'data', n=5, size=(32, 32))
    opt_file = write_yaml(tmp_path / 'bench.yml', _options(data))
    out = tmp_path / 'out'
    args = ['-m', 's2former_plugin.benchmark', '-opt', str(opt_file), '--out', str(out)]

    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ('results.json', 'results.md', 'psnr_vs_latency.png', 'training_curves.png', 'speed.json'):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / 'results.json').read_text())
    assert summary['reference'] == 's2f' and summary['budget']['total_iter'] == 2
    results = {r['name']: r for r in summary['results']}
    assert set(results) == {'s2f', 'vgg'}
    for r in results.values():
        values = [r['params'], r['macs@16'], r['speed']['16']['latency_ms'], r['speed']['16']['peak_mem_mb']]
        values += [m['mean'] for m in r['metrics'].values()] + [m['std'] for m in r['metrics'].values()]
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), r
        assert r['seeds'] == [0, 1] and r['train']['total_iter'] == 2 and r['train']['curves'], r['train']
        assert r['same_batches'] is True and r['test_images'] == 2
    assert results['s2f']['train']['model_type'] == 'S2FormerModel' and results['s2f']['vs_reference'] is None
    assert results['vgg']['train']['losses'] == {'pixel_opt': {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0}}

    # mean ± std over seeds and the paired comparison come from the runs' stored per-image scores
    from s2former_plugin.benchmark.statistics import mean_std, paired_comparison

    runs = {n: [json.loads((out / n / f'seed{s}' / 'result.json').read_text()) for s in (0, 1)] for n in results}
    for n, r in results.items():
        assert (r['metrics']['psnr']['mean'], r['metrics']['psnr']['std']) == pytest.approx(
            mean_std([x['metrics']['psnr'] for x in runs[n]])
        )
    per_image = {n: [{k: float(v) for k, v in x['per_image']['psnr'].items()} for x in runs[n]] for n in runs}
    expected = paired_comparison(per_image['vgg'], per_image['s2f'], resamples=200)
    assert results['vgg']['vs_reference']['psnr'] == pytest.approx(expected)
    table = (out / 'results.md').read_text()
    assert '| s2f |' in table and '(reference)' in table and expected['verdict'] in table

    # every arch trained on the same batches under one seed, and other batches under the other seed
    records = {(n, s): (out / n / f'seed{s}' / 'batches.txt').read_text() for n in results for s in (0, 1)}
    assert records['s2f', 0] == records['vgg', 0] and records['s2f', 1] == records['vgg', 1]
    assert records['s2f', 0] != records['s2f', 1] and len(records['s2f', 0].splitlines()) == 2
    # the pairs were selected by position: 3 for training, 2 for testing
    assert len(list((out / '_data' / 'train' / 'gt').iterdir())) == 3

    # Re-run (in this process): every run is done and skipped, the speed measurement is reused; nothing is started.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob('*/seed*/result.json')}
    logs = sorted(out.glob('*/seed*/experiments/*/train_*.log'))
    assert benchmark.main(args[2:]) == 0
    stdout = capsys.readouterr().out
    assert 'skip s2f seed1: done' in stdout and 'skip vgg seed0: done' in stdout and 'skip speed: measured' in stdout
    assert 'training' not in stdout and 'evaluating' not in stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob('*/seed*/result.json')} and len(stamps) == 4
    assert sorted(out.glob('*/seed*/experiments/*/train_*.log')) == logs

    # Another step count in the same folder is refused (the table would mix budgets).
    assert benchmark.main([*args[2:], '--total-iter', '3']) == 2
    assert 'train: the budget options changed' in capsys.readouterr().err


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    opt = _options(data)
    opt['archs'][1]['network_g']['type'] = 'NoSuchNet'
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'a.yml', opt)), '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'archs[1]:network_g:type' in err and 'NoSuchNet' in err and 'S2Former' in err

    opt = _options(tmp_path / 'missing')
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'b.yml', opt)), '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith('benchmark: error: data:dataroot: folder not found')

    opt = _options(data)
    opt['data']['test']['pairs'] = '2-9'
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'c.yml', opt)), '--out', str(tmp_path / 'o')])
    assert code == 2 and 'data:test:pairs' in capsys.readouterr().err

    opt = _options(data)
    opt['data']['test'] = {'pair': '4-5'}
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'e.yml', opt)), '--out', str(tmp_path / 'o')])
    assert code == 2 and "data:test:pair: unknown key; did you mean 'pairs'?" in capsys.readouterr().err

    opt = _options(data)
    opt['reference'] = 's2f'
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'g.yml', opt)), '--only', 'vgg'])
    assert code == 2 and "--only: leaves out the reference arch 's2f'" in capsys.readouterr().err

    opt = _options(data)
    del opt['train']['total_iter']
    code = benchmark.main(['-opt', str(write_yaml(tmp_path / 'd.yml', opt))])
    assert code == 2 and 'train:total_iter' in capsys.readouterr().err


def test_parse_pairs_and_training_log(tmp_path):
    assert benchmark.parse_pairs('2-4', 5, 'x') == [1, 2, 3]
    assert benchmark.parse_pairs([1, '3-4', 3], 5, 'x') == [0, 2, 3]
    assert benchmark.parse_pairs(None, 3, 'x') == [0, 1, 2]
    log = tmp_path / 'train_a_1.log'
    log.write_text(
        '2026 INFO: [a..][epoch:  0, iter:       5, lr:(1.000e-03,)] [eta: 0:00:01, time (data): 0.1 (0.0)] '
        'l_pix: -1.5000e+01 \n'
        '2026 INFO: [a..][epoch:  3, iter:   1,000, lr:(1.000e-03,)] [eta: 0:00:01, time (data): 0.1 (0.0)] '
        'l_pix: -2.0000e+01 \n'
    )
    assert benchmark.parse_training_log(str(tmp_path)) == {'l_pix': [(5, -15.0), (1000, -20.0)]}


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        (lambda o: o['train'].update(crops=8), "train:crops: unknown key; did you mean 'crop'?"),
        (lambda o: o['eval'].update(tiles=8), "eval:tiles: unknown key; did you mean 'tile'?"),
        (lambda o: o['speed'].update(run=3), "speed:run: unknown key; did you mean 'runs'?"),
        (lambda o: o['train'].update(sedes=3), "train:sedes: unknown key; did you mean 'seeds'?"),
        (
            lambda o: o.update(loss={'s2former_mutliscale': True}),
            "loss:s2former_mutliscale: unknown key; did you mean 's2former_multiscale'?",
        ),
        (lambda o: o['data'].update(data_root='/x'), "data:data_root: unknown key; did you mean 'dataroot'?"),
        (lambda o: o.update(refrence='s2f'), "refrence: unknown key; did you mean 'reference'?"),
        (lambda o: o.update(bootstrap={'resample': 9}), 'bootstrap:resample: unknown key; did you mean'),
        (lambda o: o['archs'][0].update(netwrok_g={}), "archs[0]:netwrok_g: unknown key; did you mean 'network_g'?"),
        (lambda o: o['archs'][0].update(loss={'s2former_ud': True}), 'archs[0]:loss:s2former_ud: unknown key; did'),
        (lambda o: o.update(reference='s2F'), "reference: no arch named 's2F'; did you mean 's2f'?"),
        (lambda o: o['train'].update(seeds=0), 'train:seeds: must be an integer >= 1'),
        (lambda o: o['bootstrap'].update(confidence=1.5), 'bootstrap:confidence: must be between 0 and 1'),
        (lambda o: o['train'].update(batch_size=True), 'train:batch_size: must be an integer'),
        (lambda o: o['train'].update(total_iter=True), 'train:total_iter: must be a number'),
        (lambda o: o['eval'].update(tile=False), 'eval:tile: must be an integer'),
        (lambda o: o['speed'].update(sizes=[16, True]), 'speed:sizes'),
        (lambda o: o['train'].update(use_rot=1), 'train:use_rot: must be true or false'),
        (lambda o: o['train'].update(crop=0), 'train:crop: must be an integer >= 1'),
        (lambda o: o['eval'].update(tile=16, tile_overlap=16), 'eval:tile_overlap'),
        (lambda o: o['archs'][0].update(loss={'s2former_udl': 1}), 'archs[0]:loss:s2former_udl: must be true'),
    ],
)
def test_option_typos_and_bools_are_rejected(tmp_path, change, message):
    opt = _options(tmp_path / 'data')
    change(opt)
    with pytest.raises(benchmark.BenchmarkError) as err:
        benchmark.load_options(str(write_yaml(tmp_path / 'o.yml', opt)))
    assert str(err.value).startswith(message) and '\n' not in str(err.value)


def test_free_form_optimiser_and_scheduler_keys_are_kept(tmp_path):
    opt = _options(tmp_path / 'data')
    opt['train']['optim_g'] = {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.01}
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [1], 'gamma': 0.5}
    loaded = benchmark.load_options(str(write_yaml(tmp_path / 'o.yml', opt)))
    assert loaded['train']['optim_g']['weight_decay'] == 0.01 and loaded['train']['scheduler']['milestones'] == [1]


def test_evaluation_scores_like_infer_and_report(tmp_path, monkeypatch):
    """The benchmark's evaluation reads, converts and scores test images as infer + report do: same numbers."""
    from s2former_plugin import infer, report
    from s2former_plugin.archs.s2former_arch import S2Former

    data = write_paired_folder(tmp_path / 'data', n=2, size=(30, 37))
    torch.manual_seed(0)
    weights = tmp_path / 'w.pth'
    torch.save(S2Former(preset='small').state_dict(), weights)
    spec = {
        'imports': [],
        'device': 'cpu',
        'threads': None,
        'tile': 24,
        'tile_overlap': 8,
        'protocol': 'official',
        'metrics': ['psnr', 'ssim'],
        'test_dir': str(data),
        'speed': None,
        'runs': [
            {
                'network_g': {'type': 'S2Former', 'preset': 'small'},
                'weights': str(weights),
                'param_key': 'params',
                'out': str(tmp_path / 'eval.json'),
            }
        ],
    }
    (tmp_path / 'spec.json').write_text(json.dumps(spec))
    monkeypatch.setattr('sys.argv', ['evaluate_child', str(tmp_path / 'spec.json')])
    benchmark.evaluate_child()
    result = json.loads((tmp_path / 'eval.json').read_text())
    assert result['test_images'] == 2

    argv = ['--weights', str(weights), '--input', str(data / 'lq'), '--output', str(tmp_path / 'pred')]
    assert infer.main([*argv, '--tile', '24', '--tile-overlap', '8', '--device', 'cpu', '--no-progress']) == 0
    argv = ['--pred', str(tmp_path / 'pred'), '--gt', str(data / 'gt'), '--out', str(tmp_path / 'report')]
    assert report.main([*argv, '--protocol', 'official', '--workers', '1', '--no-progress']) == 0
    doc = json.loads((tmp_path / 'report' / 'metrics.json').read_text())
    assert result['metrics'] == pytest.approx(doc['mean'], rel=1e-6)
    # the per-image scores are the report's per-image scores (keys: the test pairs' names)
    per_image = {m: [result['per_image'][m][k] for k in sorted(result['per_image'][m])] for m in ('psnr', 'ssim')}
    assert {m: sum(v) / len(v) for m, v in per_image.items()} == pytest.approx(doc['mean'], rel=1e-6)
