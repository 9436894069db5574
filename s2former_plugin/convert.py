"""Convert S2Former weights between ``.pth`` and ``.safetensors``, bit for bit, recording the configuration.

Usage::

    python -m s2former_plugin.convert net_g_latest.pth net.safetensors [--config options.yml]
    python -m s2former_plugin.convert net.safetensors net.pth

Input: whatever ``python -m s2former_plugin.infer`` reads (BasicSR ``params_ema`` preferred, else ``params``;
official ``udrs2former_*.pth``; plain state dicts; ``.safetensors``), with the same checks (weights only, finite,
strict keys against the configuration). The tensors are written unchanged (same dtype and bits), under our key
names. The output's format follows its suffix: ``.safetensors`` (metadata ``arch``, ``config`` as JSON), or
``.pth`` (a BasicSR checkpoint ``{'params': ..., 'metadata': ...}``).

The configuration is recorded when it is known: from ``--config`` (a YAML/JSON file of S2Former kwargs or a BasicSR
options file), or from the input's own record. Without either, the bottleneck head count (which leaves no trace in
the weights) stays unrecorded and a note says so. The input is never overwritten, nor any other file without
``--overwrite``. Bad arguments or files: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import read_checkpoint, save_safetensors, save_torch
from .errors import CommandError, run_command
from .inference import InferError, open_network

OUTPUT_SUFFIXES = ('.safetensors', '.pth')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m s2former_plugin.convert', description='Convert S2Former weights between .pth and .safetensors.'
    )
    p.add_argument('input', help='weights to read (.pth, official udrs2former_*.pth, .safetensors)')
    p.add_argument('output', help='file to write: .safetensors or .pth (by its suffix)')
    p.add_argument('--config', help='S2Former kwargs (YAML/JSON) or a BasicSR options file with network_g, to record')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output file (never the input)')
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 bad arguments or files)."""
    args = build_parser().parse_args(argv)
    return run_command('convert', lambda: _convert(args))


def _convert(args: argparse.Namespace) -> int:
    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InferError(f'output: {args.output} must end in .safetensors or .pth')
    if os.path.exists(args.input) and os.path.realpath(args.output) == os.path.realpath(args.input):
        raise InferError(f'output: {args.output} is the input file; choose another name')
    if os.path.exists(args.output) and not args.overwrite:
        raise InferError(f'output: {args.output} exists; pass --overwrite to replace it')
    try:
        # Built and loaded strictly: the same checks as infer, and the configuration's source.
        loaded = open_network(args.input, args.config, option='input')
        ckpt = read_checkpoint(args.input, param_key='params_ema')  # the file's own tensors, dtypes unchanged
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    metadata = {k: v for k, v in ckpt.metadata.items() if k not in ('format', 'config')}
    metadata.update(arch='S2Former', source=os.path.basename(args.input))
    if not loaded.assumed:
        metadata['config'] = loaded.net.config
    try:
        if os.path.dirname(args.output):
            os.makedirs(os.path.dirname(args.output), exist_ok=True)
        if suffix == '.safetensors':
            save_safetensors(ckpt.state, args.output, metadata)
        else:
            save_torch(ckpt.state, args.output, metadata)
    except (OSError, ValueError) as exc:
        raise CommandError(f'cannot write {args.output}: {exc}') from None
    recorded = 'not recorded' if loaded.assumed else f'recorded ({loaded.config_source})'
    print(f'convert: {args.input} ({ckpt.used}) -> {args.output} ({len(ckpt.state)} tensors, configuration {recorded})')
    if loaded.assumed:
        print(
            'convert: note: the bottleneck head count leaves no trace in the weights and is not recorded; pass '
            '--config (the training options file) to record the configuration',
            file=sys.stderr,
        )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
