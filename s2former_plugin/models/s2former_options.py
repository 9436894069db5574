"""The option schema of ``S2FormerModel``: the losses' table, the known keys of each block, and their checks.

Adding a loss means one :data:`LOSSES` entry: its ``train:`` key, the model attribute that holds it, its log name,
what it reads of the network's outputs (DDP freezes the heads no loss reaches) and how it is called. Everything
else (the known keys, the "at least one loss" check, the freezing, the loss sum) is derived from the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from s2former_plugin import errors
from s2former_plugin import options as option_checks
from s2former_plugin.acceleration import check_compile_option
from s2former_plugin.errors import S2FormerError
from s2former_plugin.tiling import check_tiling

__all__ = [
    'AMP_DTYPES',
    'LOSSES',
    'LOSS_KEYS',
    'LOSS_READS',
    'OPTION_KEYS',
    'LossSpec',
    'NonFiniteLoss',
    'OptionError',
    'check_training_options',
    'check_val_options',
]


class NonFiniteLoss(S2FormerError, FloatingPointError):
    """A NaN/inf loss (stopped before the update) or validation output; ``str()`` is one line."""

    exit_status = 1  # the run failed, not its options


class OptionError(errors.OptionError):
    """A typo'd key or a wrongly typed value in the training options; ``str()`` is one line naming it."""


@dataclass(frozen=True)
class LossSpec:
    """One loss term of the training objective.

    Attributes:
        key: Its ``train:`` block (``psnr_opt``), built with basicsr's ``build_loss``.
        attr: The model attribute holding the built loss (``cri_psnr``; ``None`` when not configured).
        log: Its name in the loss log (``l_psnr``).
        side_outputs: Whether it reads the four side outputs (not only the final image).
        uncertainties: Whether it reads the uncertainty maps.
        call: ``call(loss, outputs, uncertainties, gt)``: the loss value from the two lists the network returns
            with ``return_all`` ([final, full scale, 1/2, 1/4, 1/8]).
    """

    key: str
    attr: str
    log: str
    side_outputs: bool
    uncertainties: bool
    call: Callable[[Callable, Sequence[Tensor], Sequence[Tensor], Tensor], Tensor]


#: The paper's three terms (total ``psnr + 0.2 * perceptual + udl``, the weights in each block's ``loss_weight``).
LOSSES: tuple[LossSpec, ...] = (
    LossSpec('psnr_opt', 'cri_psnr', 'l_psnr', True, False, lambda loss, out, unc, gt: loss(out, gt)),
    LossSpec('perceptual_opt', 'cri_perceptual', 'l_percep', False, False, lambda loss, out, unc, gt: loss(out[0], gt)),
    LossSpec('udl_opt', 'cri_udl', 'l_udl', True, True, lambda loss, out, unc, gt: loss(out, unc, gt)),
)
LOSS_KEYS = tuple(spec.key for spec in LOSSES)
#: What each loss reads of the network's outputs: (the four side outputs, the uncertainty maps).
LOSS_READS = {spec.key: (spec.side_outputs, spec.uncertainties) for spec in LOSSES}

# The keys S2FormerModel and basicsr's training loop read from each block: anything else is a typo that would
# silently change the experiment (``ema_decy`` trains without EMA, ``udl_otp`` drops a loss).
OPTION_KEYS = {
    'train': (
        *LOSS_KEYS,
        'optim_g',
        'scheduler',
        'ema_decay',
        'max_grad_norm',
        'total_iter',
        'warmup_iter',
        'amp',
        'accumulate',
        'compile',
        'cuda_graph',
        'tf32',
    ),
    'val': (
        'val_freq',
        'save_img',
        'suffix',
        'metrics',
        'pbar',
        'tile',
        'tile_overlap',
        'tile_blend',
        'tile_batch',
        'cuda_graph',
        'uncertainty_metrics',
    ),
    'logger': ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'),
}
_NUMBER_TEXT = re.compile(r'[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?')
_TEXT_KEYS = ('type', 'name', 'suffix', 'project', 'resume_id')  # strings by nature
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}  # train:amp
# Switches torch's optimizers take; a wrong type would reach torch as a traceback from inside the constructor.
_OPTIMIZER_SWITCHES = ('fused', 'foreach', 'capturable', 'amsgrad', 'maximize', 'nesterov', 'decoupled_weight_decay')


def _check_values(value, where: str) -> None:
    """Refuse numbers that YAML read as text (``lr: 7e-4`` without a dot), anywhere in a block."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key not in _TEXT_KEYS:
                _check_values(sub, f'{where}:{key}')
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_values(sub, f'{where}[{i}]')
    elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        raise OptionError(
            f'{where}: {value!r} is text, not a number (YAML reads 7e-4 without a dot as a string); write it as '
            f'{float(value)!r}'
        )


#: The scalar numbers of ``train:`` and their bounds (inclusive); ``accumulate`` counts micro-batches per step.
_SCALARS = {
    'ema_decay': {'minimum': 0, 'maximum': 1},
    'max_grad_norm': {'minimum': 0},
    'total_iter': {'minimum': 1},
    'warmup_iter': {'minimum': -1},
    'accumulate': {'integer': True, 'minimum': 1},
}
# Values torch would otherwise reject with a traceback from inside the optimizer or scheduler.
_NUMBERS = ('lr', 'weight_decay', 'eps', 'momentum', 'gamma', 'eta_min', 'base_lr', 'max_lr', 'loss_weight')
_NUMBER_LISTS = {'betas': 2, 'milestones': None, 'periods': None, 'restart_weights': None}


def _check_kind(name: str, value, where: str) -> None:
    if name in _NUMBERS:
        option_checks.check_number(value, f'{where}:{name}', minimum=0, error=OptionError)
    if name in _NUMBER_LISTS:
        size = _NUMBER_LISTS[name]
        if (
            not isinstance(value, list | tuple)
            or not all(option_checks.is_number(v) for v in value)
            or size not in (None, len(value))
        ):
            shape = f'a list of {size} numbers' if size else 'a list of numbers'
            raise OptionError(f'{where}:{name}: must be {shape} (got {value!r})')


def _check_block_keys(opt: dict) -> None:
    for block, known in OPTION_KEYS.items():
        sub = opt.get(block)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise OptionError(f'{block}: expected a mapping, got {type(sub).__name__}')
        for key in sub:
            if key not in known and block == 'train' and str(key).endswith('_opt'):
                raise OptionError(f'S2FormerModel: train:{key} is not used; the losses are {", ".join(LOSS_KEYS)}')
        option_checks.check_keys(sub, known, block, error=OptionError)
        _check_values(sub, block)


def _check_acceleration(train: dict) -> None:
    """``train:compile``, ``train:cuda_graph``, ``train:tf32`` and the optimizer's switches (``fused: true``)."""
    try:
        compile_opt = check_compile_option(train.get('compile'), 'train:compile')
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    # ~ or absent: the default (no capture; torch's TF32 settings left as they are)
    for key in ('cuda_graph', 'tf32'):
        if train.get(key) is not None:
            option_checks.check_switch(train[key], f'train:{key}', error=OptionError)
    if train.get('cuda_graph') and compile_opt is not None and compile_opt.uses_cudagraphs:
        raise OptionError(
            f'train:cuda_graph: compile mode {compile_opt.mode!r} already captures CUDA graphs; use one of the two'
        )
    if train.get('cuda_graph') and train.get('amp') == 'fp16':
        raise OptionError(
            'train:cuda_graph: not with amp: fp16 (the GradScaler reads its inf check on the host at every step); '
            'use amp: bf16, which needs no scaler'
        )
    for name in _OPTIMIZER_SWITCHES:
        value = (train.get('optim_g') or {}).get(name)
        if value is not None:  # ~: torch's default
            option_checks.check_switch(value, f'train:optim_g:{name}', error=OptionError)


def check_training_options(opt: dict) -> None:
    """Refuse unknown keys (with a "did you mean") and wrongly typed values in ``train:``, ``val:``, ``logger:``.

    Raises:
        OptionError: One line naming the option.
    """
    _check_block_keys(opt)
    train = opt.get('train') or {}
    # ~ or absent: basicsr's default
    for key, limits in _SCALARS.items():
        if train.get(key) is not None:
            option_checks.check_number(train[key], f'train:{key}', **limits, error=OptionError)
    if train.get('amp') is not None and train['amp'] not in AMP_DTYPES:
        raise OptionError(f'train:amp: expected bf16, fp16 or ~ (float32), got {train["amp"]!r}')
    for key in ('optim_g', 'scheduler', *LOSS_KEYS):
        if train.get(key) is not None and not isinstance(train[key], dict):
            raise OptionError(f'train:{key}: expected a mapping with a type, got {train[key]!r}')
    for key in ('optim_g', 'scheduler', *LOSS_KEYS):
        for name, value in (train.get(key) or {}).items():
            _check_kind(name, value, f'train:{key}')
    _check_acceleration(train)


def check_val_options(val_opt: dict) -> None:
    """Validate ``val:tile``, ``val:tile_overlap``, ``val:tile_blend``, ``val:tile_batch`` and the switches
    ``val:uncertainty_metrics`` and ``val:cuda_graph`` (one-line errors naming the option)."""
    names = ('val:tile', 'val:tile_overlap', 'val:tile_blend', 'val:tile_batch')
    for key in ('uncertainty_metrics', 'cuda_graph'):
        if val_opt.get(key) is not None:
            option_checks.check_switch(val_opt[key], f'val:{key}')
    check_tiling(
        val_opt.get('tile'),
        val_opt.get('tile_overlap', 32),
        val_opt.get('tile_blend', 'cosine'),
        val_opt.get('tile_batch', 1),
        names=names,
    )
