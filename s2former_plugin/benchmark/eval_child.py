"""The per-arch measurement subprocess: ``python -m s2former_plugin.benchmark.eval_child SPEC.json``.

Measures speed in a fresh process, then multiply-adds, then scores the test images; writes the arch's result.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

from .measure import count_macs, measure_speed
from .nets import build_net, import_modules


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def evaluate_child() -> None:
    """Entry of the per-arch measurement subprocess: ``argv[1]`` is ``OUT/<arch>/eval_spec.json``.

    Measures speed first (a fresh process), then multiply-adds, then scores the test images; writes the result.
    """
    with open(sys.argv[1], encoding='utf-8') as f:
        spec = json.load(f)
    import torch

    if spec['threads']:
        torch.set_num_threads(int(spec['threads']))
    import_modules(spec['imports'])
    from s2former_plugin.checkpoint import load_state_dict_any
    from s2former_plugin.data.layouts import find_pairs
    from s2former_plugin.inference import derain_array
    from s2former_plugin.metrics.scoring import finite_mean, read_image, score_images
    from s2former_plugin.tiling import tiled_forward

    device = spec['device']
    net = build_net(spec['network_g'])
    used = None
    if spec['weights']:
        state, used = load_state_dict_any(spec['weights'], spec['param_key'])
        net.load_state_dict(state, strict=True)
    net = net.to(device).eval()
    result: dict[str, Any] = {'params': sum(p.numel() for p in net.parameters()), 'weights_used': used}
    with torch.no_grad():  # lazy one-time initialisation (thread pools, kernels) is not any size's cost
        net(torch.rand(1, 3, min(spec['sizes']), min(spec['sizes']), device=device))
    result['speed'] = {str(s): measure_speed(net, s, spec['runs'], device) for s in sorted(spec['sizes'])}
    result.update({f'{k}@{spec["macs_size"]}': v for k, v in count_macs(net, spec['macs_size'], device).items()})

    def run(x: torch.Tensor):
        with torch.no_grad():
            return tiled_forward(net, x, spec['tile'], spec['tile_overlap'], device=device, out_device='cpu'), None

    # The report's path (metrics.scoring: read_image, score_images, finite_mean), with images converted to and from
    # the network as python -m s2former_plugin.infer does (inference.derain_array: the prediction in the input's
    # bit depth, as infer would save it; the deraining papers score saved PNGs).
    scores: dict[str, list[float]] = {m: [] for m in spec['metrics']}
    start = time.perf_counter()
    pairs = find_pairs('paired', spec['test_dir']).pairs
    for pair in pairs:
        pred, _ = derain_array(read_image(pair.lq_path), run)
        for m, v in score_images(pred, read_image(pair.gt_path), spec['metrics'], spec['protocol']).items():
            scores[m].append(v)
    result['eval_seconds'] = round(time.perf_counter() - start, 2)
    result['test_images'] = len(pairs)
    means = {m: finite_mean(v) for m, v in scores.items()}
    result['metrics'] = {m: _finite(mean) for m, (mean, _) in means.items()}
    result['metrics_infinite'] = {m: n for m, (_, n) in means.items() if n}
    with open(spec['out'], 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    evaluate_child()
