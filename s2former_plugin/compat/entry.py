"""Entry points and start-up checks: ``python -m basicsr.train``/``test`` rooted at the working directory, one-line
option errors, the options checked before any data is read, the registry's error and the "active" log line."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable

from ._state import PLUGIN, pending_log


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

    The plugin's errors (:class:`~s2former_plugin.errors.S2FormerError`, also re-raised by a DataLoader worker) end
    in one ``train: error:`` line and their exit status, not a traceback.
    """
    import basicsr.train

    from ..errors import S2FormerError

    try:
        basicsr.train.train_pipeline(os.path.abspath(root_path or os.getcwd()))
        _close_process_group()
    except S2FormerError as exc:
        message = str(exc).strip()
        if 'Original Traceback' in message:  # re-raised by a DataLoader worker: its last line is the error
            message = message.splitlines()[-1].split(': ', 1)[-1]
        print(f'train: error: {message}', file=sys.stderr)
        raise SystemExit(exc.exit_status) from None


def _close_process_group() -> None:
    """After a finished distributed run: wait for every rank, then destroy the process group.

    basicsr leaves the group to interpreter exit, where gloo's threads can be torn down while a peer still talks to
    them: the process then aborts (``terminate called without an active exception``, exit -6) after a run that
    finished and saved everything.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


def _checked_parse_options(func: Callable) -> Callable:
    """basicsr's ``parse_options``, then the model's own option checks (a ``check_options(opt)`` static method of the
    registered model class, e.g. ``S2FormerModel``'s): typos stop before any data is read."""

    def parse_options(*args, **kwargs):
        opt, parsed = func(*args, **kwargs)
        from basicsr.utils.registry import MODEL_REGISTRY

        check_num_gpu(opt)
        check_network_options(opt)
        check_path_options(opt)
        model_type = opt.get('model_type')
        check = getattr(MODEL_REGISTRY.get(model_type), 'check_options', None) if model_type in MODEL_REGISTRY else None
        if check is not None:
            check(opt)
        return opt, parsed

    return parse_options


def check_num_gpu(opt: dict) -> None:
    """Refuse ``num_gpu`` above the visible GPUs (basicsr would fail in CUDA calls with a traceback)."""
    import torch

    from ..errors import OptionError

    n, have = opt.get('num_gpu'), torch.cuda.device_count()
    if isinstance(n, int) and not isinstance(n, bool) and n > have:
        raise OptionError(f'num_gpu: {n}, but this machine has {have} visible GPU(s): set num_gpu: {have} or auto')


#: The plugin's own key of ``path:``: also save every network checkpoint as ``.safetensors`` (:mod:`..checkpoint`).
SAVE_SAFETENSORS = 'save_safetensors'


def check_path_options(opt: dict) -> None:
    """``path: save_safetensors`` must be a switch, and a near miss of it (``save_safetensor``) is refused: basicsr
    ignores unknown ``path:`` keys, so a typo would train for hours without the files it asked for."""
    from ..errors import OptionError
    from ..options import check_switch, closest, suggestion

    path = opt.get('path') or {}
    if SAVE_SAFETENSORS in path:
        check_switch(path[SAVE_SAFETENSORS], f'path:{SAVE_SAFETENSORS}')
    for key in path:
        # Only near misses: the other keys are basicsr's own (strict cutoff, so basicsr's keys never match).
        if key != SAVE_SAFETENSORS and closest(key, [SAVE_SAFETENSORS], cutoff=0.8):
            raise OptionError(f'path:{key}: unknown key{suggestion(key, [SAVE_SAFETENSORS])}')


def check_network_options(opt: dict) -> None:
    """Build each ``network_*`` on the meta device (no memory, no weights): an unknown ``type``, keyword or preset
    stops the run at start-up with one line instead of a traceback once the datasets are loaded.

    Errors that only say the meta device cannot run some operation are not the options' fault and are ignored.
    """
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY

    from ..errors import OptionError, first_line

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
            first = first_line(exc, default=type(exc).__name__)
            raise OptionError(f'{key}: {first}') from None
        except (NotImplementedError, RuntimeError):
            continue


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

    from .. import __version__

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
            while pending_log:
                log.warning(pending_log.pop(0))
        return log

    return get_root_logger


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
