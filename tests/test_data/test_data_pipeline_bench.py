"""benchmarks/data_pipeline.py on tiny LMDBs: the script runs as a user runs it, its figures agree with each other,
the worker advice is the arithmetic it states, and bad input ends in one line naming the option."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

import pytest
from helpers import REPO, run, write_paired_folder

SCRIPT = REPO / 'benchmarks' / 'data_pipeline.py'
TINY = ['--gt-size', '16', '--batch', '2', '--batches', '2', '--workers', '0']


def _bench():
    spec = importlib.util.spec_from_file_location('data_pipeline', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_line(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith('{"benchmark": "data_pipeline"')]
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_synthetic_run_as_a_user_runs_it(tmp_path):
    args = ['--synthetic', '3', '--size', '40x48', '--gt-size', '32', '--batch', '2', '--batches', '2']
    proc = run([str(SCRIPT), *args, '--workers', '0,1', '--step-ms', '200,40'], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _json_line(proc.stdout)
    assert result['pairs'] == 3 and result['batch'] == 2 and result['gt_size'] == 32 and result['augment']
    assert result['cuda'] is False and result['pin_memory'] is False  # the tests run without CUDA
    assert [r['workers'] for r in result['results']] == [0, 1]
    for r in result['results']:
        assert math.isfinite(r['images_per_s']) and r['images_per_s'] > 0
        assert r['per_worker'] == pytest.approx(r['images_per_s'] / max(r['workers'], 1))
        assert r['images_per_s'] == pytest.approx(2 * 1000 / r['batch_ms'])  # 2 crops every batch_ms
        assert r['first_batch_s'] > 0 and r['all_images_per_s'] == [r['images_per_s']]
    zero, one = result['results']
    assert zero['cpu_ms_per_image'] == pytest.approx(zero['main_cpu_ms_per_batch'] / 2) and zero['cpu_ms_per_image'] > 0
    assert zero['worker_cpu_s'] is None and zero['worker_cores_busy'] is None
    # two tiny batches: far less worker CPU time than /proc's ticks can measure to 2 %, so no figure from it
    assert one['worker_cpu_s'] is not None and one['worker_cpu_s'] < 0.5
    assert one['cpu_ms_per_image'] is None and one['worker_cores_busy'] is None
    assert result['advice_basis'] == 'CPU time per image with 0 workers'
    assert result['core_images_per_s'] == pytest.approx(1000 / zero['cpu_ms_per_image'])
    assert [a['step_ms'] for a in result['advice']] == [200, 40]
    for a in result['advice']:
        assert a['images_per_s_needed'] == pytest.approx(2000 / a['step_ms'])
        assert a['workers'] == max(1, math.ceil(a['images_per_s_needed'] / result['core_images_per_s']))
    assert '| `num_worker_per_gpu` | images/s | images/s per worker |' in proc.stdout
    assert '3 synthetic 40x48 pairs' in proc.stdout
    assert not list(Path(tmp_path).iterdir())  # the temporary LMDB is not left in the working directory


def test_workers_needed_is_the_stated_arithmetic():
    bench = _bench()
    # the paper's batch at today's ~200 ms H200 step and at a 5x faster one
    assert bench.workers_needed(36, 200, 45.0) == {'step_ms': 200, 'images_per_s_needed': 180.0, 'workers': 4}
    assert bench.workers_needed(36, 200, 44.9)['workers'] == 5
    assert bench.workers_needed(36, 40, 45.0) == {'step_ms': 40, 'images_per_s_needed': 900.0, 'workers': 20}
    assert bench.workers_needed(2, 1000, 500.0)['workers'] == 1  # at least one


def test_cpu_time_per_image_counts_where_the_loading_runs():
    bench = _bench()
    row = {'workers': 0, 'main_cpu_ms_per_batch': 360.0, 'worker_cpu_s': None}
    assert bench.loader_cpu_ms_per_image(row, 36, 10) == 10.0  # 0 workers: the main process loads
    row = {'workers': 2, 'main_cpu_ms_per_batch': 2.0, 'worker_cpu_s': 3.6}
    assert bench.loader_cpu_ms_per_image(row, 36, 10) == pytest.approx(10.0)  # 3.6 s over 360 images
    assert bench.loader_cpu_ms_per_image(dict(row, worker_cpu_s=0.49), 36, 10) is None  # too few ticks
    assert bench.loader_cpu_ms_per_image(dict(row, worker_cpu_s=None), 36, 10) is None  # no /proc
    start, cpu0 = time.process_time(), bench._cpu_seconds(os.getpid())
    while time.process_time() - start < 0.3:  # busy: CPU time to count
        pass
    used = bench._cpu_seconds(os.getpid()) - cpu0
    assert used == pytest.approx(time.process_time() - start, abs=0.05)


def test_dataset_options_are_the_training_options(tmp_path):
    bench = _bench()
    args = bench.build_parser().parse_args(['--pin-memory'])
    opt = bench.dataset_options(str(tmp_path), args, 3)
    assert opt['type'] == 'PairedImageDataset' and opt['io_backend'] == {'type': 'lmdb'}
    assert opt['dataroot_lq'] == str(tmp_path / 'lq.lmdb') and opt['dataroot_gt'] == str(tmp_path / 'gt.lmdb')
    assert (opt['gt_size'], opt['batch_size_per_gpu'], opt['num_worker_per_gpu']) == (128, 36, 3)  # the paper's
    assert opt['use_hflip'] and opt['use_rot'] and opt['pin_memory'] and 'persistent_workers' not in opt
    assert bench.build_parser().parse_args([]).step_ms == [200.0, 40.0]


@pytest.mark.parametrize('layout, pairs', [('paired', 3), (None, 6)], ids=['layout', 'every-image'])
def test_images_folder_as_pairs_or_each_its_own_target(tmp_path, capsys, layout, pairs):
    write_paired_folder(tmp_path / 'data', n=3, size=(24, 20))
    argv = ['--images', str(tmp_path / 'data'), *TINY] + (['--layout', layout] if layout else [])
    assert _bench().main(argv) == 0
    result = _json_line(capsys.readouterr().out)
    assert result['pairs'] == pairs and result['advice_basis'] == 'CPU time per image with 0 workers'
    assert [r['workers'] for r in result['results']] == [0]


def test_max_images_takes_the_first_pairs(tmp_path, capsys):
    write_paired_folder(tmp_path / 'data', n=4, size=(24, 20))
    argv = ['--images', str(tmp_path / 'data'), '--layout', 'paired', '--max-images', '2', *TINY]
    assert _bench().main(argv) == 0
    assert _json_line(capsys.readouterr().out)['pairs'] == 2


def test_bad_input_ends_in_one_line(tmp_path, capsys):
    bench = _bench()
    write_paired_folder(tmp_path / 'data', n=2, size=(24, 20))
    (tmp_path / 'empty').mkdir()
    cases = [
        (['--images', str(tmp_path / 'data'), '--layout', 'paired', '--gt-size', '21'], '--gt-size 21: image 000'),
        (['--images', str(tmp_path / 'empty')], '--images: no image files under'),
        (['--images', str(tmp_path / 'missing')], '--images: folder not found'),
        (['--images', str(tmp_path / 'empty'), '--layout', 'rain200'], '--images:'),
        (['--layout', 'paired'], '--layout needs --images'),
    ]
    for argv, message in cases:
        assert bench.main([*argv, '--batches', '1', '--workers', '0']) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith('data_pipeline.py: error: ') and message in err and '\n' not in err, err
    for bad in (['--workers', '0,x'], ['--workers', '1,1'], ['--step-ms', '0'], ['--size', '12']):
        with pytest.raises(SystemExit) as exc:
            bench.build_parser().parse_args(bad)
        assert exc.value.code == 2
        assert bad[0] in capsys.readouterr().err
