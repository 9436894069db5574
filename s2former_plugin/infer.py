"""Derain images of any size with a trained S2Former.

Usage::

    python -m s2former_plugin.infer --weights net_g_latest.pth --input photos/ --output derained/ \\
        [--tile 320] [--tile-overlap 64] [--save-uncertainty] [--device auto|cpu|cuda] [--fp16 | --bf16] \\
        [--cuda-graph] [--config net.yml]

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
``--cuda-graph`` (CUDA) replays each tile shape seen more than once as a captured CUDA graph
(:class:`s2former_plugin.graphed_inference.GraphedForward`): the same outputs without the launch overhead of the
network's many small kernels.
Outputs never overwrite inputs: an output folder that is an input folder (or would write over an input file) is
refused.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .errors import run_command
from .infer_run import (
    InferRun,
    check_tiling,
    claimed_output,
    derain_folder,
    graph_replay,
    list_inputs,
    load_onnx,
    plan_outputs,
    precision,
)
from .inference import InferError, NonFiniteOutput, derain_array, load_network, open_network, pick_device
from .tiling import BLENDS

# derain_array, load_network, NonFiniteOutput: the library's names, reachable from the command's module as before.
__all__ = ['InferError', 'NonFiniteOutput', 'build_parser', 'derain_array', 'list_inputs', 'load_network', 'main']


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
    p.add_argument(
        '--cuda-graph',
        action='store_true',
        help='replay each tile shape as a captured CUDA graph (CUDA, PyTorch weights): no kernel-launch overhead',
    )
    p.add_argument('--config', help='S2Former kwargs (YAML/JSON) or a BasicSR options file with network_g')
    p.add_argument('--overwrite', action='store_true', help='replace images an earlier run wrote under the same names')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 some files skipped, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    return run_command('infer', lambda: _infer(args))


def _infer(args: argparse.Namespace) -> int:
    if args.fp16 and args.bf16:
        raise InferError('--fp16 and --bf16: choose one')
    check_tiling(args.tile, args.tile_overlap, args.tile_batch, args.blend)
    inputs = list_inputs(args.input)
    if not inputs:
        raise InferError(f'--input: no images in {args.input}')
    plan = plan_outputs(inputs, args.output, args.save_uncertainty)
    onnx = args.weights.lower().endswith('.onnx')
    if onnx:  # an exported network, run by onnxruntime on the CPU
        net = load_onnx(args.weights, args.config, args.device, args.save_uncertainty)
        used, device = 'ONNX, onnxruntime', torch.device('cpu')
    else:
        try:
            device = pick_device(args.device)
        except ValueError as exc:
            raise InferError(str(exc)) from None
        loaded = open_network(args.weights, args.config)
        if loaded.assumed:  # not when the checkpoint records its configuration
            print(
                'infer: note: network configuration inferred from the weights; the bottleneck head count leaves no '
                "trace in them and is assumed 16 (the paper's), pass --config for other values",
                file=sys.stderr,
            )
        net, used = loaded.net, loaded.used
    autocast = precision(args.fp16, args.bf16, device, onnx)
    run = InferRun(
        graph_replay(net if onnx else net.to(device), args.cuda_graph, device, onnx),
        used,
        device,
        args.tile,
        args.tile_overlap,
        args.tile_batch,
        args.blend,
        autocast,
        progress=not args.no_progress,
    )
    with claimed_output(plan, args.overwrite):  # one run at a time per folder, earlier images not replaced
        return derain_folder(run, inputs, plan)


if __name__ == '__main__':
    raise SystemExit(main())
