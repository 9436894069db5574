"""Export a trained S2Former to ONNX: one file for every batch size and image size.

Usage::

    python -m s2former_plugin.export --weights net_g_latest.pth --output net.onnx \\
        [--config net.yml] [--opset 17] [--outputs final|all] [--check]

Weights and ``--config``: whatever ``python -m s2former_plugin.infer`` accepts (BasicSR, official or plain state
dicts, ``.safetensors``). The configuration must be known, not assumed: from ``--config``, or recorded in the
checkpoint (``.safetensors`` written by ``s2former_plugin.convert`` or by training); the bottleneck head count
leaves no trace in the weights, so other weights need ``--config`` (one line says so). A ``--config`` that
differs from the recorded configuration is refused (``--config`` with ``preset: paper`` for the authors' released
files). The graph takes ``input`` ``N x 3 x H x W`` (float32, RGB in [0, 1], any ``H, W >= 1``) and returns
``image``; with ``--outputs all`` also the side outputs and the uncertainty maps (``image_s1`` .. ``image_s8``,
``uncertainty``, ``uncertainty_s1`` .. ``uncertainty_s8``, the order of ``forward(x, return_all=True)``).
``--check`` runs the file in onnxruntime at a few sizes (odd ones and a batch of 2 included) and compares every
output with PyTorch's: the mean absolute difference must be at most 1e-5 (exit status 1 otherwise). Bad arguments
or files: one line, exit status 2. Needs ``pip install 's2former_plugin[export]'``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from .errors import CommandError, S2FormerError, first_line, incomplete_status, run_command
from .inference import InferError, open_network
from .onnx_backend import (
    CHECK_SIZES,
    DEFAULT_OPSET,
    OPSETS,
    OUTPUT_MODES,
    OnnxError,
    OnnxNetwork,
    compare,
    export_onnx,
    require,
)

#: ``--check`` fails above this mean absolute difference (float32 rounding gives ~1e-7 to 1e-6).
CHECK_MEAN_TOLERANCE = 1e-5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m s2former_plugin.export', description='Export S2Former to ONNX.')
    p.add_argument(
        '--weights', required=True, help='checkpoint (BasicSR, official udrs2former_*.pth, state dict or .safetensors)'
    )
    p.add_argument('--output', required=True, help='the .onnx file to write')
    p.add_argument('--config', help='S2Former kwargs (YAML/JSON) or a BasicSR options file with network_g')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset version (default {DEFAULT_OPSET})')
    p.add_argument('--outputs', default='final', choices=OUTPUT_MODES, help="'all': also side outputs, uncertainty")
    p.add_argument('--check', action='store_true', help='compare onnxruntime with PyTorch at a few sizes')
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 ``--check`` failed, 2 bad arguments or files)."""
    args = build_parser().parse_args(argv)
    return run_command('export', lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    try:
        net, used, seconds = _write(args)
    except S2FormerError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter's own errors (e.g. an op missing at a low opset)
        first = first_line(exc, 300, default=type(exc).__name__)
        raise CommandError(f'exporting to opset {args.opset} failed: {first}') from None
    size_mb = os.path.getsize(args.output) / 2**20
    print(
        f'export: {args.output} ({size_mb:.1f} MB, opset {args.opset}, outputs {args.outputs}, {used}, {seconds:.1f}s)'
    )
    return _check(net, args.output) if args.check else 0


def _write(args: argparse.Namespace) -> tuple[torch.nn.Module, str, float]:
    """Check the arguments, load the network and write the ONNX file; the network, what was loaded, the seconds
    the export took."""
    require('onnx', 'onnxruntime')
    if not args.output.lower().endswith('.onnx'):
        raise InferError(f'--output: {args.output} must end in .onnx (infer recognises ONNX files by it)')
    if os.path.exists(args.weights) and os.path.realpath(args.output) == os.path.realpath(args.weights):
        raise InferError(f'--output: {args.output} is the --weights file')
    if args.opset not in OPSETS:
        raise InferError(f'--opset: {args.opset} is not in {OPSETS.start}..{OPSETS.stop - 1}, the opsets exported')
    # The graph bakes the configuration in and --check compares it with the same network: a configuration the
    # weights leave open (the bottleneck head count) is refused rather than assumed.
    loaded = open_network(args.weights, args.config, allow_assumed=False)
    net = loaded.net
    if os.path.dirname(args.output):
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
    metadata = {
        'arch': 'S2Former',
        'config': net.config,
        'config_source': loaded.config_source,
        'weights': os.path.basename(args.weights),
    }
    start = time.perf_counter()
    export_onnx(
        net,
        args.output,
        outputs=args.outputs,
        opset=args.opset,
        in_channels=net.config['in_channels'],
        metadata=metadata,
    )
    return net, loaded.used, time.perf_counter() - start


def _check(net: torch.nn.Module, path: str) -> int:
    """Compare onnxruntime with PyTorch at :data:`CHECK_SIZES`, one line each; the exit status (1: failed)."""
    try:
        rows = compare(net, OnnxNetwork(path), CHECK_SIZES)
    except OnnxError as exc:
        return incomplete_status('export', f'check failed: {exc}')
    failed = False
    for row in rows:
        ok = row['finite'] and row['mean'] <= CHECK_MEAN_TOLERANCE
        failed |= not ok
        print(
            f'export: check {row["size"]}: onnxruntime vs PyTorch mean |diff| {row["mean"]:.2e}, '
            f'max {row["max"]:.2e}{"" if row["finite"] else ", NON-FINITE values"} {"ok" if ok else "FAILED"}'
        )
    print(
        'export: note: float32 rounding differs between the runtimes; near-tied uncertainty rankings can then flip '
        '(as between thread counts in PyTorch), which moves a few pixels more than the mean'
    )
    problem = f'check failed: mean |diff| above {CHECK_MEAN_TOLERANCE:g} or non-finite'
    return incomplete_status('export', problem if failed else None)


if __name__ == '__main__':
    raise SystemExit(main())
