"""Score a folder of restored images, against ground truth or without it, and write JSON/CSV/Markdown/HTML reports.

Usage::

    python -m s2former_plugin.report --pred results/ --gt Rain100H/norain --out report/ \\
        [--metrics psnr,ssim,lpips] [--protocol standard|official] [--input Rain100H/rain/X2] [--workers 2]
    python -m s2former_plugin.report --pred derained/ --input rainy/ --out report/ [--metrics niqe,piqe]

Pairing (:mod:`.metrics.pairing`): by file stem and the datasets' naming rules; ambiguous names and shared ground
truth are refused (``--allow-shared-gt`` counts them); images without their counterpart are an error unless
``--allow-missing``. Scoring (:mod:`.metrics.evaluation`): without ``--gt`` only no-reference metrics (default
``niqe,piqe``), with ``--input`` also for the inputs and the change. Writers (:mod:`.reporting`): ``metrics.json``,
``metrics.csv``, ``report.md``, ``report.html`` with a gallery under ``images/``. Means are over finite values: an
image identical to its ground truth (PSNR ``inf``) is counted under ``infinite`` and said. The ``--out`` folder is
locked for the run and its earlier report set aside first (:mod:`.outputs`). See docs/metrics.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import CommandError, run_command
from .metrics import protocols
from .metrics.evaluation import evaluate
from .metrics.pairing import collect_pairs
from .metrics.uncertainty_eval import evaluate_uncertainty
from .outputs import OutputFolder
from .reporting import REPORT_FILES, write_reports
from .reporting.summary import print_summary
from .reporting.uncertainty import write_uncertainty

__all__ = ['build_parser', 'main']


class ReportError(CommandError):
    """A problem with the command's inputs; reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m s2former_plugin.report',
        description='Score restored images against ground truth, or with no-reference metrics when there is none.',
    )
    p.add_argument('--pred', required=True, help='folder of restored images')
    p.add_argument('--gt', help='folder of ground-truth images (without it: no-reference metrics only)')
    p.add_argument('--out', required=True, help='output folder for metrics.json/csv, report.md/html, images/')
    p.add_argument(
        '--metrics',
        help='comma-separated metric names (default: psnr,ssim with --gt, else the no-reference niqe,piqe)',
    )
    p.add_argument('--protocol', default='standard', choices=protocols.PROTOCOLS)
    p.add_argument('--input', help='folder of the degraded (rainy) inputs, paired by name: gallery and input scores')
    p.add_argument('--uncertainty', help='folder of uncertainty maps (default: PRED/uncertainty when it exists)')
    p.add_argument('--pred-suffix', help='suffix to strip from prediction names, e.g. _S2Former')
    p.add_argument('--weights-dir', help='folder of metric weight files (brisque, musiq, ...), before the torch cache')
    p.add_argument(
        '--allow-missing', action='store_true', help='accept images without their counterpart (still listed)'
    )
    p.add_argument(
        '--allow-shared-gt',
        action='store_true',
        help='accept several predictions paired with one ground-truth image (listed and counted)',
    )
    p.add_argument('--masks', help='folder of rain masks (synthetic_rain --masks): uncertainty as a rain detector')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), help='scoring threads')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def _check_folders(args: argparse.Namespace) -> None:
    dirs = {
        '--pred': args.pred,
        '--gt': args.gt,
        '--input': args.input,
        '--uncertainty': args.uncertainty,
        '--weights-dir': args.weights_dir,
    }
    for opt, path in dirs.items():
        if path is not None and not os.path.isdir(path):
            raise ReportError(f'{opt}: folder not found: {path}')
    outs = {os.path.realpath(args.out), os.path.realpath(os.path.join(args.out, 'images'))}
    for opt, path in dirs.items():
        if path is not None and os.path.realpath(path) in outs:
            raise ReportError(f'--out: {args.out} would write into the {opt} folder; choose another folder')


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors are one line on stderr).

    Status 2: nothing written (a folder is missing, nothing to score). Status 1: the report is written but something
    is wrong (an image skipped, an unknown metric, images without their counterpart and no ``--allow-missing``).
    """
    args = build_parser().parse_args(argv)
    return run_command('report', lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    _check_folders(args)
    default = 'psnr,ssim' if args.gt else ','.join(protocols.NR_DEFAULT_METRICS)
    metrics = [m.strip() for m in (args.metrics if args.metrics is not None else default).split(',') if m.strip()]
    if not metrics:
        raise ReportError('--metrics: no metric given')
    unc_dir = args.uncertainty
    if unc_dir is None and os.path.isdir(os.path.join(args.pred, 'uncertainty')):
        unc_dir = os.path.join(args.pred, 'uncertainty')  # where infer --save-uncertainty writes
    pairs, missing = collect_pairs(args.pred, args.gt, args.input, unc_dir, args.pred_suffix, args.allow_shared_gt)
    if not pairs:
        where = f'matches an image in {args.gt} (by name)' if args.gt else 'is an image'
        raise ReportError(f'no prediction in {args.pred} {where}')
    with OutputFolder(args.out, 'report', '--out') as out:
        out.set_aside(REPORT_FILES)  # a run killed from here on leaves no earlier metrics.json looking current
        ev = evaluate(pairs, metrics, args.protocol, args.workers, not args.no_progress, args.weights_dir)
        ev.missing = missing
        write_reports(ev, args.out, args.allow_missing)
        unc = _uncertainty(args, unc_dir)
        out.drop_previous()
    return max(print_summary(ev, metrics, missing, args.protocol, args.out, args.allow_missing), unc)


def _uncertainty(args: argparse.Namespace, unc_dir: str | None) -> int:
    """The uncertainty measures when raw maps (``.npz``) and ground truth are given; 1 if a map was refused."""
    if not (unc_dir and args.gt and any(n.endswith('.npz') for n in os.listdir(unc_dir))):
        return 0
    uev = evaluate_uncertainty(
        unc_dir,
        args.pred,
        args.gt,
        args.masks,
        protocol=args.protocol,
        pred_suffix=args.pred_suffix,
        allow_shared_gt=args.allow_shared_gt,
    )
    write_uncertainty(uev, args.out)
    print(uev.line())
    for name, reason in uev.errors.items():
        print(f'report: uncertainty of {name} not scored: {reason}', file=sys.stderr)
    return 1 if uev.errors else 0


if __name__ == '__main__':
    raise SystemExit(main())
