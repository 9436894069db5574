"""Training-data throughput of the LMDB pipeline as ``basicsr.train`` runs it, and how many workers a GPU needs.

What is timed is what a training run of ``options/s2former.yml`` does between two optimizer steps: basicsr's
``PairedImageDataset`` on an LMDB written by ``datasets_prep/create_lmdb.py`` (PNG values, compress level 1),
random ``--gt-size`` crops with flips and rotations, basicsr's ``EnlargedSampler`` and ``build_dataloader`` (shuffle,
``drop_last``, ``worker_init_fn``, ``pin_memory`` where set) and its ``CPUPrefetcher``; with CUDA, each batch is then
moved to the GPU as ``S2FormerModel.feed_data`` does. For each ``num_worker_per_gpu`` it times ``--batches`` batches
of ``--batch`` crops after the first one (the first batch, which waits for the workers to start, is reported on its
own)::

    python benchmarks/data_pipeline.py                                  # synthetic pairs, runs anywhere
    python benchmarks/data_pipeline.py --images datasets/Rain200H/train --layout rain200 --workers 0,1,2,4,8
    python benchmarks/data_pipeline.py --images my_photos --step-ms 200,40

Sources: ``--images DIR`` with ``--layout`` pairs a dataset folder as the converter does; without ``--layout`` every
image under ``DIR`` is used as both input and target (the same decoding work as a real pair of that size); the
default makes ``--synthetic`` rainy/clean pairs of ``--size`` from scikit-image's photos (``synthetic_rain``). The LMDB
goes to a temporary folder, removed at the end.

Printed: a table (images/s and images/s per worker process in wall time, first-batch latency, the CPU time one
image costs where it is loaded, how many cores the workers kept busy), one JSON line, and for every ``--step-ms``
the workers one GPU needs: ``batch / step`` images/s divided by what one worker delivers on a core of its own
(``1000 / CPU ms per image`` of the 1-worker run: CPU time, so a busy measuring machine does not skew it; each
worker is one process, so the figure assumes that many free cores per GPU besides the training process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROG = 'data_pipeline.py'


class BenchError(ValueError):
    """Bad input: the message is one line naming the option or file."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}') from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f'expected distinct integers >= 0, got {text!r}')
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}') from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f'expected numbers > 0, got {text!r}')
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HxW, e.g. 320x480, got {text!r}') from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'expected a positive HxW, got {text!r}')
    return h, w


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text!r}')
    return value


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group('source (default: synthetic pairs)')
    src.add_argument('--images', help='folder of images (searched recursively) or, with --layout, a dataset folder')
    src.add_argument('--layout', choices=('rainds', 'rain200', 'agan', 'paired'), help='pair --images as this layout')
    src.add_argument('--split', help='--layout: the split folder (train, test, ...)')
    src.add_argument('--synthetic', type=_positive, default=48, help='synthetic pairs without --images (48)')
    src.add_argument('--size', type=_size, default=(320, 480), help='synthetic image size HxW (320x480, Rain100H)')
    src.add_argument('--max-images', type=_positive, help='use at most this many images/pairs of --images')
    p.add_argument('--gt-size', type=_positive, default=128, help='training crop (128, the paper)')
    p.add_argument('--batch', type=_positive, default=36, help='batch_size_per_gpu (36, the paper)')
    p.add_argument('--no-augment', action='store_true', help='without use_hflip/use_rot (the paper uses both)')
    default_workers = ','.join(str(w) for w in range(min(usable_cores(), 8) + 1))
    p.add_argument('--workers', type=_int_list, default=default_workers, help='num_worker_per_gpu values (0..cores)')
    p.add_argument('--batches', type=_positive, default=10, help='timed batches per worker count, after the first')
    p.add_argument('--repeats', type=_positive, default=1, help='runs per worker count; the fastest is reported')
    p.add_argument('--pin-memory', action='store_true', help='pin_memory: true (takes effect with CUDA only)')
    p.add_argument('--persistent-workers', action='store_true', help='persistent_workers: true')
    p.add_argument('--step-ms', type=_float_list, default='200,40', help='GPU step times to advise for (ms)')
    p.add_argument('--seed', type=int, default=0, help='manual_seed (worker seeds, synthetic rain)')
    return p


# ----------------------------------------------------------------------------------------------------------------
# Sources: a folder of pairs for the converter
# ----------------------------------------------------------------------------------------------------------------
def _write_synthetic(folder: str, n: int, size: tuple[int, int], seed: int) -> None:
    """``folder/{lq,gt}/sNNNN.png``: crops of scikit-image's photos, resized to ``size``, and their rainy versions."""
    import cv2
    import numpy as np

    from s2former_plugin.data.clean_sources import load_skimage_photos
    from s2former_plugin.data.rain_synthesis import add_rain
    from s2former_plugin.imageio import write

    photos = [img for _, img in load_skimage_photos()]
    rng = np.random.default_rng(seed)
    h, w = size
    for side in ('lq', 'gt'):
        os.makedirs(os.path.join(folder, side))
    for i in range(n):
        img = photos[i % len(photos)]
        ih, iw = img.shape[:2]
        scale = rng.uniform(0.6, 1.0)  # a different view of the photo for every pair
        ch, cw = max(1, round(ih * scale)), max(1, round(iw * scale))
        y, x = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
        gt = cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
        lq = add_rain(gt, rng, mode='both')
        write(os.path.join(folder, 'gt', f's{i:04d}.png'), gt)
        write(os.path.join(folder, 'lq', f's{i:04d}.png'), lq)


def _link_self_pairs(images: str, folder: str, limit: int | None) -> int:
    """``folder/{lq,gt}/iNNNNN.<ext>``: links to every image under ``images``, each its own target."""
    from s2former_plugin.imageio import list_images

    found = []
    for here, dirs, _ in os.walk(images, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found.extend(list_images(here))
    if limit:
        found = found[:limit]
    if not found:
        raise BenchError(f'--images: no image files under {images}')
    for side in ('lq', 'gt'):
        os.makedirs(os.path.join(folder, side))
        for i, path in enumerate(found):
            os.symlink(os.path.abspath(path), os.path.join(folder, side, f'i{i:05d}{os.path.splitext(path)[1]}'))
    return len(found)


def _limited_pairs(args: argparse.Namespace, folder: str) -> None:
    """``folder/{lq,gt}``: links to the first ``--max-images`` pairs of ``--images`` as ``--layout`` pairs them."""
    from s2former_plugin.data.layouts import find_pairs

    scan = find_pairs(args.layout, args.images, split=args.split)
    if not scan.pairs:
        raise BenchError(f'--images: no {args.layout} pairs found in {args.images}')
    for side in ('lq', 'gt'):
        os.makedirs(os.path.join(folder, side))
    for pair in scan.pairs[: args.max_images]:
        for side, path in (('lq', pair.lq_path), ('gt', pair.gt_path)):
            os.symlink(os.path.abspath(path), os.path.join(folder, side, pair.key + os.path.splitext(path)[1]))


def make_lmdb(args: argparse.Namespace, tmp: str) -> tuple[str, int, float, str]:
    """Convert the chosen source with ``lmdb_convert.convert``; ``(output folder, pairs, MiB of PNG, description)``."""
    from s2former_plugin.data.lmdb_convert import convert

    layout, root, split = 'paired', os.path.join(tmp, 'src'), None
    if args.images is None:
        _write_synthetic(root, args.synthetic, args.size, args.seed)
        what = f'synthetic {args.size[0]}x{args.size[1]} pairs (scikit-image photos + rain)'
    elif not os.path.isdir(args.images):
        raise BenchError(f'--images: folder not found: {args.images}')
    elif args.layout is None:
        _link_self_pairs(args.images, root, args.max_images)
        what = f'images under {args.images}, each its own target'
    elif args.max_images:
        _limited_pairs(args, root)
        what = f'the first {args.max_images} {args.layout} pairs of {args.images}'
    else:
        layout, root, split = args.layout, args.images, args.split
        what = f'{args.layout} pairs of {args.images}' + (f' ({args.split})' if args.split else '')
    out = os.path.join(tmp, 'lmdb')
    report = convert(layout, root, out, split=split, workers=min(2, usable_cores()), progress=False, log=lambda _: None)
    if report.written == 0:
        raise BenchError(f'--images: no usable pairs in {args.images} (found {report.pairs_found})')
    if report.skipped:
        print(f'note: {len(report.skipped)} pairs skipped by the converter, first: {report.skipped[0]}')
    return out, report.written, (report.lq_bytes + report.gt_bytes) / 2**20, f'{report.written} {what}'


def smallest_image(lmdb_dir: str) -> tuple[str, int, int]:
    """The entry of ``meta_info.txt`` (``<key>.png (h,w,c) level``) with the smallest side: ``(key, h, w)``."""
    smallest = None
    with open(os.path.join(lmdb_dir, 'meta_info.txt')) as f:
        for line in f:
            name, shape, _ = line.split()
            h, w, _ = (int(v) for v in shape.strip('()').split(','))
            if smallest is None or min(h, w) < min(smallest[1:]):
                smallest = (name.rsplit('.', 1)[0], h, w)
    return smallest


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------
def dataset_options(lmdb_root: str, args: argparse.Namespace, workers: int) -> dict:
    """The ``datasets: train:`` options of ``options/s2former.yml``, pointed at the benchmark's LMDB."""
    opt = {
        'name': 'data_pipeline',
        'type': 'PairedImageDataset',
        'dataroot_gt': os.path.join(lmdb_root, 'gt.lmdb'),
        'dataroot_lq': os.path.join(lmdb_root, 'lq.lmdb'),
        'io_backend': {'type': 'lmdb'},
        'gt_size': args.gt_size,
        'use_hflip': not args.no_augment,
        'use_rot': not args.no_augment,
        'num_worker_per_gpu': workers,
        'batch_size_per_gpu': args.batch,
        'dataset_enlarge_ratio': 1,
        'prefetch_mode': None,
        'phase': 'train',
        'scale': 1,
    }
    if args.pin_memory:
        opt['pin_memory'] = True
    if args.persistent_workers:
        opt['persistent_workers'] = True
    return opt


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from ``/proc/<pid>/stat`` (``None`` where there is no ``/proc``)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime, stime (fields 14, 15)


def _workers_cpu(prefetcher) -> float | None:
    """CPU seconds used so far by the DataLoader worker processes behind basicsr's ``CPUPrefetcher``."""
    workers = getattr(prefetcher.loader, '_workers', [])
    times = [_cpu_seconds(w.pid) for w in workers]
    return None if not times or None in times else sum(times)


def time_loader(opt: dict, batches: int, seed: int, device: torch.device | None) -> dict:
    """One run: wall and CPU figures of ``batches`` batches after the first.

    Returns:
        ``images_per_s`` and ``batch_ms`` (wall time), ``first_batch_s`` (from the start of the epoch: the workers
        start, read and collate their first batches), ``main_cpu_ms_per_batch`` (this process's CPU time) and
        ``worker_cpu_s`` (the workers' CPU time in the timed window, ``None`` without workers or ``/proc``).
    """
    import torch
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.data.prefetch_dataloader import CPUPrefetcher

    dataset = build_dataset(opt)
    batch, size = opt['batch_size_per_gpu'], opt['gt_size']
    # One epoch long enough for the whole run: a new epoch would start the workers again (timed as first batch).
    opt = dict(opt, dataset_enlarge_ratio=math.ceil((batches + 1) * batch / len(dataset)))
    sampler = EnlargedSampler(dataset, 1, 0, opt['dataset_enlarge_ratio'])
    loader = build_dataloader(dataset, opt, num_gpu=1, dist=False, sampler=sampler, seed=seed)
    prefetcher = CPUPrefetcher(loader)
    start = time.perf_counter()
    prefetcher.reset()
    times, cpu = [], []
    for _ in range(batches + 1):
        data = prefetcher.next()
        if data is None:
            raise RuntimeError(f'the loader ended after {len(times)} batches; expected {batches + 1}')
        for key in ('lq', 'gt'):
            if tuple(data[key].shape) != (batch, 3, size, size) or data[key].dtype != torch.float32:
                raise RuntimeError(f'batch {key}: {tuple(data[key].shape)} {data[key].dtype}, expected '
                                   f'({batch}, 3, {size}, {size}) float32')  # fmt: skip
            if device is not None:
                data[key].to(device, non_blocking=True)  # as S2FormerModel.feed_data does
        if device is not None:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter())
        if len(times) in (1, batches + 1):  # the timed window's two ends
            cpu.append((time.process_time(), _workers_cpu(prefetcher) if opt['num_worker_per_gpu'] else None))
    del prefetcher, loader  # ends the worker processes before the next run
    steady = times[-1] - times[0]
    (main0, workers0), (main1, workers1) = cpu
    return {
        'images_per_s': batches * batch / steady,
        'batch_ms': 1000 * steady / batches,
        'first_batch_s': times[0] - start,
        'main_cpu_ms_per_batch': 1000 * (main1 - main0) / batches,
        'worker_cpu_s': None if workers0 is None or workers1 is None else workers1 - workers0,
        'wall_s': steady,
    }


#: Least worker CPU time a figure is computed from: ``/proc`` counts in clock ticks (10 ms), so 0.5 s is 2 % at worst.
MIN_WORKER_CPU_S = 0.5


def loader_cpu_ms_per_image(row: dict, batch: int, batches: int) -> float | None:
    """CPU time of one training image where the loading runs: the main process with 0 workers, else the workers
    (``None`` where the workers' time was not measured or too short to count)."""
    if row['workers'] == 0:
        return row['main_cpu_ms_per_batch'] / batch
    if row['worker_cpu_s'] is None or row['worker_cpu_s'] < MIN_WORKER_CPU_S:
        return None
    return 1000 * row['worker_cpu_s'] / (batches * batch)


def workers_needed(batch: int, step_ms: float, per_worker: float) -> dict:
    """Workers that deliver ``batch`` images every ``step_ms`` at ``per_worker`` images/s each.

    Args:
        batch: Crops per step (``batch_size_per_gpu``).
        step_ms: One optimizer step of the GPU, in milliseconds.
        per_worker: Images/s one worker process delivers.

    Returns:
        ``{'step_ms', 'images_per_s_needed', 'workers'}``.
    """
    need = batch * 1000 / step_ms
    return {'step_ms': step_ms, 'images_per_s_needed': need, 'workers': max(1, math.ceil(need / per_worker))}


def run(args: argparse.Namespace) -> dict:
    """Build the LMDB, time every worker count, and return the results (what the JSON line holds)."""
    import torch

    from s2former_plugin.data.layouts import LayoutError
    from s2former_plugin.data.lmdb_convert import ConvertError

    device = torch.device('cuda') if torch.cuda.is_available() else None
    cores = usable_cores()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='data_pipeline_') as tmp:
        start = time.perf_counter()
        try:
            lmdb_root, pairs, mib, source = make_lmdb(args, tmp)
        except (LayoutError, ConvertError) as e:
            raise BenchError(f'--images: {e}') from None
        convert_s = time.perf_counter() - start
        key, h, w = smallest_image(os.path.join(lmdb_root, 'gt.lmdb'))
        if min(h, w) < args.gt_size:
            where = args.images or 'the synthetic pairs (--size)'
            raise BenchError(f'--gt-size {args.gt_size}: image {key} of {where} is only {h}x{w}')
        print(f'source: {source}; LMDB {mib:.1f} MiB of PNG (compress level 1), converted in {convert_s:.1f} s')
        print(f'torch {torch.__version__}; {cores} usable CPU cores; load average {load_before[0]:.1f}; '
              f'CUDA: {torch.cuda.get_device_name(0) if device is not None else "none"}')  # fmt: skip
        if args.pin_memory and device is None:
            print('note: pin_memory has no effect without CUDA; measured without it')
        print(f'batch {args.batch} crops of {args.gt_size}x{args.gt_size}'
              f'{"" if args.no_augment else ", random flips and rotations"}; {args.batches} timed batches per '
              f'worker count, fastest of {args.repeats}', flush=True)  # fmt: skip
        rows = []
        for workers in args.workers:
            opt = dataset_options(lmdb_root, args, workers)
            runs = [time_loader(opt, args.batches, args.seed, device) for _ in range(args.repeats)]
            best = max(runs, key=lambda r: r['images_per_s'])
            row = {'workers': workers, **best, 'per_worker': best['images_per_s'] / max(workers, 1)}
            row['cpu_ms_per_image'] = loader_cpu_ms_per_image(row, args.batch, args.batches)
            short = row['worker_cpu_s'] is None or row['worker_cpu_s'] < MIN_WORKER_CPU_S
            row['worker_cores_busy'] = None if short else row['worker_cpu_s'] / row['wall_s']
            row['all_images_per_s'] = [r['images_per_s'] for r in runs]
            rows.append(row)
            print(f'  num_worker_per_gpu {workers}: {best["images_per_s"]:.1f} images/s', flush=True)
    result = {
        'benchmark': 'data_pipeline',
        'source': source,
        'pairs': pairs,
        'batch': args.batch,
        'gt_size': args.gt_size,
        'augment': not args.no_augment,
        'pin_memory': bool(args.pin_memory and device is not None),
        'persistent_workers': args.persistent_workers,
        'cuda': device is not None,
        'usable_cores': cores,
        'load_average': [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        'torch': torch.__version__,
        'results': rows,
        'advice': [],
    }
    # The advice counts CPU time, not wall time: a worker with a core to itself delivers 1000 / (CPU ms per image)
    # images/s, whatever else the measuring machine was running.
    basis = next((r for w in (1, 0) for r in rows if r['workers'] == w and r['cpu_ms_per_image']), None)
    if basis is not None:
        result['core_images_per_s'] = 1000 / basis['cpu_ms_per_image']
        n = basis['workers']
        result['advice_basis'] = f'CPU time per image with {n} worker{"" if n == 1 else "s"}'
        result['advice'] = [workers_needed(args.batch, ms, result['core_images_per_s']) for ms in args.step_ms]
    return result


def print_report(result: dict) -> None:
    """The table, the advice and the JSON line of :func:`run`'s result."""
    cores = result['usable_cores']

    def opt(value: float | None, fmt: str) -> str:
        return '-' if value is None else format(value, fmt)

    print('\n| `num_worker_per_gpu` | images/s | images/s per worker | ms per batch | first batch (s) '
          '| loader CPU ms per image | worker cores busy | main CPU ms per batch |')  # fmt: skip
    print('|---|---|---|---|---|---|---|---|')
    for r in result['results']:
        over = ' (more workers than cores)' if r['workers'] > cores else ''
        print(f'| {r["workers"]}{over} | {r["images_per_s"]:.1f} | {r["per_worker"]:.1f} | {r["batch_ms"]:.0f} '
              f'| {r["first_batch_s"]:.2f} | {opt(r["cpu_ms_per_image"], ".1f")} '
              f'| {opt(r["worker_cores_busy"], ".2f")} | {r["main_cpu_ms_per_batch"]:.0f} |')  # fmt: skip
    if not result['advice']:
        print('\nno advice: it needs the CPU time of a run with 0 or 1 workers (add them to --workers)')
    else:
        rate = result['core_images_per_s']
        print(f'\nworkers per GPU for batch {result["batch"]}: one worker on a core of its own delivers '
              f'{rate:.1f} images/s ({result["advice_basis"]}); each worker needs a free core')  # fmt: skip
        measured = max(r['workers'] for r in result['results'])
        for a in result['advice']:
            notes = [f'more than the {measured} measured: extrapolated'] if a['workers'] > measured else []
            if a['workers'] > cores - 1:
                notes.append(f'this machine has {cores} cores')
            note = f' ({"; ".join(notes)})' if notes else ''
            print(f'  step {a["step_ms"]:g} ms: {a["images_per_s_needed"]:.0f} images/s -> {a["workers"]} '
                  f'workers{note}')  # fmt: skip
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.layout is not None and args.images is None:
        print(f'{PROG}: error: --layout needs --images', file=sys.stderr)
        return 2
    try:
        result = run(args)
    except BenchError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2
    print_report(result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
