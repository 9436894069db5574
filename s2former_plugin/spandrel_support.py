"""S2Former in spandrel (0.4.2): detection and loading for ``spandrel.ModelLoader``, as spandrel-extra-arches does.

Usage::

    import spandrel
    from s2former_plugin import spandrel_support

    spandrel_support.install()  # adds S2Former to spandrel's MAIN_REGISTRY (idempotent)
    model = spandrel.ModelLoader().load_from_file('net_g_latest.pth')  # an ImageModelDescriptor
    derained = model(image)  # (1, 3, H, W) in [0, 1], any H and W

Files: BasicSR checkpoints (``params_ema`` preferred, as spandrel unwraps them), plain state dicts, ``.safetensors``
and the authors' released ``udrs2former_*.pth`` (official key names). The configuration is inferred from the state
dict; spandrel hands an architecture the tensors only, so the bottleneck head count (which leaves no trace in the
weights) is taken as the paper's 16, and the descriptor's tags say so. :func:`load_file` reads the configuration a
checkpoint records (safetensors metadata) instead, with this package's checks.

Descriptor facts: purpose ``Restoration``, scale 1, no size requirements (the network pads to its own multiple and
crops back, so spandrel's padding would only change the result), tiling supported (``infer`` tiles with blended
overlaps by default), ``supports_half`` and ``supports_bfloat16`` false: the network cast to float16 or bfloat16
gives non-finite outputs on CPU (its sparse sampling attention), so use float32 (or ``infer --bf16``, an autocast
that keeps the ranking in float32).

Detection is strict (the distinctive keys of every stage, in our or the official names) and S2Former is added at the
end of spandrel's detection order: it claims no file another architecture detects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ['ARCH_ID', 'install', 'detect', 'load_file', 'architecture']

ARCH_ID = 'S2Former'

# Keys every S2Former state dict has (our names), across all stages; the official names are renamed first.
_REQUIRED = (
    'embed.weight',
    *(f'downs.{i}.weight' for i in range(4)),
    *(f'encoders.{i}.0.expand.weight' for i in range(4)),
    'bottleneck.0.attn.q.weight',
    'bottleneck.0.attn.kv.weight',
    'bottleneck.0.ffn.dwconv5.weight',
    *(f'ups.{i}.weight' for i in range(4)),
    *(f'skip_fusions.{i}.project.weight' for i in range(4)),
    *(f'uncertainty_heads.{i}.conv1.weight' for i in range(4)),
    *(f'decoders.{i}.0.attn.relative_position_bias_table' for i in range(4)),
    *(f'decoders.{i}.0.attn.offset_head.weight' for i in range(4)),
    *(f'image_heads.{i}.weight' for i in range(4)),
    'refinement.stages.0.tail.weight',
    'final_image_head.weight',
    'final_uncertainty_head.conv2.weight',
)


def _ours(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state dict under our key names, or ``None`` when it is not an S2Former's."""
    from .archs.s2former_keys import is_official_state_dict, official_state_dict_to_ours

    if is_official_state_dict(state_dict):
        try:
            state_dict = official_state_dict_to_ours(state_dict)
        except KeyError:  # a key the official network does not have
            return None
    return dict(state_dict) if all(k in state_dict for k in _REQUIRED) else None


def detect(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` (canonicalized by spandrel: unwrapped, ``module.`` dropped) is an S2Former's."""
    return _ours(state_dict) is not None


def _descriptor(arch, net, state_dict: Mapping[str, Any], tags: list[str]):
    from spandrel import ImageModelDescriptor, ModelTiling, SizeRequirements

    cfg = net.config
    return ImageModelDescriptor(
        net.eval(),
        dict(state_dict),
        architecture=arch,
        purpose='Restoration',
        tags=tags,
        supports_half=False,  # non-finite outputs when cast (tests/test_spandrel_support.py)
        supports_bfloat16=False,
        scale=1,
        input_channels=cfg['in_channels'],
        output_channels=cfg['out_channels'],
        size_requirements=SizeRequirements(),  # any size: the network pads and crops itself
        tiling=ModelTiling.SUPPORTED,
        call_fn=lambda model, image: model(image),
    )


def _tags(cfg: Mapping[str, Any], source: str) -> list[str]:
    dims = cfg['dims']
    return [f'{dims[0]}-{dims[-1]}dim', f'{cfg["num_bottleneck_blocks"]} bottleneck blocks', source]


def _build(state: Mapping[str, Any], recorded: Mapping[str, Any] | None, where: str):
    from .archs.s2former_arch import S2Former
    from .official import config_from_weights

    cfg, assumed = config_from_weights(state, recorded, where)
    net = S2Former(**cfg)
    net.load_state_dict(dict(state), strict=True)
    source = 'bottleneck heads 16 (assumed: not in the weights)' if assumed else 'configuration recorded'
    return net, _tags(net.config, source)


_ARCH = None


def architecture():
    """The spandrel ``Architecture`` of S2Former (one instance)."""
    global _ARCH
    if _ARCH is None:
        from spandrel import Architecture

        class S2FormerArch(Architecture):
            def __init__(self) -> None:
                super().__init__(id=ARCH_ID, name='UDR-S2Former', detect=detect)

            def load(self, state_dict):
                state = _ours(state_dict)
                if state is None:
                    raise ValueError('not an S2Former state dict')
                net, tags = _build(state, None, 'state dict')
                return _descriptor(self, net, state, tags)

        _ARCH = S2FormerArch()
    return _ARCH


def install(registry=None) -> list:
    """Add S2Former to spandrel's registry (default ``spandrel.MAIN_REGISTRY``); a no-op when it is there.

    Returns:
        The ``ArchSupport`` entries added (empty when already installed).
    """
    from spandrel import MAIN_REGISTRY, ArchSupport

    registry = MAIN_REGISTRY if registry is None else registry
    return registry.add(ArchSupport.from_architecture(architecture()), ignore_duplicates=True)


def load_file(path: str | os.PathLike, device: str = 'cpu', param_key: str = 'params_ema'):
    """An ``ImageModelDescriptor`` of an S2Former checkpoint read by this package (``weights_only``, finite, strict),
    with the configuration the checkpoint records where it records one (``.safetensors`` written by ``convert`` or
    by training), so that a bottleneck head count other than 16 loads right.

    Raises:
        ValueError: unreadable, non-S2Former or contradictory weights (one line naming the file).
    """
    from .checkpoint import read_checkpoint, recorded_config

    ckpt = read_checkpoint(path, param_key)
    arch = ckpt.metadata.get('arch', ARCH_ID)
    if arch != ARCH_ID:
        raise ValueError(f'{path} holds a {arch} network, not S2Former')
    net, tags = _build(ckpt.state, recorded_config(ckpt.metadata, str(path)), str(path))
    return _descriptor(architecture(), net, ckpt.state, tags).to(device)
