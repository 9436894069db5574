"""The user's typos and wrongly typed values in the S2Former training options (``check_training_options``): each
refused in one line, with a "did you mean" where a known key is close; the shipped options pass.

``test_s2former_options.py`` pins the boundaries of every check. Each test (or parametrised case) here is one row
of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import pytest
from helpers import rename_option


def _set(opt: dict, dotted: str, value) -> dict:
    *path, last = dotted.split('.')
    node = opt
    for key in path:
        node = node[key]
    node[last] = value
    return opt


OPTION_TYPOS = {
    'train-ema_decy': (
        lambda o: rename_option(o, 'train.ema_decay', 'ema_decy'),
        "train:ema_decy: unknown key; did you mean 'ema_decay'?",
    ),
    'train-udl_otp': (
        lambda o: rename_option(o, 'train.udl_opt', 'udl_otp'),
        "train:udl_otp: unknown key; did you mean 'udl_opt'?",
    ),
    'train-max_grad_nrom': (lambda o: _set(o, 'train.max_grad_nrom', 1.0), "did you mean 'max_grad_norm'?"),
    'train-optim': (
        lambda o: rename_option(o, 'train.optim_g', 'optim'),
        "train:optim: unknown key; did you mean 'optim_g'?",
    ),
    'train-schedular': (lambda o: rename_option(o, 'train.scheduler', 'schedular'), "did you mean 'scheduler'?"),
    'train-totl_iter': (lambda o: rename_option(o, 'train.total_iter', 'totl_iter'), "did you mean 'total_iter'?"),
    'train-unrelated-key': (lambda o: _set(o, 'train.colour', 1), 'train:colour: unknown key; the keys are'),
    'val-tile_overlp': (
        lambda o: rename_option(o, 'val.tile_overlap', 'tile_overlp'),
        "did you mean 'tile_overlap'?",
    ),
    'val-save_images': (lambda o: rename_option(o, 'val.save_img', 'save_images'), "did you mean 'save_img'?"),
    'logger-print_frq': (
        lambda o: rename_option(o, 'logger.print_freq', 'print_frq'),
        "did you mean 'print_freq'?",
    ),
    'lr-7e-4-text': (lambda o: _set(o, 'train.optim_g.lr', '7e-4'), "train:optim_g:lr: '7e-4' is text, not a number"),
    'betas-text': (lambda o: _set(o, 'train.optim_g.betas', ['0.9', 0.99]), "train:optim_g:betas[0]: '0.9' is text"),
    'total_iter-3e5-text': (lambda o: _set(o, 'train.total_iter', '3e5'), "train:total_iter: '3e5' is text"),
    'scheduler-max_lr-text': (lambda o: _set(o, 'train.scheduler.max_lr', '2e-3'), "train:scheduler:max_lr: '2e-3'"),
    'loss_weight-text': (lambda o: _set(o, 'train.psnr_opt.loss_weight', '1e0'), "train:psnr_opt:loss_weight: '1e0'"),
    'ema_decay-above-1': (lambda o: _set(o, 'train.ema_decay', 1.5), 'train:ema_decay: must be a number in [0, 1]'),
    'ema_decay-bool': (lambda o: _set(o, 'train.ema_decay', True), 'train:ema_decay: must be a number'),
    'lr-negative': (lambda o: _set(o, 'train.optim_g.lr', -1e-3), 'train:optim_g:lr: must be a number >= 0'),
    'lr-list': (lambda o: _set(o, 'train.optim_g.lr', [1e-3]), 'train:optim_g:lr: must be a number (got [0.001])'),
    'betas-one-number': (lambda o: _set(o, 'train.optim_g.betas', 0.9), 'train:optim_g:betas: must be a list of 2'),
    'betas-three': (lambda o: _set(o, 'train.optim_g.betas', [0.9, 0.99, 0.999]), 'must be a list of 2 numbers'),
    'step_size-text-word': (lambda o: _set(o, 'train.scheduler.base_lr', 'low'), 'train:scheduler:base_lr: must be'),
    'optim_g-not-mapping': (lambda o: _set(o, 'train.optim_g', 'Adam'), 'train:optim_g: expected a mapping'),
    'train-not-mapping': (lambda o: _set(o, 'train', ['a']), 'train: expected a mapping'),
}


@pytest.mark.parametrize('case', list(OPTION_TYPOS))
def test_training_option_typos_and_types_are_refused(tmp_path, case):
    from helpers import tiny_s2former_options

    from s2former_plugin.models.s2former_options import OptionError, check_training_options

    opt = tiny_s2former_options(tmp_path, None)
    check_training_options(opt)  # the untouched options pass
    change, message = OPTION_TYPOS[case]
    with pytest.raises(OptionError) as info:
        check_training_options(change(opt))
    assert message in str(info.value) and '\n' not in str(info.value)


def _s2former_option_files() -> list[str]:
    import yaml
    from helpers import REPO

    files = sorted(str(p) for p in REPO.glob('options/*.yml'))
    return [f for f in files if yaml.safe_load(open(f)).get('model_type') == 'S2FormerModel']


@pytest.mark.parametrize('path', _s2former_option_files(), ids=os.path.basename)
def test_shipped_options_pass_the_checks(path):
    import yaml

    from s2former_plugin.models.s2former_options import check_training_options

    with open(path) as f:
        check_training_options(yaml.safe_load(f))
