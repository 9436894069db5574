"""Checkpoints and resuming: CPU-safe ``weights_only`` resume, the network configuration kept in the training state
and checked on resume, atomic writes."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import S2FormerError
from ._state import pending_log


class ResumeError(S2FormerError, RuntimeError):
    """No readable training state to resume from; ``str()`` is one line naming the file(s)."""


def _read_state(path: str) -> dict:
    from ..checkpoint import TorchLoadError, torch_load

    try:
        state = torch_load(path)
    except TorchLoadError as exc:  # a truncated file raises OSError, RuntimeError, EOFError, ...
        raise ResumeError(f'{path}: unreadable training state ({exc.first_line()})') from None
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
                pending_log.append(message)
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
        pending_log.append(f'{path} does not record network_g (written by an older version): not checked')
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
    path = os.path.join(self.opt['path']['models'], f'{net_label}_{name}.pth')
    atomic_torch_save(save_dict, path)
    if self.opt['path'].get('save_safetensors'):  # the option checked at start-up (entry.check_path_options)
        from ..checkpoint import save_safetensors_beside

        save_safetensors_beside(path, {key: self.get_bare_model(n) for n, key in zip(nets, keys)})


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
