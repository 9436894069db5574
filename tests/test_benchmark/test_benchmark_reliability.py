"""``benchmark`` on bad data: no table mixes test sets (a finished arch whose test data changed is refused, as is a
report over results of different test sets), train and test never overlap, the output is never inside the data.

The evaluation subprocess is stubbed (``fake_eval``): the data checks all happen before it. Each test (or
parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import folder_digest


def _bench_options(data, train='1-3', test=(4, 5)) -> dict:
    (data / 'w.pth').write_bytes(b'')  # never read: the evaluation is stubbed
    return {
        'name': 'fp',
        'device': 'cpu',
        'data': {'layout': 'paired', 'dataroot': str(data), 'train': {'pairs': train}, 'test': {'pairs': list(test)}},
        'train': {'batch_size': 1, 'crop': 16, 'total_iter': 1, 'threads': 1},
        'eval': {'tile': 0, 'tile_overlap': 0},
        'speed': {'sizes': [16], 'macs_size': 16, 'runs': 1, 'threads': 1},
        'archs': [
            {'name': 'given', 'network_g': {'type': 'S2Former', 'preset': 'small'}, 'checkpoint': str(data / 'w.pth')}
        ],
    }


@pytest.fixture
def fake_eval(monkeypatch):
    """The benchmark's evaluation subprocess replaced by a stub result (the data checks happen before it)."""
    import json

    calls = []

    def child(cmd, cwd, log_path, threads, what):
        with open(cmd[-1]) as f:
            spec = json.load(f)
        if spec.get('speed'):
            with open(spec['speed']['out'], 'w') as f:
                json.dump({a['name']: {'params': 1, 'macs@16': 1, 'speed': {}} for a in spec['speed']['archs']}, f)
        for run in spec.get('runs') or []:
            with open(run['out'], 'w') as f:
                metrics = {m: 30.0 if m == 'psnr' else 0.9 for m in spec['metrics']}
                per_image = {m: {'000': v, '001': v} for m, v in metrics.items()}
                json.dump({'metrics': metrics, 'test_images': 2, 'per_image': per_image}, f)
        calls.append(what)

    from s2former_plugin.benchmark import driver, report

    monkeypatch.setattr(driver, 'run_child', child)
    monkeypatch.setattr(report, 'write_plots', lambda *a: None)
    return calls


def test_benchmark_refuses_finished_arch_after_test_data_changed(tmp_path, capsys, fake_eval):
    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    argv = ['-opt', str(write_yaml(tmp_path / 'b.yml', _bench_options(data))), '--out', str(tmp_path / 'o')]
    assert benchmark.main(argv) == 0 and fake_eval == ['evaluation']
    result = __import__('json').loads((tmp_path / 'o' / 'given' / 'checkpoint' / 'result.json').read_text())
    assert result['data']['test_pairs'] == 2 and len(result['data']['test']) == 16
    cv2.imwrite(str(data / 'gt' / '004.png'), np.zeros((16, 16, 3), np.uint8))  # same name, other content
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert 'archs:given:' in err and 'test set changed' in err and 'mix test sets' in err
    assert fake_eval == ['evaluation']  # the stale result was not reused


@pytest.mark.parametrize('how', ['same-positions', 'copied-file'])
def test_benchmark_refuses_overlapping_train_and_test(tmp_path, capsys, fake_eval, how):
    import shutil

    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    if how == 'same-positions':
        opt = _bench_options(data, train='1-4', test=(4, 5))
    else:
        shutil.copy(data / 'gt' / '001.png', data / 'gt' / '004.png')
        opt = _bench_options(data)
    argv = ['-opt', str(write_yaml(tmp_path / 'b.yml', opt)), '--out', str(tmp_path / 'o')]
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert 'share images with training pairs' in err and len(err.strip().splitlines()) == 1
    assert fake_eval == []


def test_benchmark_report_refuses_mixed_test_sets():
    from s2former_plugin import benchmark

    results = [{'name': 'a', 'data': {'test': 'x'}}, {'name': 'b', 'data': {'test': 'y'}}]
    with pytest.raises(benchmark.BenchmarkError, match='2 different test sets'):
        benchmark.write_results(results, {'name': 'n'}, '.', {})


@pytest.mark.parametrize('out', ['data', 'data/results'])
def test_benchmark_never_writes_into_its_data(tmp_path, capsys, fake_eval, out):
    from helpers import write_paired_folder, write_yaml

    from s2former_plugin import benchmark

    data = write_paired_folder(tmp_path / 'data', n=5, size=(16, 16))
    opt_file = write_yaml(tmp_path / 'b.yml', _bench_options(data))
    before = folder_digest(data)
    assert benchmark.main(['-opt', str(opt_file), '--out', str(tmp_path / out)]) == 2
    assert 'is inside the data folder' in capsys.readouterr().err
    assert folder_digest(data) == before and fake_eval == []
