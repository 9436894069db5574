"""ONNX export of a derainer and onnxruntime inference with the PyTorch network's calling convention.

Export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): S2Former, traced,
computes its padding, window counts, sampling grids and top-k sizes from the traced input shape (see the
``torch.jit.is_tracing()`` branches of the network), so one file runs at every ``N x C x H x W``. (The
``torch.export``-based exporter specialises the sizes instead: its shape guards from the padding choice violate
dynamic H and W.)

:class:`OnnxNetwork` loads such a file in onnxruntime and is called like the network: ``net(x)`` returns the final
image and ``net(x, return_all=True)`` the lists ``(outputs, uncertainties)`` when the file holds them. Every
problem with a file (missing, corrupt, not an image-to-image graph, not exported for any size) is an
:class:`OnnxError` with a one-line message naming it.

The optional packages come with ``pip install 's2former_plugin[export]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CommandError

__all__ = ['OPSETS', 'OUTPUT_MODES', 'OnnxError', 'OnnxNetwork', 'export_onnx', 'output_names', 'require']

#: ``final``: the derained image only; ``all``: the five images and five uncertainty maps of ``return_all``.
OUTPUT_MODES = ('final', 'all')
#: Scales of ``return_all``'s lists, in the official order (final, then full, 1/2, 1/4, 1/8 scale).
_SCALES = ('', '_s1', '_s2', '_s4', '_s8')
#: The opset the exporter writes by default (onnxruntime 1.31 runs it).
DEFAULT_OPSET = 17
#: Opsets the export writes: 16 brought GridSample (the sparse sampling attention); 20 is the last that
#: PyTorch's TorchScript-based exporter writes.
OPSETS = range(16, 21)
_METADATA_KEY = 's2former_plugin'


class OnnxError(CommandError):
    """A problem with an ONNX file or the optional packages; its message is one line naming the file."""


def require(*modules: str) -> None:
    """Import ``modules`` (default: onnx and onnxruntime) or raise :class:`OnnxError` saying how to install them."""
    import importlib

    for name in modules or ('onnx', 'onnxruntime'):
        try:
            importlib.import_module(name)
        except ImportError:
            raise OnnxError(
                f"ONNX support needs the optional package {name}: pip install 's2former_plugin[export]'"
            ) from None


def output_names(outputs: str) -> list[str]:
    """Graph output names for ``outputs`` (see :data:`OUTPUT_MODES`): ``image`` (+ ``image_s1`` .. ``image_s8``,
    ``uncertainty``, ``uncertainty_s1`` .. ``uncertainty_s8`` for ``all``)."""
    if outputs not in OUTPUT_MODES:
        raise ValueError(f'outputs must be one of {OUTPUT_MODES}, got {outputs!r}')
    if outputs == 'final':
        return ['image']
    return [f'image{s}' for s in _SCALES] + [f'uncertainty{s}' for s in _SCALES]


class _AllOutputs(nn.Module):
    """``net(x, return_all=True)`` as a flat tuple (images, then uncertainty maps) for the exporter."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outputs, uncertainties = self.net(x, return_all=True)
        return (*outputs, *uncertainties)


def export_onnx(
    net: nn.Module,
    path: str,
    *,
    outputs: str = 'final',
    opset: int = DEFAULT_OPSET,
    in_channels: int = 3,
    sample_size: tuple[int, int] = (64, 64),
    metadata: dict[str, Any] | None = None,
) -> None:
    """Export ``net`` (CPU, eval mode, float32) to ``path`` with dynamic batch, height and width.

    Args:
        net: A network mapping ``N x C x H x W`` to an image of the same size (``return_all`` for
            ``outputs='all'``).
        path: The ``.onnx`` file to write (written to a temporary name first, then renamed).
        outputs: ``'final'`` or ``'all'`` (:data:`OUTPUT_MODES`).
        opset: ONNX opset version.
        in_channels: Channels of the traced sample input.
        sample_size: ``(H, W)`` of the traced sample; the graph does not depend on it.
        metadata: Extra entries stored as JSON in the model's metadata (``s2former_plugin`` key).

    Raises:
        OnnxError: the optional packages are missing.
    """
    require('onnx')
    import onnx

    names = output_names(outputs)
    module = _AllOutputs(net) if outputs == 'all' else net
    sample = torch.rand(1, in_channels, *sample_size)
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    axes.update({n: {0: 'batch', 2: f'height{s}', 3: f'width{s}'} for n, s in zip(names, _SCALES * 2)})
    tmp = f'{path}.tmp'
    try:
        _export(module, sample, tmp, names, axes, opset)
        model = onnx.load(tmp)
        info = {'outputs': outputs, **(metadata or {})}
        entry = model.metadata_props.add()
        entry.key, entry.value = _METADATA_KEY, json.dumps(info)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed export leaves nothing behind
            os.remove(tmp)


def _export(module: nn.Module, sample: Tensor, path: str, names: list[str], axes: dict, opset: int) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, which cannot keep H and W dynamic here.
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            (sample,),
            path,
            dynamo=False,
            input_names=['input'],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
        )


class OnnxNetwork:
    """An exported network run by onnxruntime, called like the PyTorch one (CPU tensors in and out).

    Args:
        path: The ``.onnx`` file.
        threads: onnxruntime's intra-op threads (``None``: its default, all cores).
        providers: onnxruntime execution providers (default: CPU).
        probe: Run a ``1 x C x 17 x 23`` zero image once on loading, so a graph exported for one size only (or
            otherwise unable to run) is refused here, in one line, instead of on the first image.

    Raises:
        OnnxError: missing packages, a missing or corrupt file, or a graph that is not an image-to-image network
            with dynamic height and width.
    """

    def __init__(self, path: str, threads: int | None = None, providers: list[str] | None = None, probe: bool = True):
        require('onnxruntime')
        import onnxruntime as ort

        self.path = path
        if not os.path.isfile(path):
            raise OnnxError(f'{path}: file not found')
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors are raised as exceptions; no extra log lines
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=providers or ['CPUExecutionProvider'])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise OnnxError(f'{path}: not a valid ONNX model ({_first_line(exc)})') from None
        inputs, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != 'tensor(float)':
            got = ', '.join(f'{i.name} {i.type} {i.shape}' for i in inputs)
            raise OnnxError(f'{path}: expected one float32 N x C x H x W input, got {got or "none"}')
        self.input_name = inputs[0].name
        self.in_channels = inputs[0].shape[1] if isinstance(inputs[0].shape[1], int) else 3
        fixed = [d for d in inputs[0].shape[2:] if isinstance(d, int)]
        if fixed:
            raise OnnxError(
                f'{path}: the input has a fixed size ({inputs[0].shape[2]} x {inputs[0].shape[3]}); '
                'export with python -m s2former_plugin.export for any size'
            )
        self.output_names = [o.name for o in outs]
        if self.output_names not in (output_names('final'), output_names('all')):
            if len(outs) != 1:
                raise OnnxError(f'{path}: expected one output (image) or the ten of --outputs all, got {len(outs)}')
        self.has_uncertainty = self.output_names == output_names('all')
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(meta[_METADATA_KEY]) if _METADATA_KEY in meta else {}
        if probe:
            x = torch.zeros(1, self.in_channels, 17, 23)
            out = self(x)
            if out.shape[-2:] != x.shape[-2:]:
                raise OnnxError(f'{path}: a 23 x 17 input gave a {out.shape[-1]} x {out.shape[-2]} output')

    def _run(self, x: Tensor, names: list[str]) -> list[np.ndarray]:
        feed = {self.input_name: x.detach().float().cpu().contiguous().numpy()}
        try:
            return self.session.run(names, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's runtime errors
            size = f'{x.shape[-1]} x {x.shape[-2]}'
            raise OnnxError(f'{self.path}: onnxruntime failed on a {size} input ({_first_line(exc)})') from None

    def __call__(self, x: Tensor, return_all: bool = False) -> Tensor | tuple[list[Tensor], list[Tensor]]:
        """Run ``x`` ``(N, C, H, W)``; see ``S2Former.forward`` (``return_all`` needs a ``--outputs all`` file)."""
        if not return_all:
            return torch.from_numpy(self._run(x, self.output_names[:1])[0])
        if not self.has_uncertainty:
            raise OnnxError(f'{self.path}: exported with --outputs final (no uncertainty maps); use --outputs all')
        maps = [torch.from_numpy(a) for a in self._run(x, self.output_names)]
        return maps[:5], maps[5:]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


#: ``(N, H, W)`` of :func:`compare`'s inputs: the traced size, odd sizes (padded inside the network) and a batch.
CHECK_SIZES = ((1, 64, 64), (1, 37, 53), (2, 97, 66))


def compare(
    net: nn.Module, onnx_net: OnnxNetwork, sizes: tuple[tuple[int, int, int], ...] = CHECK_SIZES, seed: int = 0
) -> list[dict[str, Any]]:
    """Run random images through the PyTorch network and the ONNX file and measure their differences.

    Args:
        net: The PyTorch network (eval mode, CPU).
        onnx_net: Its export.
        sizes: ``(N, H, W)`` per comparison.
        seed: Seed of the random inputs (uniform in [0, 1]).

    Returns:
        One row per size: ``size`` (``'NxHxW'``), ``mean``/``max`` (mean and max absolute difference over every
        exported output) and ``finite`` (whether both sides are finite everywhere).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n, h, w in sizes:
        x = torch.rand(n, onnx_net.in_channels, h, w, generator=gen)
        with torch.no_grad():
            if onnx_net.has_uncertainty:
                ref_out, ref_unc = net(x, return_all=True)
                got_out, got_unc = onnx_net(x, return_all=True)
                ref, got = [*ref_out, *ref_unc], [*got_out, *got_unc]
            else:
                ref, got = [net(x)], [onnx_net(x)]
        if [r.shape for r in ref] != [g.shape for g in got]:
            raise OnnxError(f'{onnx_net.path}: output shapes differ from the network at {n}x{h}x{w}')
        diffs = torch.cat([(r.float() - g).abs().flatten() for r, g in zip(ref, got)])
        finite = all(bool(t.isfinite().all()) for t in (*ref, *got))
        rows.append(dict(size=f'{n}x{h}x{w}', mean=diffs.mean().item(), max=diffs.max().item(), finite=finite))
    return rows
