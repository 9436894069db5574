"""End-to-end runs of ``python -m basicsr.train`` in subprocesses, from a temporary working directory."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import basicsr
import pytest
from helpers import (
    clean_env,
    run,
    run_torchrun,
    tiny_basicsr_options,
    tiny_s2former_options,
    write_paired_folder,
    write_yaml,
)

pytestmark = pytest.mark.slow
BASICSR_ROOT = Path(basicsr.__file__).resolve().parents[1]  # where stock basicsr would write experiments/


@pytest.fixture()
def workdir(tmp_path):
    write_paired_folder(tmp_path / 'data')
    return tmp_path


def test_train_writes_under_working_directory(workdir):
    write_yaml(workdir / 'tiny.yml', tiny_basicsr_options(workdir / 'data', name='cwd_run'))
    proc = run(['-m', 'basicsr.train', '-opt', 'tiny.yml'], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = workdir / 'experiments' / 'cwd_run'
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_3.pth', 'net_g_6.pth', 'net_g_latest.pth']
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['3.state', '6.state']
    log = next(exp.glob('train_cwd_run_*.log')).read_text()
    assert 's2former_plugin' in log and 'active' in log
    assert not (BASICSR_ROOT / 'experiments' / 'cwd_run').exists()
    assert not (BASICSR_ROOT / 'tb_logger' / 'cwd_run').exists()


def test_explicit_plugin_entry_point(workdir):
    write_yaml(workdir / 'tiny.yml', tiny_basicsr_options(workdir / 'data', name='explicit', total_iter=2, save_freq=2))
    proc = run(['-m', 's2former_plugin.train', '-opt', 'tiny.yml'], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / 'experiments' / 'explicit' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('arch', ['basicsr_arch', 's2former'])
def test_auto_resume_after_sigkill(workdir, arch):
    # A long run is killed (SIGKILL) right after its second checkpoint; --auto_resume continues from it.
    make = tiny_basicsr_options if arch == 'basicsr_arch' else functools.partial(tiny_s2former_options, vgg19=None)
    opt = make(workdir / 'data', name='killed', total_iter=100000, save_freq=2)
    opt['val']['val_freq'] = 10**9  # validate only at the end
    write_yaml(workdir / 'tiny.yml', opt)
    states = workdir / 'experiments' / 'killed' / 'training_states'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'basicsr.train', '-opt', 'tiny.yml'],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not (states / '4.state').exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, 'training never reached iteration 4'
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    models = workdir / 'experiments' / 'killed' / 'models'
    saved_before = {p.name: p.read_bytes() for p in models.iterdir()}
    last = max(int(p.stem) for p in states.glob('*.state'))
    assert last >= 4 and not list(states.glob('*.tmp*'))

    resumed = run(
        ['-m', 'basicsr.train', '-opt', 'tiny.yml', '--auto_resume', '--force_yml', f'train:total_iter={last + 2}'],
        cwd=workdir,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = max((workdir / 'experiments' / 'killed').glob('train_killed_*.log'), key=os.path.getmtime).read_text()
    assert f'iter: {last}.' in log and 'End of training' in log
    assert (models / 'net_g_latest.pth').is_file() and (states / f'{last + 2}.state').is_file()
    for name, data in saved_before.items():  # nothing saved before the kill was lost or rewritten
        assert (models / name).read_bytes() == data


def test_torchrun_two_processes_on_cpu(workdir):
    opt = tiny_basicsr_options(workdir / 'data', name='ddp', total_iter=4, save_freq=2)
    write_yaml(workdir / 'tiny.yml', opt)
    proc = run_torchrun(['-m', 'basicsr.train', '-opt', 'tiny.yml', '--launcher', 'pytorch'], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = workdir / 'experiments' / 'ddp'
    log = next(exp.glob('train_ddp_*.log')).read_text()
    assert 'World size (gpu number): 2' in log and 'End of training' in log
    assert (exp / 'training_states' / '4.state').is_file()


def test_basicsr_test_with_official_checkpoint(workdir, parity_fixture):
    # `python -m basicsr.test` evaluates an official udrs2former_*.pth; results land under the working directory.
    import torch

    torch.save(parity_fixture['state_dict'], workdir / 'udrs2former_small.pth')
    folder = {
        'type': 'PairedImageDataset',
        'dataroot_gt': str(workdir / 'data' / 'gt'),
        'dataroot_lq': str(workdir / 'data' / 'lq'),
        'filename_tmpl': '{}',
        'io_backend': {'type': 'disk'},
    }
    opt = {
        'name': 'official_eval', 'model_type': 'S2FormerModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {**folder, 'name': 'tiny_test'}},
        'network_g': {'type': 'S2Former', 'preset': 'small'},
        'path': {'pretrain_network_g': str(workdir / 'udrs2former_small.pth'), 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'tile': None,
                'metrics': {'psnr': {'type': 'pyiqa', 'metric': 'psnr'}}},
    }  # fmt: skip
    write_yaml(workdir / 'test.yml', opt)
    proc = run(['-m', 'basicsr.test', '-opt', 'test.yml'], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = workdir / 'results' / 'official_eval'
    log = next(results.glob('test_official_eval_*.log')).read_text()
    assert 'official state dict' in log and '# psnr:' in log
    assert len(list((results / 'visualization' / 'tiny_test').glob('*.png'))) == 4
    assert not (BASICSR_ROOT / 'results' / 'official_eval').exists()


# ----------------------------------------------------------------------------------------------------------------
# One line at start-up, not a traceback later (docs/reliability.md)
# ----------------------------------------------------------------------------------------------------------------
def _one_line_failure(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('train: error: ') and expected in last, last
    assert 'Traceback' not in proc.stderr


def _lmdb_dataset(workdir: Path, killed: bool) -> dict:
    """A create_lmdb conversion of the tiny folder; ``killed``: as a killed run leaves it (ledger, no meta_info)."""
    from s2former_plugin.data.lmdb_convert import main as create_lmdb

    src = workdir / 'data'
    out = workdir / 'lmdb'
    argv = ['--layout', 'paired', '--input', str(src), '--output', str(out), '--workers', '1']
    assert create_lmdb([*argv, '--no-progress']) == 0
    if killed:
        for side in ('lq', 'gt'):
            (out / f'{side}.lmdb' / 'meta_info.txt').unlink()
        (out / '.create_lmdb.ledger').write_text('000\n')
    return {'dataroot_lq': str(out / 'lq.lmdb'), 'dataroot_gt': str(out / 'gt.lmdb'), 'io_backend': {'type': 'lmdb'}}


# The other dataset problems take the same path: tests/test_data/test_checks.py.
@pytest.mark.parametrize('case', ['killed-lmdb', 'empty-folder'])
def test_basicsr_paired_dataset_problems_are_one_line_at_start_up(workdir, case):
    import cv2
    import lmdb
    import numpy as np

    opt = tiny_basicsr_options(workdir / 'data', name=case)
    train, val = opt['datasets']['train'], opt['datasets']['val']
    if case in ('killed-lmdb', 'missing-key'):
        train.update(_lmdb_dataset(workdir, killed=case == 'killed-lmdb'))
        if case == 'missing-key':
            env = lmdb.open(train['dataroot_gt'])
            with env.begin(write=True) as txn:
                txn.delete(b'001')
            env.close()
        expected = 'has no meta_info.txt (a conversion that was interrupted' if case == 'killed-lmdb' else 'e.g. 001'
    elif case == 'empty-folder':
        for sub in ('lq_empty', 'gt_empty'):
            (workdir / sub).mkdir()
        train.update(dataroot_lq=str(workdir / 'lq_empty'), dataroot_gt=str(workdir / 'gt_empty'))
        expected = 'holds no image (an empty dataset)'
    elif case == 'size-mismatch':
        cv2.imwrite(str(workdir / 'data' / 'gt' / '002.png'), np.zeros((20, 24, 3), np.uint8))
        expected = 'datasets:val: 002.png: LQ 24x24 and GT 24x20 differ'
    else:
        for sub in ('lq', 'gt'):
            cv2.imwrite(str(workdir / 'data' / sub / '003.png'), np.zeros((8, 24, 3), np.uint8))
        opt['val']['metrics']['ssim'] = {'type': 'calculate_ssim', 'crop_border': 0}
        expected = 'datasets:val: 003.png is 24x8, smaller than the 11 pixels val:metrics:ssim needs'
    assert val['dataroot_gt'] == str(workdir / 'data' / 'gt')
    write_yaml(workdir / 't.yml', opt)
    _one_line_failure(run(['-m', 'basicsr.train', '-opt', 't.yml'], cwd=workdir), expected)


@pytest.mark.parametrize('case', ['num-gpu', 'unknown-preset', 'path-typo'])
def test_launch_and_network_problems_are_one_line_at_start_up(workdir, case):
    opt = tiny_s2former_options(workdir / 'data', None, name=case)
    if case == 'path-typo':
        opt['path']['save_safetensor'] = True
        expected = "path:save_safetensor: unknown key; did you mean 'save_safetensors'?"
    elif case == 'num-gpu':
        opt['num_gpu'] = 2
        expected = 'num_gpu: 2, but this machine has 0 visible GPU(s)'
    elif case == 'unknown-preset':
        opt['network_g']['preset'] = 'smal'
        expected = "network_g: unknown S2Former preset 'smal'"
    else:
        opt['network_g']['type'] = 'S2Formr'
        expected = 'network_g: '
    write_yaml(workdir / 't.yml', opt)
    _one_line_failure(run(['-m', 'basicsr.train', '-opt', 't.yml'], cwd=workdir), expected)
    assert not (workdir / 'experiments' / case / 'models').exists() or not any(
        (workdir / 'experiments' / case / 'models').iterdir()
    )


def test_resuming_with_another_network_configuration_is_refused(workdir):
    """Same weight shapes (the head count leaves none) or another preset: refused with the differing keys named;
    the last log line of the first run shows no negative eta."""
    opt = tiny_s2former_options(workdir / 'data', None, name='resume_cfg', total_iter=2, save_freq=2)
    write_yaml(workdir / 't.yml', opt)
    first = run(['-m', 'basicsr.train', '-opt', 't.yml'], cwd=workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    log = next((workdir / 'experiments' / 'resume_cfg').glob('train_resume_cfg_*.log')).read_text()
    assert 'eta: 0:00:00' in log and '-1 day' not in log
    opt['train']['total_iter'] = 4
    for change, expected in (
        ({'num_heads': [1, 1, 1, 1, 1]}, 'num_heads: None -> [1, 1, 1, 1, 1]'),
        ({'preset': 'paper'}, "preset: 'small' -> 'paper'"),
    ):
        changed = {**opt, 'network_g': {**opt['network_g'], **change}}
        write_yaml(workdir / 't.yml', changed)
        proc = run(['-m', 'basicsr.train', '-opt', 't.yml', '--auto_resume'], cwd=workdir)
        _one_line_failure(proc, 'network_g differs from the options it was trained with')
        assert expected in proc.stderr
    write_yaml(workdir / 't.yml', opt)  # the options it was trained with: resumes
    assert run(['-m', 'basicsr.train', '-opt', 't.yml', '--auto_resume'], cwd=workdir).returncode == 0
