"""The benchmark CLI end to end on tiny synthetic pairs: two archs trained through basicsr, measured, reported."""

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
            'print_freq': 1,
            'save_checkpoint_freq': 2,
            'use_rot': False,
            'threads': 1,
        },
        'eval': {'tile': 16, 'tile_overlap': 4},
        'speed': {'sizes': [16], 'macs_size': 16, 'runs': 1, 'threads': 1},
        'archs': [
            {'name': 's2f', 'network_g': {'type': 'S2Former', 'preset': 'small'}},
            {'name': 'vgg', 'network_g': dict(TINY_BASICSR_ARCH)},
        ],
    }


@pytest.mark.slow
def test_benchmark_end_to_end_and_resume(tmp_path):
    data = write_paired_folder(tmp_path / 'data', n=5, size=(32, 32))
    opt_file = write_yaml(tmp_path / 'bench.yml', _options(data))
    out = tmp_path / 'out'
    args = ['-m', 's2former_plugin.benchmark', '-opt', str(opt_file), '--out', str(out)]

    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ('results.json', 'results.md', 'psnr_vs_latency.png', 'training_curves.png'):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / 'results.json').read_text())
    results = {r['name']: r for r in summary['results']}
    assert set(results) == {'s2f', 'vgg'}
    for r in results.values():
        values = [r['params'], r['macs@16'], r['speed']['16']['latency_ms'], *r['metrics'].values()]
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), r
        assert r['train']['total_iter'] == 2 and r['train']['curves'], r['train']
    assert results['s2f']['train']['model_type'] == 'S2FormerModel'
    assert results['vgg']['train']['losses'] == {'pixel_opt': {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0}}
    assert '| s2f |' in (out / 'results.md').read_text()
    # the pairs were selected by position: 3 for training, 2 for testing
    assert len(list((out / '_data' / 'train' / 'gt').iterdir())) == 3 and results['s2f']['test_images'] == 2

    # Re-run: both archs are done and skipped (no new training log, result files untouched).
    stamps = {n: (out / n / 'result.json').stat().st_mtime_ns for n in results}
    logs = sorted(out.glob('*/experiments/*/train_*.log'))
    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'skip s2f: done' in proc.stdout and 'skip vgg: done' in proc.stdout
    assert stamps == {n: (out / n / 'result.json').stat().st_mtime_ns for n in results}
    assert sorted(out.glob('*/experiments/*/train_*.log')) == logs

    # An interrupted arch (no result, no final weights) resumes from its training state.
    (out / 'vgg' / 'result.json').unlink()
    (out / 'vgg' / 'experiments' / 'vgg' / 'models' / 'net_g_latest.pth').unlink()
    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'skip s2f: done' in proc.stdout and 'vgg: training' in proc.stdout
    assert 'Resuming training from epoch' in (out / 'vgg' / 'train_stdout.log').read_text()
    assert (out / 'vgg' / 'result.json').is_file()


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
        (lambda o: o['train'].update(crops=8), 'train:crops: unknown option'),
        (lambda o: o['eval'].update(tiles=8), 'eval:tiles: unknown option'),
        (lambda o: o['speed'].update(run=3), 'speed:run: unknown option'),
        (lambda o: o.update(loss={'s2former_mutliscale': True}), 'loss:s2former_mutliscale: unknown option'),
        (lambda o: o['data'].update(data_root='/x'), 'data:data_root: unknown option'),
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
        'network_g': {'type': 'S2Former', 'preset': 'small'},
        'imports': [],
        'weights': str(weights),
        'param_key': 'params',
        'device': 'cpu',
        'threads': None,
        'sizes': [16],
        'macs_size': 16,
        'runs': 1,
        'tile': 24,
        'tile_overlap': 8,
        'protocol': 'official',
        'metrics': ['psnr', 'ssim'],
        'test_dir': str(data),
        'out': str(tmp_path / 'eval.json'),
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
