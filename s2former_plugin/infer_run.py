"""The work of ``python -m s2former_plugin.infer``: the inputs and their output names, the checks made before anything
is written, the output folder's claim, and the loop that derains every image into it.

Everything a user can get wrong before the first image (an input folder as output, a tile no image could use, an
ONNX file without the uncertainty output) raises :class:`~s2former_plugin.inference.InferError`; once the loop runs,
an image that cannot be processed is reported by name, one line, and skipped (exit status 1).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import imageio, tiling
from .errors import incomplete_status
from .graphed_inference import GraphedForward
from .inference import (
    InferError,
    NonFiniteOutput,
    OutOfMemorySkip,
    derain_array,
    retry_out_of_memory,
    stack_uncertainties,
    unstack_uncertainties,
)
from .memory import whole_image_problem
from .metrics.uncertainty_maps import raw_map_name, save_raw_maps
from .outputs import OutputFolder
from .tiling import tiled_forward
from .visualize import uncertainty_to_color

__all__ = [
    'InferRun',
    'OutputPlan',
    'check_tiling',
    'claimed_output',
    'derain_folder',
    'float_name',
    'graph_replay',
    'image_problem',
    'list_inputs',
    'load_onnx',
    'output_names',
    'plan_outputs',
    'precision',
]


# ----------------------------------------------------------------------------------------------------------------
# Inputs, outputs and the checks before anything is written
# ----------------------------------------------------------------------------------------------------------------
def list_inputs(path: str) -> list[str]:
    """Input image paths: ``path`` itself, or the image files directly in folder ``path`` (natural order)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise InferError(f'--input: not found: {path}')
    return imageio.list_images(path)


def output_names(inputs: list[str]) -> dict[str, str]:
    """``{input path: output file name}``: ``<stem>.png``, or ``<name>.png`` where two inputs share a stem."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in inputs]
    return {p: (f'{s}.png' if stems.count(s) == 1 else f'{os.path.basename(p)}.png') for p, s in zip(inputs, stems)}


def float_name(name: str) -> str:
    """Float images (e.g. 32-bit TIFF) are written as TIFF: PNG has no float pixels."""
    return os.path.splitext(name)[0] + '.tiff'


@dataclass(frozen=True)
class OutputPlan:
    """Where a run writes.

    Attributes:
        folder: The ``--output`` folder.
        names: ``{input path: output file name}`` (:func:`output_names`).
        uncertainty: The folder of the uncertainty maps (``folder/uncertainty``), or ``None`` when not saved.
    """

    folder: str
    names: dict[str, str]
    uncertainty: str | None

    def all_names(self) -> list[str]:
        """Every file name the run may write into :attr:`folder` (PNG, or TIFF for float images)."""
        return [n for name in self.names.values() for n in (name, float_name(name))]


def plan_outputs(inputs: list[str], folder: str, save_uncertainty: bool) -> OutputPlan:
    """The output names of ``inputs`` in ``folder``, refused when a write would replace an input.

    Raises:
        InferError: ``folder`` is an input folder or file, or an output name is an input's.
    """
    names = output_names(inputs)
    plan = OutputPlan(folder, names, os.path.join(folder, 'uncertainty') if save_uncertainty else None)
    real_inputs = {os.path.realpath(p) for p in inputs}
    out_real = os.path.realpath(folder)
    if out_real in {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}:
        raise InferError(f'--output: {folder} is an input folder; choose another folder (inputs are never overwritten)')
    if out_real in real_inputs:
        raise InferError(f'--output: {folder} is an input file')
    for name in names.values():
        for where in (folder, *([plan.uncertainty] if plan.uncertainty else [])):
            for candidate in (name, float_name(name)):
                target = os.path.realpath(os.path.join(where, candidate))
                if target in real_inputs:
                    raise InferError(f'--output: writing {target} would overwrite an input')
    return plan


def check_tiling(tile: int, overlap: int, tile_batch: int, blend: str) -> None:
    """Reject tiling arguments that no image could be processed with (before anything is read or written).

    Raises:
        InferError: naming the option.
    """
    try:
        tiling.check_tiling(
            tile, overlap, blend, tile_batch, names=('--tile', '--tile-overlap', '--blend', '--tile-batch')
        )
    except ValueError as exc:
        raise InferError(str(exc)) from None


def image_problem(img: np.ndarray | None, tile: int, overlap: int, blend: str) -> str | None:
    """Why this decoded image cannot be processed (``None``: it can): unreadable, unsupported depth or too thin."""
    if img is None or img.size == 0:
        return 'cannot read image'
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        return f'unsupported pixel type {img.dtype}'
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        return f'unsupported channel count {img.shape[2]}'
    h, w = img.shape[:2]
    # The official blend tiles with squares of min(tile, H, W): a side no longer than the overlap leaves no stride.
    if blend == 'official' and tile and not h == w <= tile and min(h, w) <= overlap:
        return f'{w}x{h} is too small for --blend official with --tile-overlap {overlap}'
    return None


def load_onnx(weights: str, config: str | None, device: str, save_uncertainty: bool) -> Any:
    """The ``--weights`` ONNX file as an :class:`~s2former_plugin.onnx_backend.OnnxNetwork` (called like the net).

    Raises:
        InferError: ``--config`` or ``--device cuda`` given, an unreadable file, or no uncertainty output for
            ``--save-uncertainty``.
    """
    from .onnx_backend import OnnxError, OnnxNetwork

    if config:
        raise InferError('--config: an ONNX file holds its network; drop --config')
    if device == 'cuda':
        raise InferError("--device cuda: ONNX files run on onnxruntime's CPU provider")
    try:
        net = OnnxNetwork(weights)
    except OnnxError as exc:
        raise InferError(f'--weights: {exc}') from None
    if save_uncertainty and not net.has_uncertainty:
        raise InferError(f'--save-uncertainty: {weights} has no uncertainty output; export with --outputs all')
    return net


def precision(fp16: bool, bf16: bool, device: torch.device, onnx: bool) -> torch.dtype | None:
    """The autocast dtype ``--fp16``/``--bf16`` give on ``device`` (``None``: float32), with a warning when one
    does not apply there (fp16 needs CUDA, an ONNX model runs in float32)."""
    if fp16 and device.type != 'cuda':
        print('infer: warning: --fp16 needs CUDA; running in float32', file=sys.stderr)
        return None
    if bf16 and onnx:
        print('infer: warning: --bf16 does not apply to an ONNX model; running in float32', file=sys.stderr)
        return None
    return torch.float16 if fp16 else torch.bfloat16 if bf16 else None


def graph_replay(net: Any, asked: bool, device: torch.device, onnx: bool) -> Any:
    """``net`` with each tile shape replayed as a CUDA graph where ``--cuda-graph`` asks and applies (a PyTorch
    network on CUDA), else ``net`` itself, with a warning when it was asked for and does not apply."""
    if not asked:
        return net
    if onnx or device.type != 'cuda':
        why = 'an ONNX model runs in onnxruntime' if onnx else f'it needs CUDA (device {device.type})'
        print(f'infer: warning: --cuda-graph does not apply, {why}; running eagerly', file=sys.stderr)
        return net
    return GraphedForward(net, lambda line: print(f'infer: warning: {line}', file=sys.stderr))


@contextlib.contextmanager
def claimed_output(plan: OutputPlan, overwrite: bool) -> Iterator[OutputFolder]:
    """The output folder locked for this run, with no earlier run's images silently replaced.

    Raises:
        InferError: the folder cannot be created, or holds earlier outputs under this run's names without
            ``overwrite``; :class:`~s2former_plugin.outputs.OutputBusy`: another run is writing into it.
    """
    with contextlib.ExitStack() as stack:  # the lock is released however the run ends, its set-up included
        try:
            folder = stack.enter_context(OutputFolder(plan.folder, 'infer', '--output'))
            folder.claim(plan.all_names(), overwrite)
            if plan.uncertainty:
                os.makedirs(plan.uncertainty, exist_ok=True)
        except OSError as exc:
            raise InferError(f'--output: cannot create {exc.filename} ({exc.strerror})') from None
        yield folder


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
class WriteFailed(InferError):
    """An output could not be written: the run stops (the outputs written before are complete)."""

    exit_status = 1


@dataclass(frozen=True)
class InferRun:
    """How a run derains each image.

    Attributes:
        net: The network (a module on ``device``, or an ONNX network), called as ``net(x)`` or
            ``net(x, return_all=True)``.
        used: What was loaded, for the summary line.
        device: Where the tiles run.
        tile: Tile size (0: whole images).
        overlap: Overlap of neighbouring tiles.
        tile_batch: Tiles per forward pass.
        blend: Tile blending (:data:`~s2former_plugin.tiling.BLENDS`).
        autocast: The autocast dtype (``None``: float32).
        progress: Whether to show a progress bar.
    """

    net: Callable
    used: str
    device: torch.device
    tile: int
    overlap: int
    tile_batch: int
    blend: str
    autocast: torch.dtype | None = None
    progress: bool = True


def _runner(run: InferRun, uncertainty: bool, bar: Any) -> Callable[[torch.Tensor], tuple]:
    """Maps an image tensor to ``(image, stacked uncertainty or None)``, tiled, retried with smaller tiles on OOM."""

    def forward(t: torch.Tensor):
        with torch.autocast(run.device.type, dtype=run.autocast or torch.bfloat16, enabled=run.autocast is not None):
            if uncertainty:
                outputs, uncertainties = run.net(t, return_all=True)
                return outputs[0].float(), stack_uncertainties(uncertainties, t.shape[-2:])
            return run.net(t).float()

    def run_tiled(x: torch.Tensor, tile: int):
        res = tiled_forward(
            forward,
            x,
            tile or None,
            run.overlap,
            device=run.device,
            out_device='cpu',
            tile_batch=run.tile_batch,
            on_tile=lambda done, total: bar.set_postfix_str(f'tile {done}/{total}'),
            blend=run.blend,
        )
        return res if uncertainty else (res, None)

    return lambda x: retry_out_of_memory(functools.partial(run_tiled, x), run.tile, run.overlap, x.shape[-2:])


def _derain_one(run: InferRun, path: str, runner: Callable) -> tuple[np.ndarray, np.ndarray | None] | str:
    """The derained image and its uncertainty, or why ``path`` is skipped (one line)."""
    try:
        img = imageio.read(path)
    except imageio.ImageError as exc:
        return f'infer: {exc}; skipped'
    problem = image_problem(img, run.tile, run.overlap, run.blend)
    if problem is None and run.tile == 0 and run.device.type == 'cpu' and isinstance(run.net, torch.nn.Module):
        problem = whole_image_problem(*img.shape[:2])
    if problem is not None:
        return f'infer: {problem}, skipped: {path}'
    try:
        return derain_array(img, runner)
    except OutOfMemorySkip as exc:
        return f'infer: {exc}, skipped: {path}'
    except NonFiniteOutput as exc:
        return f'infer: {path}: {exc}; no output written'


def derain_folder(run: InferRun, inputs: list[str], plan: OutputPlan) -> int:
    """Derain every input into ``plan.folder`` and print the summary; returns the exit status (1: some skipped).

    Raises:
        WriteFailed: an output could not be written (the run stops there; exit status 1).
    """
    from tqdm import tqdm

    bar = tqdm(inputs, desc='derain', unit='img', disable=not run.progress)
    runner = _runner(run, plan.uncertainty is not None, bar)
    failed = []
    earlier = set(imageio.list_images(plan.folder))  # to name what an earlier run left beside this run's outputs
    start = time.perf_counter()
    for path in bar:
        result = _derain_one(run, path, runner)
        if isinstance(result, str):
            failed.append(path)
            tqdm.write(result, file=sys.stderr)
            continue
        out, unc = result
        name = plan.names[path]
        try:
            imageio.write(os.path.join(plan.folder, float_name(name) if out.dtype.kind == 'f' else name), out)
            if unc is not None:
                imageio.write(os.path.join(plan.uncertainty, name), uncertainty_to_color(unc[..., :3]))  # final map
                save_raw_maps(os.path.join(plan.uncertainty, raw_map_name(name)), unstack_uncertainties(unc))
        except OSError as exc:
            raise WriteFailed(f'{exc}; stopped (the outputs written before are complete)') from None
    precision_note = {torch.float16: ', fp16', torch.bfloat16: ', bf16'}.get(run.autocast, '')
    print(
        f'infer: {len(inputs) - len(failed)}/{len(inputs)} images -> {plan.folder} ({run.used}, {run.device.type}'
        f'{precision_note}, tile {run.tile or "off"}, {time.perf_counter() - start:.1f}s)'
    )
    stale = sorted(earlier - {os.path.join(plan.folder, n) for n in plan.all_names()})
    if stale:  # a report on this folder would score them along with this run's images
        print(
            f'infer: warning: {plan.folder} also holds {len(stale)} image(s) this run did not write (e.g. '
            f'{os.path.basename(stale[0])}); use an empty --output folder before scoring it',
            file=sys.stderr,
        )
    return incomplete_status('infer', f'{len(failed)} file(s) skipped: {", ".join(failed)}' if failed else None)
