"""The seam with basicsr 1.4.2: every patch the plugin applies to basicsr, each with why (and a test in tests/).

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

import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Callable
from typing import Any

from .errors import S2FormerError

PLUGIN = 's2former_plugin'
logger = logging.getLogger('basicsr')
_applied = False


# ----------------------------------------------------------------------------------------------------------------
# Before basicsr's __init__ runs
# ----------------------------------------------------------------------------------------------------------------
def before_basicsr_import() -> None:
    """Install ``torchvision.transforms.functional_tensor`` if this torchvision lacks it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    from torchvision.transforms import functional

    alias = types.ModuleType(name, 'Alias installed by s2former_plugin.compat for basicsr 1.4.2.')
    alias.__spec__ = importlib.machinery.ModuleSpec(name, None)
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = alias


# ----------------------------------------------------------------------------------------------------------------
# Entry points rooted at the working directory
# ----------------------------------------------------------------------------------------------------------------
class _RunPluginEntry:
    """Loader whose code, run by ``python -m basicsr.<name>``, calls ``s2former_plugin.compat.<func>()``.

    runpy looks up the already-imported module's ``__spec__`` (basicsr's ``__init__`` imports ``train`` and
    ``test``) and executes ``loader.get_code()`` as ``__main__``; swapping the loader reroutes the command.
    """

    def __init__(self, func: str, origin: str):
        self.func, self.origin = func, origin

    def is_package(self, fullname: str) -> bool:
        return False

    def get_code(self, fullname: str):
        src = f"if __name__ == '__main__':\n    from {__name__} import {self.func}\n    {self.func}()\n"
        return compile(src, self.origin, 'exec')

    def get_source(self, fullname: str) -> str:
        return ''


def train_main(root_path: str | None = None) -> None:
    """Run basicsr's training pipeline with outputs under ``root_path`` (default: the working directory).

    Option errors the plugin raises (``one_line``) end in one ``error:`` line and exit status 2, not a traceback.
    """
    import basicsr.train

    try:
        basicsr.train.train_pipeline(os.path.abspath(root_path or os.getcwd()))
    except Exception as exc:
        if not getattr(exc, 'one_line', False):
            raise
        message = str(exc).strip()
        if 'Original Traceback' in message:  # re-raised by a DataLoader worker: its last line is the error
            message = message.splitlines()[-1].split(': ', 1)[-1]
        print(f'train: error: {message}', file=sys.stderr)
        raise SystemExit(getattr(exc, 'exit_status', getattr(exc, 'exit_code', 2))) from None


def _checked_parse_options(func: Callable) -> Callable:
    """basicsr's ``parse_options``, then the model's own option checks (a ``check_options(opt)`` static method of the
    registered model class, e.g. ``S2FormerModel``'s): typos stop before any data is read."""

    def parse_options(*args, **kwargs):
        opt, parsed = func(*args, **kwargs)
        from basicsr.utils.registry import MODEL_REGISTRY

        check_num_gpu(opt)
        check_network_options(opt)
        model_type = opt.get('model_type')
        check = getattr(MODEL_REGISTRY.get(model_type), 'check_options', None) if model_type in MODEL_REGISTRY else None
        if check is not None:
            check(opt)
        return opt, parsed

    return parse_options


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


def _checked_dataloaders(func: Callable) -> Callable:
    """basicsr's ``create_train_val_dataloader`` after :func:`s2former_plugin.data.checks.check_datasets`: an
    unfinished or inconsistent LMDB, an empty folder, mismatched pair sizes or validation images too small for a
    metric stop the run at start-up with one line, not a traceback hours later."""

    def create_train_val_dataloader(opt, logger):
        from .data.checks import check_datasets

        check_datasets(opt)
        return func(opt, logger)

    return create_train_val_dataloader


def check_num_gpu(opt: dict) -> None:
    """Refuse ``num_gpu`` above the visible GPUs (basicsr would fail in CUDA calls with a traceback)."""
    import torch

    from .errors import OptionError

    n, have = opt.get('num_gpu'), torch.cuda.device_count()
    if isinstance(n, int) and not isinstance(n, bool) and n > have:
        raise OptionError(f'num_gpu: {n}, but this machine has {have} visible GPU(s): set num_gpu: {have} or auto')


def check_network_options(opt: dict) -> None:
    """Build each ``network_*`` on the meta device (no memory, no weights): an unknown ``type``, keyword or preset
    stops the run at start-up with one line instead of a traceback once the datasets are loaded.

    Errors that only say the meta device cannot run some operation are not the options' fault and are ignored.
    """
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY

    from .errors import OptionError

    for key, value in opt.items():
        if not (key.startswith('network_') and isinstance(value, dict) and 'type' in value):
            continue
        try:
            kwargs = dict(value)
            arch = ARCH_REGISTRY.get(kwargs.pop('type'))  # not build_network: it would set up basicsr's logger
            with torch.device('meta'):
                arch(**kwargs)
        except (ValueError, TypeError, KeyError, AssertionError, ImportError) as exc:
            if 'meta' in str(exc).lower():
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OptionError(f'{key}: {first}') from None
        except (NotImplementedError, RuntimeError):
            continue


def _eta_never_negative(logger_module: types.ModuleType) -> None:
    """basicsr's ``MessageLogger`` computes the eta from ``max_iters - current_iter - 1``: at the last iteration it
    prints ``eta: -1 day, 23:59:58``. Its ``datetime.timedelta`` is given a floor of zero."""
    import datetime

    class _Timedelta(datetime.timedelta):
        def __new__(cls, *args, seconds: float = 0, **kwargs):
            return datetime.timedelta.__new__(datetime.timedelta, *args, seconds=max(0, seconds), **kwargs)

    shim = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime) if not k.startswith('__')})
    shim.timedelta = _Timedelta
    logger_module.datetime = shim


def test_main(root_path: str | None = None) -> None:
    """Run basicsr's test pipeline with results under ``root_path`` (default: the working directory)."""
    import basicsr.test

    basicsr.test.test_pipeline(os.path.abspath(root_path or os.getcwd()))


def _reroute_entry_points() -> None:
    from importlib.machinery import ModuleSpec

    for mod_name, func in (('basicsr.train', 'train_main'), ('basicsr.test', 'test_main')):
        module = sys.modules.get(mod_name) or importlib.import_module(mod_name)
        origin = getattr(module, '__file__', None) or mod_name
        module.__spec__ = ModuleSpec(mod_name, _RunPluginEntry(func, origin), origin=origin)


# ----------------------------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------------------------
class ResumeError(S2FormerError, RuntimeError):
    """No readable training state to resume from; ``str()`` is one line naming the file(s)."""

    one_line = True  # train_main prints it without a traceback


# Messages for the training log, written once basicsr has created its logger (resume happens before that).
_pending_log: list[str] = []


def _read_state(path: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated file raises OSError, RuntimeError, EOFError, ...
        first = (str(exc).strip().splitlines() or [''])[0][:160]
        raise ResumeError(f'{path}: unreadable training state ({type(exc).__name__}: {first})') from None
    if not isinstance(state, dict) or not isinstance(state.get('iter'), int):
        raise ResumeError(f'{path}: not a basicsr training state (no iteration number)')
    return state


def load_resume_state(opt: dict) -> dict | None:
    """basicsr's ``load_resume_state`` without CUDA: newest ``*.state`` under ``experiments/<name>``, on CPU.

    With ``--auto_resume``, an unreadable newest state (e.g. cut short by a full disk or a kill) is named and the
    newest readable one is used instead; the training log says so.

    Raises:
        ResumeError: ``path:resume_state`` is unreadable, or no state under ``training_states`` is readable.
    """
    from basicsr.utils import check_resume, scandir

    path = None
    state = None
    if opt['auto_resume']:
        state_dir = os.path.join(os.path.dirname(opt['path']['experiments_root']), opt['name'], 'training_states')
        if os.path.isdir(state_dir):
            iters = [int(v[: -len('.state')]) for v in scandir(state_dir, suffix='.state') if v[:-6].isdigit()]
            problems = []
            for it in sorted(iters, reverse=True):
                candidate = os.path.join(state_dir, f'{it}.state')
                try:
                    state = _read_state(candidate)
                except ResumeError as exc:
                    problems.append(str(exc))
                    continue
                path = candidate
                break
            for line in problems:
                message = f'skipped {line}' + (f'; resuming from {path} instead' if path else '')
                print(f'train: warning: {message}', file=sys.stderr)
                _pending_log.append(message)
            if problems and path is None:
                raise ResumeError(f'--auto_resume: no readable training state in {state_dir} ({problems[0]})')
            if path is not None:
                opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ResumeError(f'path:resume_state: {path} does not exist')
    if state is None:
        state = _read_state(path)
    check_resume_network(opt, state, path)
    check_resume(opt, state['iter'])
    return state


def _plain(value: Any) -> Any:
    """``value`` as plain YAML types (dict, list, str, numbers, bool, None): what ``weights_only`` loading reads."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def check_resume_network(opt: dict, state: dict, path: str) -> None:
    """Refuse to resume with a ``network_g`` other than the one the training state was saved with.

    Weights of another configuration may even fit (a head count leaves no trace in their shapes) and train on
    unwarned; another preset fails deep in ``load_state_dict`` with a page of size mismatches. States written before
    this check have no ``network_g``: the log says it could not be checked.
    """
    saved = state.get('network_g')
    if saved is None:
        _pending_log.append(f'{path} does not record network_g (written by an older version): not checked')
        return
    now = _plain(opt.get('network_g'))
    if saved != now:
        keys = sorted(k for k in set(saved) | set(now or {}) if saved.get(k) != (now or {}).get(k))
        diff = ', '.join(f'{k}: {saved.get(k)!r} -> {(now or {}).get(k)!r}' for k in keys[:3])
        raise ResumeError(
            f'{path}: network_g differs from the options it was trained with ({diff}); restore them, or train under '
            'a new name'
        )


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file, then rename: a reader never sees a half-written checkpoint."""
    import torch

    tmp = f'{path}.tmp{os.getpid()}'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
    save_dict = {}
    for net_, key in zip(nets, keys):
        state = self.get_bare_model(net_).state_dict()
        save_dict[key] = {k.removeprefix('module.'): v.detach().cpu() for k, v in state.items()}
    name = 'latest' if current_iter == -1 else current_iter
    atomic_torch_save(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{name}.pth'))


def _save_training_state(self, epoch: int, current_iter: int) -> None:
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
    }
    extra = getattr(self, 'extra_training_state', None)
    if extra is not None:
        state.update(extra())
    state['network_g'] = _plain(self.opt.get('network_g'))  # checked when the run resumes (check_resume_network)
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


# ----------------------------------------------------------------------------------------------------------------
# Distributed
# ----------------------------------------------------------------------------------------------------------------
def init_dist(launcher: str, backend: str | None = None, **kwargs) -> None:
    """basicsr's ``init_dist`` that also works without CUDA and picks the local GPU by ``LOCAL_RANK``.

    The backend is device-aware where CUDA exists (``cpu:gloo,cuda:nccl``: a ``num_gpu: 0`` run on a GPU host
    communicates CPU tensors through gloo), gloo elsewhere. A rank without a GPU of its own selects none: if the
    run then uses CUDA, :func:`check_local_gpus` stops every rank (sharing a GPU by modulo is slow or hangs).
    """
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if launcher != 'pytorch':  # slurm: basicsr's own code (GPU clusters)
        return _ORIGINAL['init_dist'](launcher, backend or 'nccl', **kwargs)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
    backend = backend or ('cpu:gloo,cuda:nccl' if torch.cuda.is_available() else 'gloo')
    dist.init_process_group(backend=backend, **kwargs)


def check_local_gpus() -> None:
    """Stop (on every rank alike) a CUDA run that has more processes on this node than visible GPUs.

    The count is torchrun's ``LOCAL_WORLD_SIZE``; launchers that do not set it are not checked.
    """
    import torch

    if 'LOCAL_WORLD_SIZE' not in os.environ:
        return
    ranks, gpus = int(os.environ['LOCAL_WORLD_SIZE']), torch.cuda.device_count()
    if ranks > gpus:
        raise RuntimeError(
            f'{ranks} processes on this node but {gpus} visible GPU(s): start one process per GPU '
            f'(torchrun --nproc_per_node={gpus}), or set num_gpu: 0 to train on the CPU'
        )


def set_deterministic(opt: dict) -> None:
    """Apply the top-level option ``deterministic: true``: reproducible GPU runs where torch allows.

    ``basicsr.train`` turns cuDNN's benchmark mode on (fastest algorithms, chosen by timing, so not the same from
    run to run). Deterministic: cuDNN benchmark off and deterministic algorithms, cuBLAS's fixed workspace, and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: torch warns once for each operation without a
    deterministic CUDA kernel (the ``grid_sample`` backward of the sparse sampling attention adds with atomics),
    so runs still differ slightly there. Slower; off by default.
    """
    import torch

    value = opt.get('deterministic', False)
    if not isinstance(value, bool):
        raise ValueError(f'deterministic: expected true or false, got {value!r}')
    if value:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # read when cuBLAS starts (at the first matmul)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def _model_to_device(self, net):
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if self.opt['dist'] and self.device.type == 'cuda':
        check_local_gpus()
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False)
        )
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


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
    _ORIGINAL['validation'](self, dataloader, current_iter, tb_logger, save_img)
    validated[name] = current_iter


# ----------------------------------------------------------------------------------------------------------------
# Optimizers and schedulers
# ----------------------------------------------------------------------------------------------------------------
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
        return _ORIGINAL['setup_schedulers'](self)
    sched_opt.pop('type')
    self.opt['train']['scheduler'].pop('type')  # basicsr pops it too; keep the option dict in the same state
    # Adam has no 'momentum' to cycle; torch raises unless cycle_momentum is off.
    sched_opt.setdefault('cycle_momentum', False)
    for optimizer in self.optimizers:
        self.schedulers.append(torch.optim.lr_scheduler.CyclicLR(optimizer, **sched_opt))


# ----------------------------------------------------------------------------------------------------------------
# Registry errors and the "active" log line
# ----------------------------------------------------------------------------------------------------------------
def plugin_entries(registry) -> list[str]:
    """Names in a basicsr registry that the plugin registered."""
    return sorted(name for name, obj in registry if getattr(obj, '__module__', '').startswith(PLUGIN))


def _registry_get(self, name: str, suffix: str = 'basicsr'):
    obj = self._obj_map.get(name)
    if obj is None:
        obj = self._obj_map.get(f'{name}_{suffix}')
    if obj is None:
        ours = plugin_entries(self)
        others = sorted(n for n in self._obj_map if n not in ours)
        raise KeyError(
            f"No object named '{name}' found in '{self._name}' registry. "
            f'{PLUGIN} provides: {ours}; basicsr provides: {others}'
        )
    return obj


def active_message() -> str:
    from basicsr.utils import registry

    from . import __version__

    parts = []
    for label, plural in (
        ('ARCH', 'archs'),
        ('MODEL', 'models'),
        ('LOSS', 'losses'),
        ('DATASET', 'datasets'),
        ('METRIC', 'metrics'),
    ):
        names = plugin_entries(getattr(registry, f'{label}_REGISTRY'))
        if names:
            parts.append(f'{plural}: {", ".join(names)}')
    return f'{PLUGIN} {__version__} active ({"; ".join(parts)})'


def _wrap_get_root_logger(func: Callable) -> Callable:
    announced = []

    def get_root_logger(*args, **kwargs):
        log = func(*args, **kwargs)
        if not announced and kwargs.get('log_file') is not None:
            announced.append(True)
            log.info(active_message())
            while _pending_log:
                log.warning(_pending_log.pop(0))
        return log

    return get_root_logger


# ----------------------------------------------------------------------------------------------------------------
_ORIGINAL: dict[str, Callable] = {}


def apply() -> None:
    """Apply every patch above to the imported basicsr (idempotent)."""
    global _ORIGINAL, _applied
    if _applied:
        return
    _applied = True
    before_basicsr_import()
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import options
    from basicsr.utils.dist_util import master_only
    from basicsr.utils.registry import Registry

    _ORIGINAL.update(
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
