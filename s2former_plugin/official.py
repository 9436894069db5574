"""Bridge to the official UDR-S2Former code (Owen718/UDR-S2Former_deraining, ``UDR_S2Former.Transformer``).

* :data:`KEY_TABLE` is the one map between official state-dict keys and :class:`S2Former`'s
  (:func:`official_key_to_ours`, :func:`our_key_to_official`); shapes are identical, only names change.
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
]

#: ``(official prefix, our prefix)``; ``{L}`` (a scale), ``{B}`` (a block) and ``{G}`` (a gate) are integers
#: carried over unchanged. The first matching row wins, so specific rows come before general ones.
KEY_TABLE: list[tuple[str, str]] = [
    ('embed.down.0.', 'embed.'),
    ('encoder_level{L}.0.model.{B}.conv.0.', 'encoders.{L}.{B}.expand.'),
    ('encoder_level{L}.0.model.{B}.conv.1.', 'encoders.{L}.{B}.dwconv1.'),
    ('encoder_level{L}.0.model.{B}.conv.2.body.', 'encoders.{L}.{B}.norm.'),
    ('encoder_level{L}.0.model.{B}.conv.4.', 'encoders.{L}.{B}.dwconv2.'),
    ('encoder_level{L}.0.model.{B}.conv.5.channel_map.0.', 'encoders.{L}.{B}.channel_attn.reduce.'),
    ('encoder_level{L}.0.model.{B}.conv.5.channel_map.2.', 'encoders.{L}.{B}.channel_attn.expand.'),
    ('encoder_level{L}.0.model.{B}.conv.6.', 'encoders.{L}.{B}.project.'),
    ('down{L}.down.0.', 'downs.{L}.'),
    ('latent.{B}.norm1.body.', 'bottleneck.{B}.norm1.'),
    ('latent.{B}.norm3.body.', 'bottleneck.{B}.norm2.'),
    ('latent.{B}.attn_nn.conv.', 'bottleneck.{B}.attn.dwconv.'),
    ('latent.{B}.attn_nn.', 'bottleneck.{B}.attn.'),
    ('latent.{B}.ffn.conv1.', 'bottleneck.{B}.ffn.expand.'),
    ('latent.{B}.ffn.conv33.', 'bottleneck.{B}.ffn.dwconv3.'),
    ('latent.{B}.ffn.conv55.', 'bottleneck.{B}.ffn.dwconv5.'),
    ('latent.{B}.ffn.conv4.', 'bottleneck.{B}.ffn.project.'),
    ('up{L}.up.0.0.', 'ups.{L}.'),
    ('ca{L}.conv_du.0.', 'skip_fusions.{L}.channel_attn.reduce.'),
    ('ca{L}.conv_du.2.', 'skip_fusions.{L}.channel_attn.expand.'),
    ('reduce_chan_level{L}.', 'skip_fusions.{L}.project.'),
    ('decoder_level{L}.model.{B}.attn.sampling_biases.2.', 'decoders.{L}.{B}.attn.offset_head.'),
    ('decoder_level{L}.model.{B}.attn.sampling_scales.2.', 'decoders.{L}.{B}.attn.scale_head.'),
    ('decoder_level{L}.model.{B}.', 'decoders.{L}.{B}.'),
    ('refinement.refine{L}.body.{B}.body.0.', 'refinement.stages.{L}.blocks.{B}.conv1.'),
    ('refinement.refine{L}.body.{B}.body.2.', 'refinement.stages.{L}.blocks.{B}.conv2.'),
    ('refinement.refine{L}.body.{B}.CA.conv_du.0.', 'refinement.stages.{L}.blocks.{B}.channel_attn.reduce.'),
    ('refinement.refine{L}.body.{B}.CA.conv_du.2.', 'refinement.stages.{L}.blocks.{B}.channel_attn.expand.'),
    ('refinement.refine{L}.body.6.', 'refinement.stages.{L}.tail.'),
    ('refinement.up_enc{L}.up.1.', 'refinement.stages.{L}.enc_proj.'),
    ('refinement.up_dec{L}.up.1.', 'refinement.stages.{L}.dec_proj.'),
    ('refinement.conv_enc{L}.{G}.conv_du.0.', 'refinement.stages.{L}.gate.{G}.reduce.'),
    ('refinement.conv_enc{L}.{G}.conv_du.2.', 'refinement.stages.{L}.gate.{G}.expand.'),
    ('refinement.conv_enc{L}.{G}.pa.0.', 'refinement.stages.{L}.gate.{G}.conv1.'),
    ('refinement.conv_enc{L}.{G}.pa.2.', 'refinement.stages.{L}.gate.{G}.conv2.'),
    ('out_final.', 'final_image_head.'),
    ('out{L}.', 'image_heads.{L}.'),
    ('var_conv_final.0.', 'final_uncertainty_head.conv1.'),
    ('var_conv_final.2.', 'final_uncertainty_head.conv2.'),
    ('var_conv{L}.0.', 'uncertainty_heads.{L}.conv1.'),
    ('var_conv{L}.2.', 'uncertainty_heads.{L}.conv2.'),
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


def _compile(template: str) -> tuple[re.Pattern, str]:
    pattern = re.escape(template)
    for name in 'LBG':
        pattern = pattern.replace(re.escape('{' + name + '}'), f'(?P<{name}>\\d+)')
    return re.compile('^' + pattern), template


_TO_OURS = [(_compile(off)[0], ours) for off, ours in KEY_TABLE]
_TO_OFFICIAL = [(_compile(ours)[0], off) for off, ours in KEY_TABLE]


def _rename(key: str, table: list[tuple[re.Pattern, str]]) -> str:
    for pattern, template in table:
        m = pattern.match(key)
        if m:
            return template.format(**m.groupdict()) + key[m.end() :]
    raise KeyError(f'no UDR-S2Former key mapping for {key!r}')


def official_key_to_ours(key: str) -> str:
    """Official state-dict key -> :class:`S2Former` key."""
    return _rename(key, _TO_OURS)


def our_key_to_official(key: str) -> str:
    """:class:`S2Former` key -> official state-dict key (inverse of :func:`official_key_to_ours`)."""
    return _rename(key, _TO_OFFICIAL)


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True if ``state_dict`` uses the official key names (e.g. a released ``udrs2former_*.pth``)."""
    return 'embed.down.0.weight' in state_dict


def official_state_dict_to_ours(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official state dict's keys to ours (values are shared, not copied)."""
    return {official_key_to_ours(k): v for k, v in state_dict.items()}


def ours_state_dict_to_official(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename one of our state dicts' keys to the official names (values are shared, not copied)."""
    return {our_key_to_official(k): v for k, v in state_dict.items()}


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
    from s2former_plugin.archs.s2former_arch import S2Former

    net = S2Former(**official_config_to_ours(config or {}))
    if state_dict is not None:
        net.load_state_dict(dict(state_dict), strict=True)
    return net


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a released official checkpoint (a plain state dict) on CPU, safely (``weights_only=True``).

    Unwraps ``params`` / ``params_ema`` / ``state_dict`` containers and a DataParallel ``module.`` prefix.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'UDR-S2Former checkpoint not found: {path}')
    sd = torch.load(path, map_location='cpu', weights_only=True)
    for container in ('params_ema', 'params', 'state_dict'):
        if isinstance(sd, dict) and isinstance(sd.get(container), dict):
            sd = sd[container]
            break
    sd = {k[len('module.') :] if k.startswith('module.') else k: v for k, v in sd.items()}
    from .checkpoint import check_finite

    check_finite(sd, str(path))  # NaN/inf weights would derain to black images without a word
    return sd


def infer_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Recover :class:`S2Former` kwargs from a state dict's keys and shapes (official or ours).

    The bottleneck's head count leaves no trace in the weights; the paper's 16 is assumed.
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
