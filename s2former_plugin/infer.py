"""Derain images of any size with a trained S2Former.

Usage::

    python -m s2former_plugin.infer --weights net_g_latest.pth --input photos/ --output derained/ \\
        [--tile 320] [--tile-overlap 64] [--save-uncertainty] [--device auto|cpu|cuda] [--fp16 | --bf16] \\
        [--config net.yml]

Weights: a BasicSR checkpoint (``params_ema`` preferred, else ``params``), a released official
``udrs2former_*.pth`` or a plain state dict, always read with ``torch.load(weights_only=True)``. The network
configuration is recovered from the weights (:func:`s2former_plugin.official.infer_config`) unless ``--config``
gives it (a YAML/JSON file with S2Former kwargs, or a BasicSR options file with ``network_g``). A ``.onnx`` file
written by ``python -m s2former_plugin.export`` runs in onnxruntime on the CPU instead (no ``--config``;
``--save-uncertainty`` needs an ``--outputs all`` export).

Each image is processed in overlapping tiles blended by :func:`s2former_plugin.tiling.tiled_forward` (``--tile 0``:
whole image). Outputs are PNGs (TIFF for float images) named after the inputs, with the input's size, bit depth
and colour mode: grayscale is processed as 3 equal channels and converted back; an alpha channel is passed
through untouched.
``--save-uncertainty`` also writes, per image, the colour-mapped final uncertainty map
``OUTPUT/uncertainty/<name>.png`` (for looking at) and the raw maps ``OUTPUT/uncertainty/<name>.npz`` (for
measuring, ``metrics/uncertainty_eval.py``): float32 arrays ``final``, ``full``, ``half``, ``quarter``, ``eighth``, each
``3 x h x w`` (RGB channels, the network's five scales; see docs/uncertainty.md).
Invalid tiling arguments (``--tile-batch 0``, an overlap not smaller than the tile, an unknown ``--blend``) are
refused before anything is read or written (one line naming the option, exit status 2). Unreadable files (and
images too thin for ``--blend official`` tiles) are reported one line each and skipped; the exit status is then 1.
An image that runs out of GPU memory is retried with smaller tiles (each retry reported), else skipped by name.
Outputs never overwrite inputs: an output folder that is an input folder (or would write over an input file) is
refused.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

import numpy as np
import torch

from . import imageio, tiling
from .errors import S2FormerError
from .inference import (
    InferError,
    NonFiniteOutput,
    OutOfMemorySkip,
    derain_array,
    load_network,
    open_network,
    pick_device,
    retry_out_of_memory,
    stack_uncertainties,
    unstack_uncertainties,
)
from .memory import whole_image_problem
from .metrics.uncertainty_eval import raw_map_name, save_raw_maps
from .outputs import OutputFolder
from .tiling import BLENDS, tiled_forward
from .visualize import uncertainty_to_color

__all__ = ['InferError', 'load_network', 'list_inputs', 'derain_array', 'main']


# ----------------------------------------------------------------------------------------------------------------
# Images
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


def _check_not_overwriting(inputs: list[str], out_dir: str, names: dict[str, str], extra: list[str]) -> None:
    real_inputs = {os.path.realpath(p) for p in inputs}
    out_real = os.path.realpath(out_dir)
    if out_real in {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}:
        raise InferError(
            f'--output: {out_dir} is an input folder; choose another folder (inputs are never overwritten)'
        )
    if out_real in real_inputs:
        raise InferError(f'--output: {out_dir} is an input file')
    for name in names.values():
        for folder in (out_dir, *extra):
            for candidate in (name, _float_name(name)):
                target = os.path.realpath(os.path.join(folder, candidate))
                if target in real_inputs:
                    raise InferError(f'--output: writing {target} would overwrite an input')


def _float_name(name: str) -> str:
    """Float images (e.g. 32-bit TIFF) are written as TIFF: PNG has no float pixels."""
    return os.path.splitext(name)[0] + '.tiff'


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m s2former_plugin.infer', description='Derain images with S2Former.')
    p.add_argument(
        '--weights', required=True, help='checkpoint (BasicSR, official udrs2former_*.pth, state dict) or .onnx export'
    )
    p.add_argument('--input', required=True, help='image file or folder of images')
    p.add_argument('--output', required=True, help='output folder (must not be an input folder)')
    p.add_argument('--tile', type=int, default=320, help='tile size in pixels; 0 processes whole images')
    p.add_argument('--tile-overlap', type=int, default=64, help='overlap of neighbouring tiles (blended)')
    p.add_argument('--tile-batch', type=int, default=1, help='tiles per forward pass')
    p.add_argument(
        '--blend',
        default='cosine',
        metavar='{' + ','.join(BLENDS) + '}',
        help="tile blending; 'official': the official test script's square tiles and plain averaging",
    )
    p.add_argument(
        '--save-uncertainty',
        action='store_true',
        help='also write OUTPUT/uncertainty/<name>.png (colour map of the final scale) and <name>.npz (raw float32 '
        'maps final, full, half, quarter, eighth, each 3 x h x w)',
    )
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--fp16', action='store_true', help='half-precision autocast (CUDA only)')
    p.add_argument(
        '--bf16',
        action='store_true',
        help='bfloat16 autocast (CPU or CUDA; ranking in float32): faster, outputs differ slightly from float32',
    )
    p.add_argument('--config', help='S2Former kwargs (YAML/JSON) or a BasicSR options file with network_g')
    p.add_argument('--overwrite', action='store_true', help='replace images an earlier run wrote under the same names')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


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


def _image_problem(img: np.ndarray | None, tile: int, overlap: int, blend: str) -> str | None:
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


def _load_onnx(args: argparse.Namespace) -> Any:
    """The ``--weights`` ONNX file as an :class:`~s2former_plugin.onnx_backend.OnnxNetwork` (called like the net)."""
    from .onnx_backend import OnnxError, OnnxNetwork

    if args.config:
        raise InferError('--config: an ONNX file holds its network; drop --config')
    if args.device == 'cuda':
        raise InferError("--device cuda: ONNX files run on onnxruntime's CPU provider")
    try:
        net = OnnxNetwork(args.weights)
    except OnnxError as exc:
        raise InferError(f'--weights: {exc}') from None
    if args.save_uncertainty and not net.has_uncertainty:
        raise InferError(f'--save-uncertainty: {args.weights} has no uncertainty output; export with --outputs all')
    return net


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 some files skipped, 2 bad arguments)."""

    args = build_parser().parse_args(argv)
    try:
        if args.fp16 and args.bf16:
            raise InferError('--fp16 and --bf16: choose one')
        check_tiling(args.tile, args.tile_overlap, args.tile_batch, args.blend)
        inputs = list_inputs(args.input)
        if not inputs:
            raise InferError(f'--input: no images in {args.input}')
        names = output_names(inputs)
        unc_dir = os.path.join(args.output, 'uncertainty')
        _check_not_overwriting(inputs, args.output, names, [unc_dir] if args.save_uncertainty else [])
        onnx_file = args.weights.lower().endswith('.onnx')
        if onnx_file:  # an exported network, run by onnxruntime on the CPU
            net, used, device = _load_onnx(args), 'ONNX, onnxruntime', torch.device('cpu')
        else:
            try:
                device = pick_device(args.device)
            except ValueError as exc:
                raise InferError(str(exc)) from None
            loaded = open_network(args.weights, args.config)
            net, used = loaded.net, loaded.used
    except InferError as exc:
        print(f'infer: error: {exc}', file=sys.stderr)
        return 2
    if not onnx_file and loaded.assumed:  # not when the checkpoint records its configuration
        print(
            'infer: note: network configuration inferred from the weights; the bottleneck head count leaves no trace '
            "in them and is assumed 16 (the paper's), pass --config for other values",
            file=sys.stderr,
        )
    fp16 = args.fp16 and device.type == 'cuda'
    if args.fp16 and not fp16:
        print('infer: warning: --fp16 needs CUDA; running in float32', file=sys.stderr)
    bf16 = args.bf16 and not onnx_file
    if args.bf16 and not bf16:
        print('infer: warning: --bf16 does not apply to an ONNX model; running in float32', file=sys.stderr)
    amp_dtype = torch.float16 if fp16 else torch.bfloat16
    net = net if onnx_file else net.to(device)
    folder = OutputFolder(args.output, 'infer', '--output')
    try:  # one run at a time per folder, and no earlier run's images silently replaced
        folder.__enter__()
        folder.claim([n for name in names.values() for n in (name, _float_name(name))], args.overwrite)
        if args.save_uncertainty:
            os.makedirs(unc_dir, exist_ok=True)
    except (S2FormerError, OSError) as exc:
        folder.__exit__()
        reason = exc if isinstance(exc, S2FormerError) else f'--output: cannot create {exc.filename} ({exc.strerror})'
        print(f'infer: error: {reason}', file=sys.stderr)
        return 2
    try:
        return _derain_all(args, inputs, names, unc_dir, net, used, device, fp16, bf16, amp_dtype)
    finally:
        folder.__exit__()


def _derain_all(args, inputs, names, unc_dir, net, used, device, fp16, bf16, amp_dtype) -> int:
    """Derain every input into ``args.output``; returns the exit status (1: some skipped)."""
    from tqdm import tqdm

    def forward(t: torch.Tensor):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=fp16 or bf16):
            if args.save_uncertainty:
                outputs, uncertainties = net(t, return_all=True)
                return outputs[0].float(), stack_uncertainties(uncertainties, t.shape[-2:])
            return net(t).float()

    bar = tqdm(inputs, desc='derain', unit='img', disable=args.no_progress)

    def run_tiled(x: torch.Tensor, tile: int):
        res = tiled_forward(
            forward,
            x,
            tile or None,
            args.tile_overlap,
            device=device,
            out_device='cpu',
            tile_batch=args.tile_batch,
            on_tile=lambda done, total: bar.set_postfix_str(f'tile {done}/{total}'),
            blend=args.blend,
        )
        return res if args.save_uncertainty else (res, None)

    def run(x: torch.Tensor):
        return retry_out_of_memory(functools.partial(run_tiled, x), args.tile, args.tile_overlap, x.shape[-2:])

    failed = []
    earlier = set(imageio.list_images(args.output))  # to name what an earlier run left beside this run's outputs
    start = time.perf_counter()
    for path in bar:
        try:
            img = imageio.read(path)
        except imageio.ImageError as exc:
            failed.append(path)
            tqdm.write(f'infer: {exc}; skipped', file=sys.stderr)
            continue
        problem = _image_problem(img, args.tile, args.tile_overlap, args.blend)
        if problem is None and args.tile == 0 and device.type == 'cpu' and isinstance(net, torch.nn.Module):
            problem = whole_image_problem(*img.shape[:2])
        if problem is not None:
            failed.append(path)
            tqdm.write(f'infer: {problem}, skipped: {path}', file=sys.stderr)
            continue
        try:
            out, unc = derain_array(img, run)
        except OutOfMemorySkip as exc:
            failed.append(path)
            tqdm.write(f'infer: {exc}, skipped: {path}', file=sys.stderr)
            continue
        except NonFiniteOutput as exc:
            failed.append(path)
            tqdm.write(f'infer: {path}: {exc}; no output written', file=sys.stderr)
            continue
        out_name = _float_name(names[path]) if out.dtype.kind == 'f' else names[path]
        try:
            imageio.write(os.path.join(args.output, out_name), out)
            if unc is not None:
                maps = unstack_uncertainties(unc)
                imageio.write(os.path.join(unc_dir, names[path]), uncertainty_to_color(unc[..., :3]))  # the final map
                save_raw_maps(os.path.join(unc_dir, raw_map_name(names[path])), maps)
        except OSError as exc:
            print(f'infer: error: {exc}; stopped (the outputs written before are complete)', file=sys.stderr)
            return 1
    done = len(inputs) - len(failed)
    print(
        f'infer: {done}/{len(inputs)} images -> {args.output} ({used}, {device.type}'
        f'{", fp16" if fp16 else ""}{", bf16" if bf16 else ""}'
        f', tile {args.tile or "off"}, {time.perf_counter() - start:.1f}s)'
    )
    written = {os.path.join(args.output, n) for n in names.values()}
    written |= {os.path.join(args.output, _float_name(n)) for n in names.values()}
    stale = sorted(earlier - written)
    if stale:  # a report on this folder would score them along with this run's images
        print(
            f'infer: warning: {args.output} also holds {len(stale)} image(s) this run did not write (e.g. '
            f'{os.path.basename(stale[0])}); use an empty --output folder before scoring it',
            file=sys.stderr,
        )
    if failed:
        print(f'infer: {len(failed)} file(s) skipped: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
