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
