"""The training loop's patches: dataset checks and gradient accumulation in the loaders, deterministic mode, any
``torch.optim`` optimizer and ``CyclicLR``, the validation after the loop numbered right."""

from __future__ import annotations

import os
from collections.abc import Callable

from ._state import ORIGINAL, logger


def _checked_dataloaders(func: Callable) -> Callable:
    """basicsr's ``create_train_val_dataloader`` after :func:`s2former_plugin.data.checks.check_datasets`: an
    unfinished or inconsistent LMDB, an empty folder, mismatched pair sizes or validation images too small for a
    metric stop the run at start-up with one line, not a traceback hours later."""

    def create_train_val_dataloader(opt, logger):
        from ..data.checks import check_datasets

        check_datasets(opt)
        return func(opt, logger)

    return create_train_val_dataloader


def _accumulating_dataloaders(func: Callable) -> Callable:
    """basicsr's ``create_train_val_dataloader`` with ``N x batch_size_per_gpu`` per training batch (``accumulate``).

    One loader batch per iteration (the ``CPUPrefetcher`` and ``CUDAPrefetcher`` unchanged) holds the N
    micro-batches of one optimizer step; basicsr's iterations per epoch and epoch count are computed from it, so
    ``total_iter`` optimizer steps are run. ``drop_last`` drops an epoch's last incomplete group.
    """

    def create_train_val_dataloader(opt, logger):
        accumulate = (opt.get('train') or {}).get('accumulate') or 1
        train = opt['datasets'].get('train')
        if accumulate == 1 or train is None or opt.get('model_type') != 'S2FormerModel':
            return func(opt, logger)
        batch = train['batch_size_per_gpu']
        train['batch_size_per_gpu'] = batch * accumulate
        try:
            result = func(opt, logger)
        finally:
            train['batch_size_per_gpu'] = batch  # the option as written (the model splits by accumulate)
        logger.info(
            f'train:accumulate: {accumulate} micro-batches of {batch} per optimizer step per GPU: the statistics '
            f'above count loader batches of {batch * accumulate}, i.e. optimizer steps'
        )
        return result

    return create_train_val_dataloader


def set_deterministic(opt: dict) -> None:
    """Apply the top-level option ``deterministic: true``: reproducible GPU runs where torch allows.

    ``basicsr.train`` turns cuDNN's benchmark mode on (fastest algorithms, chosen by timing, so not the same from
    run to run). Deterministic: cuDNN benchmark off and deterministic algorithms, cuBLAS's fixed workspace, and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: torch warns once for each operation without a
    deterministic CUDA kernel (the ``grid_sample`` backward of the sparse sampling attention adds with atomics),
    so runs still differ slightly there. Slower; off by default.
    """
    import torch

    from ..options import check_switch

    value = opt.get('deterministic', False)
    check_switch(value, 'deterministic')
    if value:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # read when cuBLAS starts (at the first matmul)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def _validation(self, dataloader, current_iter: int, tb_logger, save_img: bool = False) -> None:
    """basicsr's ``BaseModel.validation``, with the validation after training numbered right (every model type).

    ``basicsr.train`` validates once more after its loop with a counter one or two past ``total_iter`` (its epoch
    loop steps the counter again after the last iteration): the log read "Best ... @ 22 iter" after 20 iterations
    and the images were saved as ``*_22.png``. That validation is numbered ``total_iter`` here, and skipped when
    ``total_iter`` itself was just validated: no step ran since, the weights are the same.
    """
    total = (self.opt.get('train') or {}).get('total_iter') if self.is_train else None
    name = dataloader.dataset.opt['name']
    validated = self.__dict__.setdefault('_validated_at', {})
    if total is not None and current_iter > total:
        if validated.get(name) == total:
            logger.info(f'Validation {name}: iteration {int(total)} is validated above; not repeated')
            return
        current_iter = int(total)
    ORIGINAL['validation'](self, dataloader, current_iter, tb_logger, save_img)
    validated[name] = current_iter


def _get_optimizer(self, optim_type: str, params, lr: float, **kwargs):
    import torch

    cls = getattr(torch.optim, optim_type, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        choices = sorted(
            n
            for n, c in vars(torch.optim).items()
            if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
        )
        raise ValueError(f'train:optim_g:type: unknown optimizer {optim_type!r}; choose one of {choices}')
    return cls(params, lr, **kwargs)


def _setup_schedulers(self) -> None:
    import torch

    sched_opt = dict(self.opt['train']['scheduler'])
    if sched_opt.get('type') != 'CyclicLR':
        return ORIGINAL['setup_schedulers'](self)
    sched_opt.pop('type')
    self.opt['train']['scheduler'].pop('type')  # basicsr pops it too; keep the option dict in the same state
    # Adam has no 'momentum' to cycle; torch raises unless cycle_momentum is off.
    sched_opt.setdefault('cycle_momentum', False)
    for optimizer in self.optimizers:
        self.schedulers.append(torch.optim.lr_scheduler.CyclicLR(optimizer, **sched_opt))
