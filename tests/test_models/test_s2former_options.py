"""The training-option checks of ``S2FormerModel`` value by value: what passes, what is refused, the exact message.

``test_s2former_options_reliability.py`` holds the user's typo cases (a "did you mean" per block); this file pins
the boundaries of every check (inclusive bounds, booleans, text keys, lists, tuples, absent and ``~`` values) so
that a check that lets a wrong value through, or refuses a right one, fails a test.
"""

from __future__ import annotations

import copy

import pytest

from s2former_plugin.models.s2former_options import (
    LOSS_KEYS,
    OPTION_KEYS,
    OptionError,
    check_training_options,
    check_val_options,
)
from s2former_plugin.options import is_number

# Every key the checks know, with a value basicsr and S2FormerModel accept: none may be refused.
EVERY_KEY = {
    'train': {
        'psnr_opt': {'type': 'MultiScalePSNRLoss', 'loss_weight': 1.0},
        'perceptual_opt': {'type': 'S2FormerPerceptualLoss', 'loss_weight': 0.2, 'vgg_weights': 'vgg19.pth'},
        'udl_opt': {'type': 'UncertaintyDrivenLoss', 'loss_weight': 1},
        'optim_g': {
            'type': 'AdamW',
            'lr': 7e-4,
            'weight_decay': 0,
            'betas': [0.9, 0.999],
            'eps': 1e-8,
            'fused': True,
        },
        'scheduler': {
            'type': 'CosineAnnealingRestartLR',
            'periods': [10, 20],
            'restart_weights': [1, 0.5],
            'eta_min': 1e-7,
        },
        'ema_decay': 0.999,
        'max_grad_norm': 0.01,
        'total_iter': 1,
        'warmup_iter': -1,
        'amp': 'bf16',
        'accumulate': 2,
        'compile': {'mode': 'max-autotune', 'dynamic': None, 'fullgraph': True, 'backend': 'inductor'},
        'cuda_graph': False,  # true is refused with amp: fp16, which tests below set
        'tf32': True,
    },
    'val': {
        'val_freq': 5000,
        'save_img': False,
        'suffix': '001',
        'metrics': {},
        'pbar': False,
        'tile': 64,
        'tile_overlap': 16,
        'tile_blend': 'official',
        'tile_batch': 4,
        'cuda_graph': True,
        'uncertainty_metrics': True,
    },
    'logger': {
        'print_freq': 100,
        'save_checkpoint_freq': 5000,
        'use_tb_logger': True,
        'wandb': {'project': '2024', 'resume_id': '17'},
    },
}


def _opt(**train) -> dict:
    opt = copy.deepcopy(EVERY_KEY)
    opt['train'].update(train)
    return opt


def _refused(opt: dict) -> str:
    with pytest.raises(OptionError) as info:
        check_training_options(opt)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_every_known_key_with_a_good_value_passes():
    assert set(EVERY_KEY['train']) == set(OPTION_KEYS['train'])
    assert set(EVERY_KEY['val']) == set(OPTION_KEYS['val'])
    assert set(EVERY_KEY['logger']) == set(OPTION_KEYS['logger'])
    check_training_options(EVERY_KEY)
    check_training_options({})  # no block at all: basicsr's own defaults
    check_training_options({'train': None, 'val': None, 'logger': None, 'network_g': {'type': 'S2Former'}})
    # A block left empty (``train:`` with nothing under it reads as None) does not end the checks of the others.
    for empty in ('train', 'val'):
        for typo, block in (('val_frq', 'val'), ('print_frq', 'logger')):
            if block != empty:
                opt = {empty: None, block: {typo: 1}}
                with pytest.raises(OptionError, match=f'{block}:{typo}: unknown key'):
                    check_training_options(opt)


@pytest.mark.parametrize('block', ['train', 'val', 'logger'])
def test_a_block_that_is_not_a_mapping_is_named(block):
    assert _refused({**EVERY_KEY, block: ['a']}) == f'{block}: expected a mapping, got list'
    assert _refused({**EVERY_KEY, block: 'text'}) == f'{block}: expected a mapping, got str'


def test_unknown_keys_name_the_block_and_the_closest_key_or_all_keys():
    opt = _opt()
    opt['logger']['wandbb'] = {}
    assert _refused(opt) == "logger:wandbb: unknown key; did you mean 'wandb'?"
    opt = _opt()
    opt['val']['zzz'] = 1
    assert _refused(opt) == f'val:zzz: unknown key; the keys are {", ".join(sorted(OPTION_KEYS["val"]))}'
    opt = _opt()
    opt['train'][3] = 1  # a YAML key read as a number
    assert _refused(opt).startswith('train:3: unknown key; the keys are accumulate, amp, compile, cuda_graph')
    # The first of several close keys only, and only close ones: 'val_fre' is 0.93 alike, 'valfreqs' 0.88.
    opt = _opt()
    opt['val']['valfreqs'] = 1
    assert _refused(opt) == "val:valfreqs: unknown key; did you mean 'val_freq'?"


def test_a_loss_basicsr_knows_but_s2former_does_not_use_is_named_with_the_losses():
    opt = _opt(pixel_opt={'type': 'L1Loss'})
    assert _refused(opt) == (
        'S2FormerModel: train:pixel_opt is not used; the losses are psnr_opt, perceptual_opt, udl_opt'
    )
    opt = _opt()
    opt['val']['pixel_opt'] = {}  # the loss wording is for train: only
    assert _refused(opt).startswith('val:pixel_opt: unknown key')


@pytest.mark.parametrize(
    ('text', 'number'),
    [('7e-4', 0.0007), ('1E-3', 0.001), ('.5', 0.5), ('5.', 5.0), ('+3', 3.0), ('-2', -2.0), (' 1e5 ', 100000.0)],
)
def test_numbers_read_as_text_are_refused_with_the_number_to_write(text, number):
    opt = _opt()
    opt['train']['optim_g']['lr'] = text
    assert _refused(opt) == (
        f'train:optim_g:lr: {text!r} is text, not a number (YAML reads 7e-4 without a dot as a string); write it as '
        f'{number!r}'
    )


def test_text_is_looked_for_in_lists_and_nested_blocks_but_not_in_text_keys():
    opt = _opt()
    opt['train']['scheduler']['periods'] = [10, '2e4']
    assert _refused(opt).startswith("train:scheduler:periods[1]: '2e4' is text")
    opt = _opt()
    opt['logger']['wandb']['project'] = {'inner': ['1', 2]}  # 'project' is text by nature, whatever it holds
    check_training_options(opt)
    opt = _opt()
    opt['logger']['wandb']['entity'] = '12'
    assert _refused(opt).startswith("logger:wandb:entity: '12' is text")
    # Words, version-like strings and the amp names are not numbers.
    for value in ('e5', '1e', '1.2.3', 'nan', 'inf', '0x10', '1_000'):
        opt = _opt()
        opt['val']['suffix'] = 'x'
        opt['logger']['wandb']['entity'] = value
        check_training_options(opt)


@pytest.mark.parametrize(
    ('key', 'good', 'bad', 'bounds'),
    [
        ('ema_decay', [0, 0.5, 1, None], [-0.01, 1.01, True, 'high', [0.9]], ' in [0, 1]'),
        ('max_grad_norm', [0, 0.01, 1e9, None], [-1e-9, False, 'none'], ' >= 0'),
        ('total_iter', [1, 300000, None], [0, -5, True], ' >= 1'),
        ('warmup_iter', [-1, 0, 100, None], [-2, True], ' >= -1'),
    ],
)
def test_scalar_training_numbers_and_their_inclusive_bounds(key, good, bad, bounds):
    for value in good:
        check_training_options(_opt(**{key: value}))
    for value in bad:
        # the bounds are named for a number out of them; any other value is told it must be a number
        expected = f'train:{key}: must be a number{bounds if is_number(value) else ""} (got {value!r})'
        assert _refused(_opt(**{key: value})) == expected


def test_amp_and_accumulate_values():
    for amp in ('bf16', 'fp16', None):
        check_training_options(_opt(amp=amp))
    for amp in ('fp32', 'BF16', True, 16):
        assert _refused(_opt(amp=amp)) == f'train:amp: expected bf16, fp16 or ~ (float32), got {amp!r}'
    for accumulate in (1, 2, 64, None):
        check_training_options(_opt(accumulate=accumulate))
    opt = _opt()
    del opt['train']['accumulate']
    check_training_options(opt)
    for accumulate in (0, -1, True, 2.0, [2]):
        assert _refused(_opt(accumulate=accumulate)) == (
            f'train:accumulate: must be an integer{" >= 1" if accumulate in (0, -1) else ""} (got {accumulate!r})'
        )


@pytest.mark.parametrize('key', ['optim_g', 'scheduler', *LOSS_KEYS])
def test_optimizer_scheduler_and_losses_must_be_mappings_or_absent(key):
    check_training_options(_opt(**{key: None}))  # a loss switched off with ~
    for value in ('Adam', ['type', 'Adam'], 1):
        assert _refused(_opt(**{key: value})) == f'train:{key}: expected a mapping with a type, got {value!r}'


@pytest.mark.parametrize(
    'name', ['lr', 'weight_decay', 'eps', 'momentum', 'gamma', 'eta_min', 'base_lr', 'max_lr', 'loss_weight']
)
@pytest.mark.parametrize('block', ['optim_g', 'scheduler', *LOSS_KEYS])
def test_non_negative_numbers_in_every_sub_block(block, name):
    for value in (0, 0.0, 3e-4, 2):
        opt = _opt()
        opt['train'][block][name] = value
        check_training_options(opt)
    for value in (-1e-6, True, None, 'big', [0.1]):
        opt = _opt()
        opt['train'][block][name] = value
        bounds = ' >= 0' if is_number(value) else ''
        assert _refused(opt) == f'train:{block}:{name}: must be a number{bounds} (got {value!r})'


def test_number_lists_in_sub_blocks():
    for betas in ([0.9, 0.99], (0.9, 0.99), [0, 1]):
        opt = _opt()
        opt['train']['optim_g']['betas'] = betas
        check_training_options(opt)
    for betas in ([0.9], [0.9, 0.99, 0.999], [0.9, True], 0.9, None, 'x'):
        opt = _opt()
        opt['train']['optim_g']['betas'] = betas
        assert _refused(opt) == f'train:optim_g:betas: must be a list of 2 numbers (got {betas!r})'
    for name in ('milestones', 'periods', 'restart_weights'):
        for value in ([], [5], [1, 2, 3, 4, 5], (1.5,)):
            opt = _opt()
            opt['train']['scheduler'][name] = value
            check_training_options(opt)
        for value in ([1, None], 5, [[1]]):
            opt = _opt()
            opt['train']['scheduler'][name] = value
            assert _refused(opt) == f'train:scheduler:{name}: must be a list of numbers (got {value!r})'


def test_other_sub_block_keys_are_left_to_their_classes():
    opt = _opt()
    opt['train']['optim_g'].update(amsgrad=True, foreach=None, fused=False)
    opt['train']['scheduler'].update(mode='triangular2', cycle_momentum=False, step_size_up=-3)
    opt['train']['psnr_opt'].update(reduction='mean', toY=True)
    check_training_options(opt)


def test_validation_tiling_options_and_their_defaults():
    check_val_options({})  # whole images
    check_val_options({'tile': 33})  # the default overlap, 32, is smaller
    check_val_options({'tile': 0, 'tile_overlap': 500})  # no tiles: the overlap is not compared
    check_val_options({'tile': 64, 'tile_overlap': 0, 'tile_blend': 'official'})
    cases = {
        'val:tile: expected an integer >= 0 (0 or ~: whole images), got -1': {'tile': -1},
        'val:tile_overlap: (32) must be smaller than val:tile (32)': {'tile': 32},
        'val:tile_overlap: expected an integer >= 0, got 1.5': {'tile': 64, 'tile_overlap': 1.5},
        "val:tile_blend: 'offical' is not one of": {'tile_blend': 'offical'},
        'val:tile_batch: expected an integer >= 1, got 0': {'tile': 64, 'tile_batch': 0},
        "val:cuda_graph: must be true or false (got 'yes')": {'cuda_graph': 'yes'},
    }
    for message, val in cases.items():
        with pytest.raises(ValueError) as info:
            check_val_options(val)
        assert str(info.value).startswith(message), str(info.value)


def test_checks_never_change_the_options():
    opt = _opt()
    before = copy.deepcopy(opt)
    check_training_options(opt)
    check_val_options(opt['val'])
    assert opt == before
