"""Does the uncertainty map point at the errors and at the rain? Trained nets against an untrained one and a trivial
baseline map, on one test set (prints a table, writes JSON, CSVs and the sparsification plot; never asserts).

Synthetic rain with masks (the skimage photos, ``--per-image`` rainy crops each)::

    python benchmarks/uncertainty_example.py --out /tmp/unc_example/eval \\
        --weights quickstart=experiments/s2former_quickstart/models/net_g_latest.pth

A folder pair (e.g. Rain100H; predictions are paired with ground truth by the dataset names), with rain masks
taken from the pairs themselves (``--rain-threshold``: where the rainy input differs from the clean image)::

    python benchmarks/uncertainty_example.py --out /tmp/unc_r100h --lq RAIN/rain/X2 --gt RAIN/norain \\
        --rain-threshold 0.2 --weights quickstart=.../net_g_latest.pth

Rows: every ``--weights LABEL=PATH`` net, ``untrained`` (``S2Former(preset='small')`` with seed 0, its own errors)
and ``blur baseline`` (``|rainy - GaussianBlur(rainy, 2)|`` scored against the first net's errors). Each net runs
``python -m s2former_plugin.infer --tile 0 --save-uncertainty`` into ``OUT/<label>/``; the scores come from
``s2former_plugin.metrics.uncertainty_eval.evaluate_uncertainty`` on the final-scale raw maps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _infer(weights: str, lq: str, out: str, device: str) -> None:
    from s2former_plugin import infer

    argv = ['--weights', weights, '--input', lq, '--output', out, '--tile', '0', '--save-uncertainty']
    rc = infer.main([*argv, '--device', device, '--no-progress', '--overwrite'])
    if rc != 0:
        raise SystemExit(f'uncertainty_example: infer failed for {weights} (status {rc})')


def _baseline_maps(lq: str, out: str, sigma: float) -> None:
    """``OUT/<stem>.npz`` holding the blur-residual map of each rainy input as its ``final`` map."""
    from s2former_plugin.imageio import list_images
    from s2former_plugin.metrics.scoring import read_image
    from s2former_plugin.metrics.uncertainty import blur_residual_map
    from s2former_plugin.metrics.uncertainty_maps import save_raw_maps

    os.makedirs(out, exist_ok=True)
    for path in list_images(lq):
        stem = os.path.splitext(os.path.basename(path))[0]
        save_raw_maps(os.path.join(out, f'{stem}.npz'), {'final': blur_residual_map(read_image(path), sigma)[None]})


def _difference_masks(lq: str, gt: str, out: str, threshold: float) -> None:
    """``OUT/<stem>.png``: 255 where the rainy input differs from its clean image by more than ``threshold`` (0-1,
    the largest of the three channels), the rain a synthetic pair adds; 0 elsewhere."""
    import numpy as np

    from s2former_plugin import imageio
    from s2former_plugin.metrics.pairing import collect_pairs
    from s2former_plugin.metrics.scoring import read_image

    pairs, missing = collect_pairs(lq, gt)
    if missing.get('no_ground_truth'):
        raise SystemExit(f'uncertainty_example: --rain-threshold: no clean image for {missing["no_ground_truth"][0]}')
    os.makedirs(out, exist_ok=True)
    for p in pairs:
        rainy, clean = read_image(p.pred), read_image(p.gt)
        if rainy.dtype != clean.dtype or rainy.shape != clean.shape:
            raise SystemExit(f'uncertainty_example: --rain-threshold: {p.pred} and {p.gt} differ in size or depth')
        peak = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(rainy.dtype, 1.0)
        diff = np.abs(rainy.astype(np.float64) - clean.astype(np.float64)).max(axis=2) / peak
        imageio.write(os.path.join(out, f'{p.name}.png'), np.uint8(diff > threshold) * 255)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='folder for the data, predictions, maps and results')
    p.add_argument('--weights', action='append', default=[], metavar='LABEL=PATH', help='a trained net (repeatable)')
    p.add_argument('--lq', help='folder of rainy inputs (default: synthetic rain made into OUT/data)')
    p.add_argument('--gt', help='folder of ground truth (with --lq)')
    p.add_argument('--masks', help='folder of rain masks (with --lq; optional)')
    p.add_argument(
        '--rain-threshold',
        type=float,
        help='with --lq and no --masks: rain masks from the pairs, |rainy - clean| > T (0-1, largest channel)',
    )
    p.add_argument('--per-image', type=int, default=4, help='synthetic set: rainy crops per skimage photo')
    p.add_argument('--crop', type=int, default=128, help='synthetic set: crop size')
    p.add_argument('--seed', type=int, default=1, help='synthetic set: seed')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--sigma', type=float, default=2.0, help='blur of the baseline map')
    args = p.parse_args(argv)
    import torch

    from s2former_plugin.archs.s2former_arch import S2Former
    from s2former_plugin.data import synthetic_rain
    from s2former_plugin.metrics.uncertainty_eval import evaluate_uncertainty
    from s2former_plugin.reporting.uncertainty import plot_curves, write_csv

    nets = {}
    for item in args.weights:
        label, sep, path = item.partition('=')
        if not sep or not os.path.isfile(path):
            p.error(f'--weights: expected LABEL=PATH of a file, got {item!r}')
        nets[label] = path
    os.makedirs(args.out, exist_ok=True)
    if args.lq:
        if not args.gt:
            p.error('--lq needs --gt')
        lq, gt, masks = args.lq, args.gt, args.masks
        if masks is None and args.rain_threshold is not None:
            masks = os.path.join(args.out, 'difference_masks')
            _difference_masks(lq, gt, masks, args.rain_threshold)
    else:
        data = os.path.join(args.out, 'data')
        rc = synthetic_rain.main(
            ['--input', 'skimage', '--output', data, '--per-image', str(args.per_image), '--crop', str(args.crop)]
            + ['--seed', str(args.seed), '--masks', '--overwrite']
        )
        if rc != 0:
            return rc
        lq, gt, masks = (os.path.join(data, s) for s in ('lq', 'gt', 'mask'))
    torch.manual_seed(0)
    untrained = os.path.join(args.out, 'untrained.pth')
    torch.save(S2Former(preset='small').state_dict(), untrained)
    nets['untrained'] = untrained

    results = {}
    for label, weights in nets.items():
        folder = os.path.join(args.out, label)
        _infer(weights, lq, folder, args.device)
        results[label] = evaluate_uncertainty(os.path.join(folder, 'uncertainty'), folder, gt, masks, strict=True)
    first = next(iter(nets))
    _baseline_maps(lq, os.path.join(args.out, 'baseline_maps'), args.sigma)
    results['blur baseline'] = evaluate_uncertainty(
        os.path.join(args.out, 'baseline_maps'), os.path.join(args.out, first), gt, masks, strict=True
    )

    cols = ['spearman', 'ause', 'aurg', 'mean_error'] + (['auroc', 'average_precision'] if masks else [])
    print(f'{len(next(iter(results.values())).per_image)} images, final-scale maps, errors |Y(out) - Y(gt)| (0-1)')
    print(f'| map | {" | ".join(cols)} |')
    print('|---' * (len(cols) + 1) + '|')
    for label, ev in results.items():
        m = ev.mean()
        name = f'{label} (errors of {first})' if label == 'blur baseline' else label
        print(f'| {name} | ' + ' | '.join(f'{m[c]:.4f}' for c in cols) + ' |')
    for label, ev in results.items():
        write_csv(ev, os.path.join(args.out, f'uncertainty_{label.replace(" ", "_")}.csv'))
    with open(os.path.join(args.out, 'uncertainty.json'), 'w', encoding='utf-8') as f:
        json.dump({label: ev.summary() for label, ev in results.items()}, f, indent=1)
    plot_curves(results, os.path.join(args.out, 'sparsification.png'))
    print(f'wrote {args.out}/uncertainty.json, uncertainty_*.csv and sparsification.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
