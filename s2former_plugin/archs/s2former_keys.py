"""Official UDR-S2Former state-dict keys <-> :class:`S2Former`'s: the one key table and its renaming.

Shapes are identical, only names change. This module imports nothing of the package, so the network
(``load_state_dict`` pre-hook), the official bridge (:mod:`s2former_plugin.official`) and the checkpoint loader
all convert keys here, without import cycles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    'KEY_TABLE',
    'official_key_to_ours',
    'our_key_to_official',
    'official_state_dict_to_ours',
    'ours_state_dict_to_official',
    'is_official_state_dict',
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
