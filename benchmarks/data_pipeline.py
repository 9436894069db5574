"""Data-loading throughput: basicsr's ``PairedImageDataset`` on LMDB vs on disk PNGs (prints, never asserts).

Builds everything from a dataset folder: the pairs are converted to a temporary LMDB (``lmdb_convert``) and
linked into a temporary ``lq/`` + ``gt/`` folder pair (same names, for the disk backend). Then, for each
DataLoader worker count, it times ``--samples`` training samples (random ``--gt-size`` crops, flips, rotations)::

    python benchmarks/data_pipeline.py --input /path/to/Rain100H --layout rain200

Also timed: the plugin's ``DerainFolderDataset`` (disk, reading the layout directly) and ``SyntheticRainDataset``
(rain made on the fly from the scikit-image photos).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def throughput(dataset, workers: int, samples: int, batch: int) -> tuple[float, float]:
    """``(samples/s after the first batch, seconds to the first batch)``."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    seen, first, t0 = 0, None, None
    while seen < samples + batch:
        for data in loader:
            if first is None:
                first = time.perf_counter() - start
                t0 = time.perf_counter()
                continue
            seen += data['lq'].shape[0]
            if seen >= samples:
                break
        if seen >= samples:
            break
    return seen / (time.perf_counter() - t0), first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help='dataset folder')
    p.add_argument('--layout', default='rain200')
    p.add_argument('--split')
    p.add_argument('--subset')
    p.add_argument('--gt-size', type=int, default=128)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--samples', type=int, default=320, help='samples timed per configuration')
    p.add_argument('--workers', default='0,1,2', help='DataLoader worker counts')
    p.add_argument('--compress-level', type=int, default=1)
    args = p.parse_args()

    import basicsr.data.paired_image_dataset as pid
    from basicsr.data import build_dataset

    from s2former_plugin.data.layouts import find_pairs
    from s2former_plugin.data.lmdb_convert import convert

    scan = find_pairs(args.layout, args.input, split=args.split, subset=args.subset)
    workers = [int(w) for w in args.workers.split(',')]
    load = ', '.join(f'{v:.1f}' for v in os.getloadavg())  # other jobs on the machine skew every number
    print(
        f'torch {torch.__version__}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, load {load}'
    )
    print(f'{len(scan.pairs)} pairs from {scan.root} ({args.layout}); crops {args.gt_size}, batch {args.batch}')
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        report = convert(
            args.layout,
            args.input,
            os.path.join(tmp, 'lmdb'),
            split=args.split,
            subset=args.subset,
            workers=min(2, os.cpu_count() or 1),
            compress_level=args.compress_level,
            progress=False,
            log=lambda line: None,
        )
        print(f'LMDB conversion: {report.written} pairs, {(report.lq_bytes + report.gt_bytes) / 2**20:.1f} MiB, '
              f'{time.perf_counter() - t:.1f} s')  # fmt: skip
        for side in ('lq', 'gt'):
            os.makedirs(os.path.join(tmp, 'disk', side))
        disk_bytes = 0
        for pair in scan.pairs:
            for side, src in (('lq', pair.lq_path), ('gt', pair.gt_path)):
                os.symlink(os.path.abspath(src), os.path.join(tmp, 'disk', side, f'{pair.key}.png'))
                disk_bytes += os.path.getsize(src)
        print(f'disk PNGs: {disk_bytes / 2**20:.1f} MiB')

        common = {'phase': 'train', 'scale': 1, 'gt_size': args.gt_size, 'use_hflip': True, 'use_rot': True}
        configs = {
            'PairedImageDataset, LMDB': lambda: pid.PairedImageDataset(
                {
                    **common,
                    'dataroot_lq': os.path.join(tmp, 'lmdb', 'lq.lmdb'),
                    'dataroot_gt': os.path.join(tmp, 'lmdb', 'gt.lmdb'),
                    'io_backend': {'type': 'lmdb'},
                }
            ),
            'PairedImageDataset, disk PNG': lambda: pid.PairedImageDataset(
                {
                    **common,
                    'dataroot_lq': os.path.join(tmp, 'disk', 'lq'),
                    'dataroot_gt': os.path.join(tmp, 'disk', 'gt'),
                    'io_backend': {'type': 'disk'},
                }
            ),
            'DerainFolderDataset, disk PNG': lambda: build_dataset(
                {
                    **common,
                    'name': 'f',
                    'type': 'DerainFolderDataset',
                    'layout': args.layout,
                    'dataroot': args.input,
                    'split': args.split,
                    'subset': args.subset,
                    'io_backend': {'type': 'disk'},
                }
            ),
            'SyntheticRainDataset (skimage, mode both)': lambda: build_dataset(
                {
                    **common,
                    'name': 's',
                    'type': 'SyntheticRainDataset',
                    'source': 'skimage',
                    'num_samples': 100000,
                    'rain': {'mode': 'both'},
                }
            ),
        }
        print(f'\n| dataset | {" | ".join(f"{w} workers" for w in workers)} |')
        print(f'|---|{"---|" * len(workers)}')
        for name, make in configs.items():
            cells = []
            for w in workers:
                rate, first = throughput(make(), w, args.samples, args.batch)
                cells.append(f'{rate:.0f} samples/s (first batch {first:.2f} s)')
            print(f'| {name} | {" | ".join(cells)} |', flush=True)


if __name__ == '__main__':
    main()
