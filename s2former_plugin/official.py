"""Bridge to the official UDR-S2Former code (Owen718/UDR-S2Former_deraining, ``UDR_S2Former.Transformer``).

* The key table and renaming live in :mod:`s2former_plugin.archs.s2former_keys` (re-exported here).
* :func:`build_from_official` turns the official constructor's kwargs into ours and loads an official state dict.
* :func:`load_official_checkpoint` reads a released ``udrs2former_*.pth`` (a plain state dict).
* :func:`infer_config` recovers the constructor kwargs from any state dict (official or ours).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .archs.s2former_arch import S2Former
from .archs.s2former_keys import (
    KEY_TABLE,
    is_official_state_dict,
    official_key_to_ours,
    official_state_dict_to_ours,
    our_key_to_official,
    ours_state_dict_to_official,
)

__all__ = [
    'KEY_TABLE',
    'official_key_to_ours',
    'our_key_to_official',
    'official_state_dict_to_ours',
    'ours_state_dict_to_official',
    'is_official_state_dict',
    'official_config_to_ours',
    'build_from_official',
    'load_official_checkpoint',
    'infer_config',
    'config_from_weights',
    'UNTRACED',
]

# Official kwargs this port implements, with their (ours) names; and those accepted only at these values.
_OFFICIAL_KWARGS = {
    'in_channels': 'in_channels',
    'out_cahnnels': 'out_channels',
    'dim': 'dims',
    'conv_num': 'num_conv_blocks',
    'transformer_blocks': 'num_bottleneck_blocks',
    'reconstruction_num': 'num_reconstruction_blocks',
    'head': 'num_heads',
    'window_size': 'window_size',
    'expand_ratio': 'expand_ratio',
}
_OFFICIAL_FIXED = {
    'qkv_bias_': False,
    'qk_sacle_': None,
    'attn_drop_': 0.0,
    'proj_drop_': 0.0,
    'norm_layer_': 'WithBias',
    'drop_path_': 0.0,
    'sr': 1,
    'VAN': False,
    'dynamic_e': False,
    'global_atten': True,
}
# Accepted and ignored: sizes (this port takes any size) and arguments the official code never uses.
_OFFICIAL_IGNORED = {'img_size', 'patch_size', 'FFN_expand_', 'act_layer_', 'l_drop_'}


def official_config_to_ours(config: Mapping[str, Any]) -> dict[str, Any]:
    """Map the official ``Transformer(...)`` kwargs to :class:`S2Former` kwargs.

    Raises:
        ValueError: for an unknown kwarg, or one this port does not implement at the given value.
    """
    ours: dict[str, Any] = {}
    for key, value in config.items():
        if key in _OFFICIAL_KWARGS:
            ours[_OFFICIAL_KWARGS[key]] = list(value) if isinstance(value, list | tuple) else value
        elif key in _OFFICIAL_FIXED:
            if value != _OFFICIAL_FIXED[key]:
                raise ValueError(f'official kwarg {key}={value!r} is not supported (only {_OFFICIAL_FIXED[key]!r})')
        elif key not in _OFFICIAL_IGNORED:
            raise ValueError(f'unknown official UDR-S2Former kwarg {key!r}')
    return ours


def build_from_official(config: Mapping[str, Any] | None = None, state_dict: Mapping[str, Any] | None = None):
    """Build :class:`S2Former` from the official constructor kwargs and optionally load an official state dict.

    Args:
        config: kwargs of the official ``Transformer`` (``{}`` or None: the paper configuration).
        state_dict: official state dict (ours is accepted too), loaded strictly.

    Returns:
        The network (in train mode, as constructed).
    """
    net = S2Former(**official_config_to_ours(config or {}))
    if state_dict is not None:
        net.load_state_dict(dict(state_dict), strict=True)
    return net


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a released official checkpoint (a plain state dict) on CPU, safely, keeping the official key names.

    ``.pth`` files are read with ``weights_only=True``, ``.safetensors`` files through ``safetensors``; both get
    :func:`s2former_plugin.checkpoint.read_checkpoint`'s checks. Unwraps ``params`` / ``params_ema`` /
    ``state_dict`` containers and a DataParallel ``module.`` prefix.
    """
    from .checkpoint import read_checkpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(f'UDR-S2Former checkpoint not found: {path}')
    return read_checkpoint(path, 'params_ema', official_keys=True).state


def infer_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Recover :class:`S2Former` kwargs from a state dict's keys and shapes (official or ours).

    The bottleneck's head count leaves no trace in the weights; the paper's 16 is assumed (:data:`UNTRACED`):
    commands build networks through :func:`config_from_weights`, which says so.
    """
    sd = official_state_dict_to_ours(state_dict) if is_official_state_dict(state_dict) else dict(state_dict)

    def count(prefix: str) -> int:
        pat = re.compile('^' + re.escape(prefix) + r'(\d+)\.')
        return len({m.group(1) for k in sd if (m := pat.match(k))})

    dims = [sd['embed.weight'].shape[0]] + [sd[f'downs.{i}.weight'].shape[0] for i in range(4)]
    heads, windows = [], []
    for i in range(4):
        table = sd.get(f'decoders.{i}.0.attn.relative_position_bias_table')
        heads.append(table.shape[1] if table is not None else 1)
        windows.append((math.isqrt(table.shape[0]) + 1) // 2 if table is not None else 8)
    return dict(
        in_channels=sd['embed.weight'].shape[1],
        out_channels=sd['final_image_head.weight'].shape[0],
        dims=dims,
        num_conv_blocks=[count(f'encoders.{i}.') for i in range(4)],
        num_bottleneck_blocks=count('bottleneck.'),
        num_reconstruction_blocks=[count(f'decoders.{i}.') for i in range(4)],
        num_heads=heads + [16],
        window_size=windows,
        expand_ratio=[
            sd[f'encoders.{i}.0.expand.weight'].shape[0] / dims[i] if f'encoders.{i}.0.expand.weight' in sd else 2
            for i in range(4)
        ],
    )


#: Constructor arguments the weights leave no trace of (with the value :func:`infer_config` assumes): the
#: bottleneck's global attention has the same parameters for every head count.
UNTRACED = {'num_heads[4]': 16}


def config_from_weights(
    state_dict: Mapping[str, Any], recorded: Mapping[str, Any] | None = None, where: str = 'weights'
) -> tuple[dict[str, Any], list[str]]:
    """The :class:`S2Former` kwargs of a state dict, and what in them is assumed rather than known.

    Everything but the bottleneck head count is read from the keys and shapes (:func:`infer_config`). A
    configuration the checkpoint records (its metadata) gives the rest, and must agree with what the weights show.

    Args:
        state_dict: Official or our keys.
        recorded: The checkpoint's recorded configuration (e.g. safetensors metadata), if any.
        where: Names the weights in messages.

    Returns:
        ``(config, assumed)``: ``assumed`` lists the entries of :data:`UNTRACED` that no record gave (empty when
        ``recorded`` is given).

    Raises:
        ValueError: not an S2Former state dict, or a recorded configuration the weights contradict (one line).
    """
    try:
        inferred = infer_config(state_dict)
    except (KeyError, AttributeError, IndexError, TypeError) as exc:
        raise ValueError(
            f'cannot infer the S2Former configuration from {where} ({type(exc).__name__}: {str(exc)[:120]})'
        ) from None
    if recorded is None:
        return inferred, list(UNTRACED)
    from .checkpoint import config_differences

    try:  # presets and per-level values as the network resolves them; on the meta device: no memory, no time
        with torch.device('meta'):
            built = S2Former(**dict(recorded)).config
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{where}: recorded configuration is not valid for S2Former ({exc})') from None
    traced = {**inferred, 'num_heads': inferred['num_heads'][:4]}
    diff = config_differences(traced, {**built, 'num_heads': built['num_heads'][:4]})
    if diff:
        raise ValueError(
            f'{where}: recorded configuration contradicts the weights (weights -> recorded: {"; ".join(diff[:3])})'
        )
    return built, []
