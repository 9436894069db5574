"""Loading network weights from any of the checkpoint kinds users have, always with ``weights_only=True``.

* BasicSR checkpoints (``{'params': ..., 'params_ema': ...}``) written by training;
* the authors' released ``udrs2former_*.pth`` files (plain state dicts with the official key names);
* plain state dicts of our own ``S2Former`` (or of any other arch);
* training checkpoints ``{'state_dict': ..., 'epoch': ..., 'optimizer': ...}`` (MPRNet's released files).
"""

from __future__ import annotations

import os

import torch

BASICSR_KEYS = ('params_ema', 'params')


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or inf (e.g. saved right before a NaN stop): they give black images silently.

    Raises:
        ValueError: ``'<where>: non-finite weights in N tensor(s): key1, key2, ...'``.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        shown = ', '.join(bad[:5]) + (f', ... ({len(bad) - 5} more)' if len(bad) > 5 else '')
        raise ValueError(f'{where}: non-finite (NaN/inf) weights in {len(bad)} tensor(s): {shown}')


def load_state_dict_any(path: str, param_key: str | None = 'params') -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint of any supported kind and return ``(state_dict, what_was_used)``.

    Official key names are translated to the plugin's (``S2Former`` also accepts them directly). ``module.``
    prefixes left by DataParallel/DDP are dropped.

    Args:
        path: The checkpoint file.
        param_key: Which entry of a BasicSR checkpoint to use (``'params'`` or ``'params_ema'``); falls back to
            the other one when missing. Ignored for plain state dicts.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a weights-only loadable state dict, or holds NaN/inf weights (named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or non-weights files
        raise ValueError(f'{path}: not a weights-only checkpoint ({type(err).__name__}: {str(err)[:200]})') from None
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a state dict, got {type(ckpt).__name__}')
    if any(k in ckpt for k in BASICSR_KEYS):
        used = param_key if param_key in ckpt else next(k for k in BASICSR_KEYS[::-1] if k in ckpt)
        state = ckpt[used]
    elif isinstance(ckpt.get('state_dict'), dict):  # MPRNet's train.py saves {'epoch', 'state_dict', 'optimizer'}
        state, used = ckpt['state_dict'], 'state_dict'
    else:
        state, used = ckpt, 'state dict'
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: entry {bad[0]!r} is not a tensor; not a state dict')
    state = {k.removeprefix('module.'): v for k, v in state.items()}
    check_finite(state, f'{path} ({used})')

    from s2former_plugin.archs.s2former_keys import is_official_state_dict, official_state_dict_to_ours

    if is_official_state_dict(state):
        state = official_state_dict_to_ours(state)
        used = 'official state dict'
    return state, used
