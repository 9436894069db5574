"""The shipped YAML options: every type they name exists, and the quickstart really trains (subprocess)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from helpers import REPO, run, run_torchrun, tiny_s2former_options, write_paired_folder, write_yaml

OPTIONS = sorted((REPO / 'options').glob('s2former*.yml')) + [REPO / 'options' / 'quickstart.yml']


def _load(path: Path) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


@pytest.mark.parametrize('path', OPTIONS, ids=lambda p: p.name)
def test_option_types_are_registered(path):
    opt = _load(path)
    assert opt['model_type'] in MODEL_REGISTRY
    assert opt['network_g']['type'] in ARCH_REGISTRY
    for dataset in opt['datasets'].values():
        assert dataset['type'] in DATASET_REGISTRY
    for key in ('psnr_opt', 'perceptual_opt', 'udl_opt'):
        if opt['train'].get(key):
            assert opt['train'][key]['type'] in LOSS_REGISTRY
    for metric in opt['val']['metrics'].values():
        assert metric['type'] in METRIC_REGISTRY
    assert opt['train']['scheduler']['type'] == 'CyclicLR'


def test_paper_options_follow_the_official_training(tmp_path):
    for path in OPTIONS[:-1]:
        opt = _load(path)
        train = opt['train']
        assert opt['datasets']['train']['gt_size'] == 128 and opt['datasets']['train']['batch_size_per_gpu'] == 36
        assert train['optim_g']['lr'] == 7e-4 and train['scheduler']['max_lr'] == pytest.approx(1.2 * 7e-4)
        assert train['scheduler']['step_size_up'] == 400
        assert train['perceptual_opt']['loss_weight'] == 0.2
        assert opt['datasets']['train']['io_backend']['type'] == 'lmdb'
        assert 'preset' not in opt['network_g']  # the paper's configuration


@pytest.mark.slow
def test_quickstart_trains_and_validates(tmp_path):
    # The README's main command, shortened with --force_yml (the file itself is used as shipped).
    args = [
        '-m',
        'basicsr.train',
        '-opt',
        str(REPO / 'options' / 'quickstart.yml'),
        '--force_yml',
        'train:total_iter=2',
        'val:val_freq=2',
        'logger:save_checkpoint_freq=2',
        'logger:print_freq=1',
        'datasets:train:num_samples=4',
        'datasets:val:num_samples=1',
        'datasets:val:gt_size=48',
    ]
    proc = run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 's2former_quickstart'
    log = next(exp.glob('train_*.log')).read_text()
    assert 'S2FormerModel' in log and 'l_udl' in log
    psnr = [float(v) for v in re.findall(r'# psnr: ([-\d.]+)', log)]
    assert psnr and all(5 < v < 60 for v in psnr)
    # the validation after the loop is numbered total_iter (basicsr's counter reads 4) and, as iteration 2 was just
    # validated, not repeated
    assert set(re.findall(r'Best: [-\d.]+ @ (\d+) iter', log)) == {'2'}
    assert 'iteration 2 is validated above; not repeated' in log
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    assert list((exp / 'visualization').rglob('*.png'))


@pytest.mark.slow
def test_torchrun_s2former_two_processes(tmp_path, vgg19_file):
    write_paired_folder(tmp_path / 'data', n=4, size=(24, 24))
    opt = tiny_s2former_options(tmp_path / 'data', vgg19_file, name='s2f_ddp', total_iter=2, save_freq=2)
    write_yaml(tmp_path / 'ddp.yml', opt)
    proc = run_torchrun(['-m', 'basicsr.train', '-opt', 'ddp.yml', '--launcher', 'pytorch'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = next((tmp_path / 'experiments' / 's2f_ddp').glob('train_*.log')).read_text()
    assert 'World size (gpu number): 2' in log and '# psnr:' in log and 'End of training' in log
