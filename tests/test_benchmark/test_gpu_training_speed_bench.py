"""benchmarks/gpu_training_speed.py on the CPU (its smoke-test setting): it runs, writes the JSON it promises, refuses
a warm-up that leaves no timed step, and its headline speed-up counts only modes whose losses track eager's."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from helpers import REPO

SCRIPT = REPO / 'benchmarks' / 'gpu_training_speed.py'


@pytest.fixture(scope='module')
def script():
    spec = importlib.util.spec_from_file_location('gpu_training_speed', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_the_figures(script, tmp_path, capsys):
    out = tmp_path / 'gpu_cpu.json'
    argv = ['--device', 'cpu', '--preset', 'small', '--crop', '64', '--steps', '2', '--warmup', '1', '--batches', '1']
    argv += ['--precisions', 'fp32', '--modes', 'eager', 'graphed', '--infer-sizes', '64', '--infer-runs', '1']
    assert script.main([*argv, '--matmul-n', '64', '--no-profile', '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    eager = report['training']['batch1_fp32']['eager']
    assert eager['steps'] == 2 and len(eager['losses']) == 2 and all(math.isfinite(v) for v in eager['losses'])
    assert eager['step_ms'] > 0 and eager['images_per_s'] > 0
    assert report['training']['batch1_fp32']['graphed'] == {'skipped': 'CUDA graphs need a CUDA device'}
    assert report['inference']['64_fp32']['eager'] > 0
    # no official code given: no ratio is made up
    assert report['training_speedup_batch1'] is None and report['inference_speedup_256'] is None
    assert 'wrote' in capsys.readouterr().out


def test_a_warmup_that_leaves_no_timed_step_is_refused(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(['--device', 'cpu', '--steps', '3'])  # --warmup defaults to 10
    assert exc.value.code == 2
    assert '--warmup must be >= 0 and below --steps (got --warmup 10, --steps 3)' in capsys.readouterr().err


def test_speedup_counts_only_modes_whose_losses_track_eager(script, capsys):
    case = {
        'eager': {'step_ms': 100.0},
        'compiled': {'step_ms': 20.0, 'max_rel_loss_diff_vs_eager': 0.05},  # drifted: left out
        'graphed': {'step_ms': 40.0, 'max_rel_loss_diff_vs_eager': 0.001, 'graphed': False},
        'nan': {'step_ms': 10.0, 'max_rel_loss_diff_vs_eager': float('nan')},
        'failed': {'failed': 'RuntimeError: x'},
        'official': {'step_ms': 400.0},
    }
    ours = script.faithful_modes(case)
    assert ours == {'eager': 100.0, 'graphed (eager fallback)': 40.0}
    assert 'compiled: left out of the speed-up' in capsys.readouterr().out
    assert script.speedup(400.0, ours) == {'speedup': 10.0, 'ours_mode': 'graphed (eager fallback)', 'ours_ms': 40.0}
    assert math.isnan(script.worst([0.1, float('nan')])) and math.isnan(script.worst([float('nan'), 0.1]))
    assert script.worst([0.1, 0.3]) == 0.3
    unchecked = script.faithful_modes({'compiled': {'step_ms': 20.0}})  # eager failed: nothing to compare with
    assert unchecked == {'compiled (losses unchecked: no eager run)': 20.0}


def test_items_past_the_budget_are_recorded_as_skipped_never_as_figures(script, tmp_path):
    out = tmp_path / 'gpu_cpu.json'
    argv = ['--device', 'cpu', '--preset', 'small', '--crop', '64', '--steps', '2', '--warmup', '1', '--batches', '1']
    argv += ['--precisions', 'fp32', '--infer-sizes', '64', '128', '--matmul-n', '64', '--budget', '0']
    assert script.main([*argv, '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    skipped = {'skipped': 'out of --budget'}
    assert report['training']['batch1_fp32'] == {'eager': skipped, 'graphed': skipped, 'compiled': skipped}
    assert report['inference'] == {'64_fp32': skipped, '128_fp32': skipped}
    assert report['profile'] == {'batch1_fp32': skipped}
    assert report['training_speedup_batch1'] is None and report['inference_speedup_256'] is None
