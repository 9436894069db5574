"""The measurement and evaluation subprocess: ``python -m s2former_plugin.benchmark.eval_child SPEC.json``.

One fresh process for everything after training: first (when asked) all archs are measured together (parameters,
multiply-adds, and latency and peak memory interleaved: :func:`~s2former_plugin.benchmark.measure.measure_interleaved`),
then every pending run (an arch under one seed, or a checkpoint) is scored on the whole test images, image by image.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

from .measure import count_macs, measure_interleaved
from .nets import build_net, import_modules


def _finite(v: Any) -> Any:
    """JSON has no infinity: a non-finite score is stored as its string (``'inf'``; ``float()`` reads it back)."""
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def load_weights(spec: dict, device: str) -> tuple[Any, Any]:
    """``spec``'s network on ``device`` in eval mode, ``weights`` loaded (``weights_only``), and the key used."""
    from s2former_plugin.checkpoint import load_state_dict_any

    net = build_net(spec['network_g'])
    used = None
    if spec.get('weights'):
        state, used = load_state_dict_any(spec['weights'], spec['param_key'])
        net.load_state_dict(state, strict=True)
    return net.to(device).eval(), used


def measure_archs(speed: dict, device: str) -> dict:
    """``{name: {params, weights_used, speed: {size: ...}, macs@S, uncounted_ops@S}}`` for ``speed['archs']``
    (``[{name, network_g, weights, param_key}]``), all built in this process and timed interleaved."""
    import torch

    nets, results = {}, {}
    for arch in speed['archs']:
        net, used = load_weights(arch, device)
        nets[arch['name']] = net
        results[arch['name']] = {'params': sum(p.numel() for p in net.parameters()), 'weights_used': used}
    smallest = min(speed['sizes'])
    with torch.no_grad():  # lazy one-time initialisation (thread pools, kernels) is not any size's cost
        for net in nets.values():
            net(torch.rand(1, 3, smallest, smallest, device=device))
    for name in nets:
        results[name]['speed'] = {}
    for size in sorted(speed['sizes']):
        for name, value in measure_interleaved(nets, size, speed['runs'], device).items():
            results[name]['speed'][str(size)] = value
    for name, net in nets.items():
        macs = count_macs(net, speed['macs_size'], device)
        results[name].update({f'{k}@{speed["macs_size"]}': v for k, v in macs.items()})
    return results


def evaluate_run(run: dict, spec: dict) -> dict:
    """Score one run (``run``: ``network_g``, ``weights``, ``param_key``) on the test images of ``spec``.

    The report's path (:mod:`s2former_plugin.metrics.scoring`: ``read_image``, ``score_images``, ``finite_mean``),
    with images converted to and from the network as ``python -m s2former_plugin.infer`` does
    (:func:`s2former_plugin.inference.derain_array`: the prediction in the input's bit depth, as infer would save
    it; the deraining papers score saved PNGs).

    Returns:
        ``params``, ``weights_used``, ``test_images``, ``metrics`` (finite means), ``metrics_infinite`` (counts),
        ``per_image`` (``{metric: {image key: score}}``), ``eval_seconds``.
    """
    import torch

    from s2former_plugin.data.layouts import find_pairs
    from s2former_plugin.inference import derain_array
    from s2former_plugin.metrics.scoring import finite_mean, read_image, score_images
    from s2former_plugin.tiling import tiled_forward

    device = spec['device']
    net, used = load_weights(run, device)
    result: dict[str, Any] = {'params': sum(p.numel() for p in net.parameters()), 'weights_used': used}

    def forward(x: torch.Tensor):
        with torch.no_grad():
            return tiled_forward(net, x, spec['tile'], spec['tile_overlap'], device=device, out_device='cpu'), None

    scores: dict[str, dict[str, float]] = {m: {} for m in spec['metrics']}
    start = time.perf_counter()
    pairs = find_pairs('paired', spec['test_dir']).pairs
    for pair in pairs:
        pred, _ = derain_array(read_image(pair.lq_path), forward)
        for m, v in score_images(pred, read_image(pair.gt_path), spec['metrics'], spec['protocol']).items():
            scores[m][pair.key] = v
    result['eval_seconds'] = round(time.perf_counter() - start, 2)
    result['test_images'] = len(pairs)
    means = {m: finite_mean(list(v.values())) for m, v in scores.items()}
    result['metrics'] = {m: _finite(mean) for m, (mean, _) in means.items()}
    result['metrics_infinite'] = {m: n for m, (_, n) in means.items() if n}
    result['per_image'] = {m: {k: _finite(v) for k, v in vals.items()} for m, vals in scores.items()}
    return result


def evaluate_child() -> None:
    """Entry: ``argv[1]`` is a spec: ``imports``, ``device``, ``threads``, ``tile``, ``tile_overlap``,
    ``protocol``, ``metrics``, ``test_dir``; ``speed`` (``None`` or ``{archs, sizes, runs, macs_size, out}``);
    ``runs`` (``[{network_g, weights, param_key, out}]``). Speed is measured first, in the fresh process; each
    run's result is written to its ``out``."""
    with open(sys.argv[1], encoding='utf-8') as f:
        spec = json.load(f)
    import torch

    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    import_modules(spec['imports'])
    if spec.get('speed'):
        results = measure_archs(spec['speed'], spec['device'])
        with open(spec['speed']['out'], 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=2)
    for run in spec.get('runs') or []:
        result = evaluate_run(run, spec)
        with open(run['out'], 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    evaluate_child()
