"""The seam with basicsr 1.4.2: every patch the plugin applies to basicsr, each with why (and a test in tests/).

:func:`apply` installs them all; the patches live in ``entry`` (entry points, start-up checks), ``resume``
(checkpoints, resuming), ``distributed`` and ``training`` (loaders, optimizers, validation).

basicsr 1.4.2 (the last PyPI release) predates current torch/torchvision. The fixes:

* ``functional_tensor``: basicsr imports ``torchvision.transforms.functional_tensor``, removed in torchvision 0.17;
  an alias module is installed before basicsr's ``__init__`` runs.
* Output root: ``python -m basicsr.train`` roots ``experiments/`` and ``tb_logger/`` at the *parent of
  site-packages*, while ``--auto_resume`` looks under the working directory. The entry points are rerouted to
  :func:`train_main` / :func:`test_main`, which root everything at the working directory.
* Resume without CUDA: ``load_resume_state`` calls ``torch.cuda.current_device()``; ours maps to CPU and loads with
  ``weights_only=True``.
* Distributed: ``--launcher pytorch`` hard-codes NCCL and ``torch.cuda.set_device(rank % gpus)``; ours uses gloo
  for CPU tensors (``cpu:gloo,cuda:nccl`` on GPU hosts), stops when there are more processes than GPUs, and DDP
  wrapping no longer passes CUDA device ids for CPU models.
* Optimizers and schedulers: any ``torch.optim`` optimizer (``AdamW`` ...) and ``CyclicLR`` (the paper's schedule).
* Checkpoints are written atomically (temp file + rename), so a run killed while saving loses nothing; a model's
  ``extra_training_state()`` (the fp16 GradScaler) is saved with its optimizers and schedulers.
* Gradient accumulation (``train:accumulate: N`` of S2FormerModel): the training loader reads
  ``N x batch_size_per_gpu`` images per iteration, which the model splits into N micro-batches; basicsr's epoch
  count follows, so iterations, schedulers, EMA, logs and checkpoints count optimizer steps.
* An unknown ``type:`` names the registry's choices, the plugin's first.
"""

from __future__ import annotations

import importlib

from ._state import ORIGINAL, PLUGIN, pending_log
from .distributed import _model_to_device, check_local_gpus, init_dist
from .entry import (
    _checked_parse_options,
    _eta_never_negative,
    _registry_get,
    _reroute_entry_points,
    _wrap_get_root_logger,
    active_message,
    before_basicsr_import,
    check_network_options,
    check_num_gpu,
    plugin_entries,
    test_main,
    train_main,
)
from .resume import (
    ResumeError,
    _save_network,
    _save_training_state,
    atomic_torch_save,
    check_resume_network,
    load_resume_state,
)
from .training import (
    _accumulating_dataloaders,
    _checked_dataloaders,
    _get_optimizer,
    _setup_schedulers,
    _validation,
    set_deterministic,
)

__all__ = [
    'PLUGIN',
    'ResumeError',
    'active_message',
    'apply',
    'atomic_torch_save',
    'before_basicsr_import',
    'check_local_gpus',
    'check_network_options',
    'check_num_gpu',
    'check_resume_network',
    'init_dist',
    'load_resume_state',
    'pending_log',
    'plugin_entries',
    'set_deterministic',
    'test_main',
    'train_main',
]
_applied = False
_pending_log = pending_log  # the same list (tests read it under this name)


def apply() -> None:
    """Apply every patch above to the imported basicsr (idempotent)."""
    global _applied
    if _applied:
        return
    _applied = True
    before_basicsr_import()
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import options
    from basicsr.utils.dist_util import master_only
    from basicsr.utils.registry import Registry

    ORIGINAL.update(
        init_dist=options.init_dist, setup_schedulers=BaseModel.setup_schedulers, validation=BaseModel.validation
    )
    _reroute_entry_points()
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.parse_options = _checked_parse_options(basicsr.train.parse_options)
    basicsr.train.create_train_val_dataloader = _checked_dataloaders(
        _accumulating_dataloaders(basicsr.train.create_train_val_dataloader)
    )
    _eta_never_negative(importlib.import_module('basicsr.utils.logger'))
    basicsr.train.get_root_logger = _wrap_get_root_logger(basicsr.train.get_root_logger)
    options.init_dist = init_dist
    BaseModel.model_to_device = _model_to_device
    BaseModel.get_optimizer = _get_optimizer
    BaseModel.setup_schedulers = _setup_schedulers
    BaseModel.validation = _validation
    BaseModel.save_network = master_only(_save_network)  # basicsr's is rank-0 only too
    BaseModel.save_training_state = master_only(_save_training_state)
    Registry.get = _registry_get
