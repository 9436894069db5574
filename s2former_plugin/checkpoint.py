"""Reading and writing network weights: the one loader, for every checkpoint kind users have, and the one writer.

Read (``.pth`` always with ``torch.load(..., weights_only=True)``, ``.safetensors`` through the ``safetensors``
package):

* BasicSR checkpoints (``{'params': ..., 'params_ema': ...}``) written by training;
* the authors' released ``udrs2former_*.pth`` files (plain state dicts with the official key names);
* plain state dicts of our own ``S2Former`` (or of any other arch);
* training checkpoints ``{'state_dict': ..., 'epoch': ..., 'optimizer': ...}`` (MPRNet's released files);
* ``.safetensors`` files (a flat state dict), with the metadata :func:`save_safetensors` writes: ``arch`` and
  ``config`` (the network's constructor kwargs as JSON), which the bottleneck head count needs (it leaves no trace
  in the weights).

Every kind gets the same checks: tensors only, no NaN/inf, ``module.`` prefixes dropped, official keys renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import S2FormerError, first_line

BASICSR_KEYS = ('params_ema', 'params')
SAFETENSORS_SUFFIX = '.safetensors'
#: The metadata entry of a BasicSR-style ``.pth`` written by :func:`save_torch` (same strings as in safetensors).
PTH_METADATA_KEY = 'metadata'


@dataclass
class Checkpoint:
    """What a weights file holds: the state dict (our key names), which entry was used, and its metadata."""

    state: dict[str, torch.Tensor]
    used: str
    metadata: dict[str, str] = field(default_factory=dict)


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a safetensors file (by its suffix, as every reader of the format decides)."""
    return str(path).lower().endswith(SAFETENSORS_SUFFIX)


def check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or inf (e.g. saved right before a NaN stop): they give black images silently.

    Raises:
        ValueError: ``'<where>: non-finite weights in N tensor(s): key1, key2, ...'``.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        shown = ', '.join(bad[:5]) + (f', ... ({len(bad) - 5} more)' if len(bad) > 5 else '')
        raise ValueError(f'{where}: non-finite (NaN/inf) weights in {len(bad)} tensor(s): {shown}')


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = first_line(err, 200)
        raise ValueError(f'{path}: not a readable safetensors file ({type(err).__name__}: {first})') from None
    return state, metadata


class TorchLoadError(S2FormerError, ValueError):
    """:func:`torch_load` could not read a file as weights only; ``cause`` is torch's own exception, from which each
    caller words its one-line message (a checkpoint, a training state, VGG19 weights)."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f'{path}: unreadable ({type(cause).__name__})')
        self.cause = cause

    def first_line(self, limit: int = 160) -> str:
        """``Type: first line of torch's message`` (cut to ``limit`` characters)."""
        return f'{type(self.cause).__name__}: {(str(self.cause).strip().splitlines() or [""])[0][:limit]}'


def torch_load(path: str | os.PathLike) -> Any:
    """The package's one ``torch.load``: weights only (no unpickling of arbitrary objects), onto the CPU.

    Raises:
        TorchLoadError: torch could not read it (truncated, garbage, or pickled objects beyond tensors).
    """
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or non-weights files
        raise TorchLoadError(os.fspath(path), err) from None


def _read_torch(path: str, param_key: str | None) -> tuple[dict[str, Any], str, dict[str, str]]:
    try:
        ckpt = torch_load(path)
    except TorchLoadError as exc:
        err = exc.cause
        raise ValueError(f'{path}: not a weights-only checkpoint ({type(err).__name__}: {str(err)[:200]})') from None
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a state dict, got {type(ckpt).__name__}')
    metadata: dict[str, str] = {}
    if any(k in ckpt for k in BASICSR_KEYS):
        used = param_key if param_key in ckpt else next(k for k in BASICSR_KEYS[::-1] if k in ckpt)
        state = ckpt[used]
        meta = ckpt.get(PTH_METADATA_KEY)
        if isinstance(meta, dict):
            metadata = {str(k): str(v) for k, v in meta.items()}
    elif isinstance(ckpt.get('state_dict'), dict):  # MPRNet's train.py saves {'epoch', 'state_dict', 'optimizer'}
        state, used = ckpt['state_dict'], 'state_dict'
    else:
        state, used = ckpt, 'state dict'
    if not isinstance(state, dict):
        raise ValueError(f'{path}: entry {used!r} is not a state dict')
    return state, used, metadata


def read_checkpoint(
    path: str | os.PathLike, param_key: str | None = 'params', official_keys: bool = False
) -> Checkpoint:
    """Read a checkpoint of any supported kind (``.pth``/``.pt``/``.ckpt`` or ``.safetensors``).

    Args:
        path: The checkpoint file.
        param_key: Which entry of a BasicSR checkpoint to use (``'params'`` or ``'params_ema'``); falls back to
            the other one when missing. Ignored for plain state dicts and safetensors files.
        official_keys: Keep official UDR-S2Former key names as they are (default: renamed to ours).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a weights-only loadable state dict, or holds NaN/inf weights (named); one line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if is_safetensors(path):
        raw, metadata = _read_safetensors(path)
        used = 'safetensors'
    else:
        raw, used, metadata = _read_torch(path, param_key)
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: entry {bad[0]!r} is not a tensor; not a state dict')
    state = {k.removeprefix('module.'): v for k, v in raw.items()}
    check_finite(state, f'{path} ({used})')

    from s2former_plugin.archs.s2former_keys import is_official_state_dict, official_state_dict_to_ours

    if is_official_state_dict(state) and not official_keys:
        state = official_state_dict_to_ours(state)
        used = 'official state dict' if used != 'safetensors' else 'safetensors, official keys'
    return Checkpoint(state, used, metadata)


def load_state_dict_any(
    path: str | os.PathLike, param_key: str | None = 'params', expect_config: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint of any supported kind and return ``(state_dict, what_was_used)``.

    Official key names are translated to the plugin's (``S2Former`` also accepts them directly). ``module.``
    prefixes left by DataParallel/DDP are dropped.

    Args:
        path: The checkpoint file (``.pth`` or ``.safetensors``).
        param_key: Which entry of a BasicSR checkpoint to use (``'params'`` or ``'params_ema'``); falls back to
            the other one when missing. Ignored for plain state dicts.
        expect_config: The constructor kwargs of the network the weights go into (e.g. ``net.config``): refused
            when the checkpoint records a different configuration.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a weights-only loadable state dict, holds NaN/inf weights (named), or records a
            configuration other than ``expect_config``.
    """
    ckpt = read_checkpoint(path, param_key)
    if expect_config is not None:
        check_recorded_config(ckpt.metadata, expect_config, os.fspath(path))
    return ckpt.state, ckpt.used


# ----------------------------------------------------------------------------------------------------------------
# Recorded configuration
# ----------------------------------------------------------------------------------------------------------------
def recorded_config(metadata: Mapping[str, str], where: str) -> dict[str, Any] | None:
    """The network configuration a checkpoint records (``metadata['config']``, JSON), or ``None``.

    Raises:
        ValueError: the entry is not a JSON object (one line naming ``where``).
    """
    text = metadata.get('config')
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f'{where}: metadata config is not JSON ({err.msg} at {err.pos})') from None
    if not isinstance(config, dict):
        raise ValueError(f'{where}: metadata config is not a mapping of constructor arguments')
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_differences(recorded: Mapping[str, Any], built: Mapping[str, Any]) -> list[str]:
    """``'key: recorded -> built'`` for each constructor argument on which two configurations differ.

    Lists and tuples compare equal element by element (JSON keeps no tuples); a key only one side has differs.
    """
    a, b = _plain(recorded), _plain(built)
    return [
        f'{k}: {a.get(k, "(unset)")!r} -> {b.get(k, "(unset)")!r}'
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def check_recorded_config(metadata: Mapping[str, str], config: Mapping[str, Any], where: str) -> None:
    """Refuse weights whose recorded configuration differs from the one of the network they are loaded into.

    Raises:
        ValueError: one line naming ``where`` and up to three differing constructor arguments.
    """
    recorded = recorded_config(metadata, where)
    if recorded is None:
        return
    diff = config_differences(recorded, config)
    if diff:
        raise ValueError(
            f'{where}: the checkpoint records another network configuration than the one building it '
            f'(recorded -> options: {"; ".join(diff[:3])})'
        )


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def network_metadata(net_or_state: torch.nn.Module | Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None):
    """The metadata strings to store with a network's weights: ``arch`` and ``config`` (JSON) where known.

    A module gives its class name and (``S2Former``) its ``config``; entries of ``metadata`` are added (``config``
    as a mapping is JSON-encoded). A ``config`` given for a module must equal the module's own.

    Raises:
        ValueError: a given ``config`` differs from the module's.
    """
    meta: dict[str, str] = {}
    own_config = None
    if isinstance(net_or_state, torch.nn.Module):
        meta['arch'] = type(net_or_state).__name__
        own_config = getattr(net_or_state, 'config', None)
    for key, value in (metadata or {}).items():
        if key == 'config' and not isinstance(value, str):
            value = json.dumps(_plain(value), sort_keys=True)
        meta[str(key)] = str(value)
    if own_config is not None:
        given = recorded_config(meta, 'metadata')
        if given is not None and config_differences(given, own_config):
            raise ValueError(
                f"metadata config differs from the network's: {'; '.join(config_differences(given, own_config)[:3])}"
            )
        meta['config'] = json.dumps(_plain(own_config), sort_keys=True)
    return meta


def _tensors_to_save(net_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = net_or_state.state_dict() if isinstance(net_or_state, torch.nn.Module) else dict(net_or_state)
    out, seen = {}, set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'entry {key!r} is not a tensor; not a state dict')
        t = value.detach().cpu().contiguous()  # safetensors stores dense row-major bytes: values unchanged
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ptr is not None and ptr in seen:  # safetensors refuses tensors sharing memory
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key.removeprefix('module.')] = t
    return out


def _atomic(path: str, write) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_safetensors(
    net_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write a network's weights (or a state dict) as a ``.safetensors`` file, bit for bit, with its metadata.

    Args:
        net_or_state: The network (its ``state_dict()``, its class name as ``arch`` and, for ``S2Former``, its
            ``config``) or a state dict.
        path: The file to write (replaced atomically: a reader never sees half a file).
        metadata: More entries (strings; ``config`` may be a mapping, JSON-encoded here). For a state dict, give
            ``arch`` and ``config`` here so that readers need not infer the configuration.

    Returns:
        The metadata written.

    Raises:
        ValueError: non-tensor entries, NaN/inf weights, or a ``config`` that differs from the network's.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = _tensors_to_save(net_or_state)
    check_finite(tensors, path)
    meta = {'format': 'pt', **network_metadata(net_or_state, metadata)}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return meta


def save_torch(
    net_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    param_key: str = 'params',
) -> dict[str, str]:
    """Write weights as a BasicSR checkpoint ``{param_key: state_dict, 'metadata': {...}}`` (``torch.save``).

    BasicSR, spandrel and :func:`read_checkpoint` read it; the metadata entry is the one safetensors files carry.

    Raises:
        ValueError: as :func:`save_safetensors`, or a ``param_key`` BasicSR does not read.
    """
    if param_key not in BASICSR_KEYS:
        raise ValueError(f'param_key must be one of {BASICSR_KEYS}, got {param_key!r}')
    path = os.fspath(path)
    tensors = _tensors_to_save(net_or_state)
    check_finite(tensors, path)
    meta = network_metadata(net_or_state, metadata)
    _atomic(path, lambda tmp: torch.save({param_key: tensors, PTH_METADATA_KEY: meta}, tmp))
    return meta


def save_safetensors_beside(pth_path: str | os.PathLike, nets: Mapping[str, torch.nn.Module]) -> str:
    """Training's option to save ``.safetensors`` too: ``models/net_g_1000.pth`` gets ``net_g_1000.safetensors``.

    Called by the model's ``save()`` right after BasicSR's ``.pth`` is written, with the networks it saved by
    their param keys. A safetensors file holds one state dict: ``params_ema`` (the weights used for inference)
    where the run keeps an EMA copy, else ``params``; the metadata says which, beside ``arch`` and ``config``.

    Returns:
        The path written.
    """
    if not nets:
        raise ValueError('save_safetensors_beside: no network to save')
    key = next((k for k in BASICSR_KEYS if k in nets), next(iter(nets)))
    path = os.path.splitext(os.fspath(pth_path))[0] + SAFETENSORS_SUFFIX
    save_safetensors(nets[key], path, {'param_key': key, 'source': os.path.basename(os.fspath(pth_path))})
    return path
