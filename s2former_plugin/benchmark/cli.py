"""The benchmark's command line: ``python -m s2former_plugin.benchmark -opt FILE [overrides]`` (see :mod:`.driver`).

Parses the arguments into the overrides of :func:`.options.load_options`, runs :func:`.driver.run_benchmark` and
prints the table; a bad option or a failed step ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import os

from ..errors import run_command
from . import driver
from .children import log
from .options import load_options
from .report import results_markdown

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog='python -m s2former_plugin.benchmark', description=driver.__doc__.split('\n')[0])
    p.add_argument('-opt', required=True, help='benchmark YAML (see options/benchmark.yml)')
    p.add_argument('--out', help='output folder (default: benchmark_results/<name> in the working directory)')
    p.add_argument('--data-root', help='overrides data:dataroot')
    p.add_argument('--total-iter', type=int, help='overrides train:total_iter')
    p.add_argument('--max-minutes', type=float, help='overrides train:max_minutes (one run of the slowest arch)')
    p.add_argument('--seeds', type=int, help='overrides train:seeds (runs per arch)')
    p.add_argument('--only', help='comma-separated arch names to run (the report covers these only)')
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry; bad options and failed steps end with one ``benchmark: error:`` line and exit status 2."""
    args = build_parser().parse_args(argv)
    return run_command('benchmark', lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    overrides = {
        'data_root': args.data_root,
        'total_iter': args.total_iter,
        'max_minutes': args.max_minutes,
        'seeds': args.seeds,
        'only': [s for s in (args.only or '').split(',') if s],
    }
    opt = load_options(args.opt, overrides)
    out = args.out or os.path.join('benchmark_results', opt['name'])
    summaries = driver.run_benchmark(opt, out)
    log(f'{len(summaries)} archs; results in {os.path.join(out, "results.md")}')
    print(results_markdown(summaries, opt, opt['_meta']))
    return 0
