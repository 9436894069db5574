"""Synthetic rain: turn clean images into rainy ones (streaks, lens raindrops, or both), seeded and vectorised.

The command writes a folder readable by the ``paired`` layout (``OUT/lq``, ``OUT/gt``) and, with ``--masks``,
``OUT/mask/<name>.png`` (255 = rain, 0 = clear), for scoring uncertainty maps as rain detectors::

    python -m s2former_plugin.data.synthetic_rain --input skimage --output datasets/synth --mode both --seed 0 \\
        [--masks]

The mathematics is :mod:`.rain_synthesis`, the clean images come from :mod:`.clean_sources`, the folder is written by
:mod:`.synthetic_pairs`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import CommandError, run_command
from .clean_sources import load_clean_images
from .rain_synthesis import MASK_THRESHOLD, MODES
from .synthetic_pairs import output_problem, prepare_output, render_pairs, write_pair

__all__ = ['build_parser', 'main']

PROG = 'python -m s2former_plugin.data.synthetic_rain'


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description='Make a paired deraining folder (OUT/lq, OUT/gt) from clean images with synthetic rain.',
    )
    p.add_argument('--input', required=True, help="folder of clean images, or 'skimage' for its sample photos")
    p.add_argument('--output', required=True)
    p.add_argument('--mode', default='both', choices=MODES)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--per-image', type=int, default=1, help='rainy versions per clean image')
    p.add_argument('--crop', type=int, default=0, help='random square crop of this size (0: whole image)')
    p.add_argument('--max-side', type=int, default=0, help='downscale so the longer side is at most this (0: keep)')
    p.add_argument(
        '--masks',
        action='store_true',
        help=f'also write OUTPUT/mask/<name>.png: 255 where a streak or drop covers at least {MASK_THRESHOLD:g}',
    )
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='first remove the images an earlier run left in OUTPUT/lq, OUTPUT/gt (and OUTPUT/mask)',
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: write ``OUT/lq/<name>.png`` (rainy), ``OUT/gt/<name>.png`` (clean) and, with ``--masks``,
    ``OUT/mask/<name>.png`` (255 where rain was drawn); returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.per_image < 1 or args.crop < 0 or args.max_side < 0:
        raise CommandError('--per-image must be >= 1, --crop and --max-side >= 0')
    problem = output_problem(args.input, args.output, args.overwrite)
    if problem:
        raise CommandError(problem)
    try:
        sources = load_clean_images(args.input)
    except ValueError as e:
        raise CommandError(str(e)) from None
    try:
        removed = prepare_output(args.output, args.masks)
    except OSError as e:
        raise CommandError(f'--output: cannot prepare {e.filename or args.output} ({e.strerror})') from None
    if removed:
        print(f'--overwrite: removed {removed} images of an earlier run from {args.output}')
    count = 0
    pairs = render_pairs(
        sources, mode=args.mode, seed=args.seed, per_image=args.per_image, crop=args.crop, max_side=args.max_side
    )
    for stem, gt, lq, mask in pairs:
        try:
            write_pair(args.output, stem, gt, lq, mask if args.masks else None)
        except OSError as e:
            print(f'{PROG}: error: {e} (after {count} pairs)', file=sys.stderr)
            return 1
        count += 1
    masks = f' (masks in {os.path.join(args.output, "mask")})' if args.masks else ''
    print(f'wrote {count} pairs to {os.path.join(args.output, "lq")} and {os.path.join(args.output, "gt")}{masks}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
