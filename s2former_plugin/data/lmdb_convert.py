"""Convert a deraining dataset (any layout of :mod:`.layouts`) into a pair of BasicSR LMDBs.

Output (what ``basicsr.data.PairedImageDataset`` reads with ``io_backend: {type: lmdb}``)::

    OUT/lq.lmdb/{data.mdb, lock.mdb, meta_info.txt}     meta lines: ``<key>.png (h,w,c) <compress_level>``
    OUT/gt.lmdb/{data.mdb, lock.mdb, meta_info.txt}     values: PNG bytes, same keys on both sides
    OUT/create_lmdb.json                                 options and counts of the conversion

Robustness:

* Images are decoded in a process pool by :mod:`s2former_plugin.imageio`; the parent writes. Pairs whose images
  cannot be decoded, are truncated or damaged, or differ in size are reported by name and skipped (``strict``: the
  conversion stops instead). Unmatched files are listed by name (``strict``: refused before writing).
* Commits are recorded in a ledger, so an interrupted run resumes where it stopped, and the LMDB map grows on
  demand (:mod:`.lmdb_writer`). ``verify_output`` / ``--verify-only`` compare every stored pair with its source
  (:mod:`.lmdb_verify`).

This module runs the steps in order (scan, prepare the output, write, meta files, verify, record) and is the
command line: ``python datasets_prep/create_lmdb.py --help`` (or ``python -m s2former_plugin.data.lmdb_convert``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

from ..errors import run_command
from .layouts import LAYOUTS, LayoutError, PairScan, find_pairs
from .lmdb_report import ConvertError, ConvertReport
from .lmdb_verify import verify, verify_existing
from .lmdb_writer import LEDGER, STATE, prepare_output, write_meta, write_pairs

# The error and report types belong to convert()'s documented Python interface.
__all__ = ['ConvertError', 'ConvertReport', 'build_parser', 'convert', 'main']


def _options_record(layout, input_root, split, subset, lq_dir, gt_dir, template, level) -> dict:
    return {
        'layout': layout,
        'input': os.path.abspath(input_root),
        'split': split,
        'subset': subset,
        'lq_dir': lq_dir,
        'gt_dir': gt_dir,
        'template': template,
        'compress_level': level,
    }


def convert(
    layout: str,
    input_root: str,
    output: str,
    split: str | None = None,
    subset: str | None = None,
    lq_dir: str | None = None,
    gt_dir: str | None = None,
    template: str | None = None,
    workers: int = 0,
    compress_level: int = 1,
    strict: bool = False,
    overwrite: bool = False,
    verify_output: bool = False,
    batch: int = 256,
    progress: bool = True,
    log: Callable[[str], None] = print,
    _after_commit: Callable[[int], None] | None = None,
) -> ConvertReport:
    """Write ``output/lq.lmdb`` and ``output/gt.lmdb`` from a dataset folder.

    Args:
        layout: Layout name (see :mod:`.layouts`).
        input_root: Dataset folder.
        output: Output folder (created).
        split: Split folder, e.g. ``train``.
        subset: ``rainds`` subset.
        lq_dir: ``paired`` input folder.
        gt_dir: ``paired`` clean folder.
        template: ``paired`` name template.
        workers: Decoding processes (0 or 1: in this process; default of the CLI: all cores).
        compress_level: PNG compression 0-9 (BasicSR uses 1: fast to decode, ~2x raw PNG size).
        strict: Stop at the first unmatched, unreadable or mismatched file instead of skipping it.
        overwrite: Replace existing LMDBs in ``output``.
        verify_output: Decode every entry afterwards and compare it with its source image.
        batch: Pairs per LMDB commit (and ledger entry).
        progress: Show tqdm progress bars.
        log: Where report lines go.
        _after_commit: Test hook, called with the number of commits done.

    Returns:
        The counts; ``report.skipped`` and ``report.unmatched`` hold one line per file.

    Raises:
        ConvertError: A bad option or input, or (``strict``) a bad file.
    """
    start = time.time()
    if not 0 <= compress_level <= 9:
        raise ConvertError(f'--compress-level: {compress_level} is not in 0..9')
    if workers < 0:
        raise ConvertError(f'--workers: {workers} must be >= 0')
    if batch < 1:
        raise ConvertError(f'batch: {batch} must be >= 1')
    try:
        scan: PairScan = find_pairs(
            layout, input_root, split=split, subset=subset, lq_dir=lq_dir, gt_dir=gt_dir, template=template
        )
    except LayoutError as e:
        raise ConvertError(str(e)) from None
    if os.path.realpath(output).startswith(os.path.realpath(scan.root) + os.sep):
        raise ConvertError(f'output: {output} is inside the input folder {scan.root}')
    report = ConvertReport(output=output, pairs_found=len(scan.pairs), unmatched=scan.problems)
    for line in report.unmatched:
        log(f'warning: {line}')
    if strict and report.unmatched:
        raise ConvertError(f'--strict: {report.unmatched[0]} ({len(report.unmatched)} files unmatched)')
    if not scan.pairs:
        raise ConvertError(f'input: no image pairs found in {scan.root} for layout {layout}')

    options = _options_record(layout, input_root, split, subset, lq_dir, gt_dir, template, compress_level)
    done = prepare_output(output, options, overwrite)
    todo = [p for p in scan.pairs if p.key not in done]
    report.resumed = sum(1 for p in scan.pairs if p.key in done)
    if report.resumed:
        log(f'resuming: {report.resumed} of {len(scan.pairs)} pairs already written, {len(todo)} to go')
    report.skipped = write_pairs(
        output, todo, done, compress_level=compress_level, workers=workers, batch=batch, strict=strict,
        progress=progress, log=log, after_commit=_after_commit,
    )  # fmt: skip

    keys = [p.key for p in scan.pairs if p.key in done]
    done = {k: done[k] for k in keys}  # drop ledger keys the input no longer has
    if not done:
        raise ConvertError(f'input: none of the {len(scan.pairs)} pairs in {scan.root} could be read')
    write_meta(output, done, compress_level)
    report.written = len(done)
    report.lq_bytes = sum(v[2] for v in done.values())
    report.gt_bytes = sum(v[3] for v in done.values())
    if verify_output:
        by_key = {p.key: p for p in scan.pairs}
        report.verify_errors = verify(output, [by_key[k] for k in keys], workers=workers, progress=progress)
        report.verified = len(keys)
        for line in report.verify_errors:
            log(f'verify: {line}')
    report.seconds = time.time() - start
    with open(os.path.join(output, STATE), 'w') as f:
        record = asdict(report)
        # A failed --verify is not a finished conversion: a rerun says so and --verify-only can check again.
        record.update(status='verify_failed' if report.verify_errors else 'done', options=options)
        json.dump(record, f, indent=1)
    os.remove(os.path.join(output, LEDGER))
    return report


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options (shared by ``datasets_prep/create_lmdb.py``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description='Convert a deraining dataset into BasicSR LMDBs (OUT/lq.lmdb, OUT/gt.lmdb).',
        epilog='Layouts: rainds (RainDS_syn/real), rain200 (Rain200H/L, Rain100H/L), agan (Raindrop), paired.',
    )
    p.add_argument('--layout', choices=LAYOUTS, help='required unless --verify-only')
    p.add_argument('--input', help='dataset folder (required unless --verify-only)')
    p.add_argument('--output', help='output folder; lq.lmdb and gt.lmdb are written inside')
    p.add_argument('--split', help='split folder: train, test (agan: test_a, test_b)')
    p.add_argument('--subset', help='rainds: rs, rd, rsrd or all (default all)')
    p.add_argument('--lq-dir', help='paired: input folder (default lq)')
    p.add_argument('--gt-dir', help='paired: clean folder (default gt)')
    p.add_argument('--template', help="paired: input stem from clean stem, e.g. '{}_rain'")
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='decoding processes (default: all cores)')
    p.add_argument('--compress-level', type=int, default=1, help='PNG compression 0-9 (default 1, as BasicSR)')
    p.add_argument('--strict', action='store_true', help='stop at the first unmatched or bad file')
    p.add_argument('--overwrite', action='store_true', help='replace existing LMDBs in --output')
    p.add_argument('--verify', action='store_true', help='decode every entry afterwards and compare with source')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument(
        '--verify-only', metavar='OUT', help='check an existing conversion in OUT against its sources; writes nothing'
    )
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 verification failed, 2 bad input, 130 interrupted)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return run_command(prog or 'create_lmdb', lambda: _run(parser, args))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.verify_only:
        report = verify_existing(args.verify_only, args.workers, not args.no_progress)
        for line in report.verify_errors:
            print(f'verify: {line}', file=sys.stderr)
        print(f'verified: {report.verified} pairs, {len(report.verify_errors)} missing or differ from their source')
        return 1 if report.verify_errors else 0
    missing = [f'--{k}' for k in ('layout', 'input', 'output') if getattr(args, k) is None]
    if missing:
        parser.error(f'the following arguments are required: {", ".join(missing)}')
    try:
        report = convert(
            args.layout,
            args.input,
            args.output,
            split=args.split,
            subset=args.subset,
            lq_dir=args.lq_dir,
            gt_dir=args.gt_dir,
            template=args.template,
            workers=args.workers,
            compress_level=args.compress_level,
            strict=args.strict,
            overwrite=args.overwrite,
            verify_output=args.verify,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        return 130
    print(report.summary())
    return 1 if report.verify_errors else 0


if __name__ == '__main__':
    sys.exit(main(prog='python -m s2former_plugin.data.lmdb_convert'))
