"""Distributed validation and the NaN stop under a real gloo process group (two CPU processes, no mocks).

Three validation images on two ranks (rank 0 scores two, rank 1 one): every rank's metric means must equal the
single-process ones, which in turn equal a per-image computation by hand. A NaN loss on one rank must stop both.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.models import build_model
from basicsr.utils import tensor2img
from helpers import Y_METRICS, free_port, parsed_options, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

pytestmark = pytest.mark.slow

WORLD = 2
METRICS = Y_METRICS


def _options(root: Path) -> dict:
    write_paired_folder(root / 'train', n=2, size=(24, 24))
    write_paired_folder(root / 'val', n=3, size=(20, 28), seed=3)
    opt = parsed_options(tiny_s2former_options(root / 'train', None), root)
    opt['datasets']['val'].update(dataroot_gt=str(root / 'val' / 'gt'), dataroot_lq=str(root / 'val' / 'lq'))
    opt['val']['metrics'] = copy.deepcopy(METRICS)
    return opt


class _Scalars:
    """basicsr's tensorboard writer, as far as validation uses it: records ``add_scalar`` calls."""

    def __init__(self):
        self.calls = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.calls.append([tag, value, step])


def _saved(opt: dict, current_iter: int) -> list[str]:
    return sorted(p.name for p in Path(opt['path']['visualization']).rglob(f'*_{current_iter}.png'))


def _build(opt: dict):
    torch.manual_seed(0)  # same weights on every rank and in the single-process reference
    return build_model(opt)


def _worker(rank: int, opt: dict, port: int, out_dir: str) -> None:
    """One rank: validate, then take a training step whose loss is NaN on rank 1 only; record what happened."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group('gloo', rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        opt = dict(opt, dist=True, rank=rank, world_size=WORLD)
        model = _build(opt)
        loader = DataLoader(build_dataset(opt['datasets']['val']))
        seen = []
        predict = model.predict
        model.predict = lambda lq: seen.append(tuple(lq.shape)) or predict(lq)
        scalars = _Scalars()
        model.validation(loader, current_iter=3, tb_logger=scalars, save_img=True)
        dist.barrier()  # every rank has written its images
        record = {'metrics': model.metric_results, 'validated': len(seen), 'scalars': scalars.calls}
        record['images'] = _saved(opt, 3)
        record['best_iter'] = model.best_metric_results[opt['datasets']['val']['name']]['psnr']['iter']

        train_batch = next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=1)))
        if rank == 1:
            train_batch['lq'] = torch.full_like(train_batch['lq'], float('nan'))
        before = {k: v.clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()}
        model.feed_data(train_batch)
        try:
            model.optimize_parameters(3)
            record['stopped'] = None
        except FloatingPointError as exc:
            record['stopped'] = str(exc)
        after = model.get_bare_model(model.net_g).state_dict()
        record['weights_unchanged'] = all(torch.equal(before[k], after[k]) for k in before)
        Path(out_dir, f'rank{rank}.json').write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> tuple[dict, list[dict], dict[str, list[float]], dict]:
    root = tmp_path_factory.mktemp('dist')
    opt = _options(root)

    # Single process: the model's validation, and the same scores computed image by image.
    model = _build(opt)
    dataset = build_dataset(opt['datasets']['val'])
    scalars = _Scalars()
    model.validation(DataLoader(dataset), current_iter=2, tb_logger=scalars, save_img=True)
    single = dict(model.metric_results)
    single_io = {'scalars': scalars.calls, 'images': _saved(opt, 2)}
    by_hand = {name: [] for name in METRICS}
    for i in range(len(dataset)):
        item = dataset[i]
        output, _ = model.predict(item['lq'].unsqueeze(0))
        data = {'img': tensor2img(output), 'img2': tensor2img(item['gt'].unsqueeze(0))}
        for name, metric_opt in METRICS.items():
            by_hand[name].append(float(calculate_metric(data, dict(metric_opt))))

    out_dir = root / 'out'
    out_dir.mkdir()
    mp.start_processes(_worker, args=(opt, free_port(), str(out_dir)), nprocs=WORLD, start_method='spawn')
    ranks = [json.loads((out_dir / f'rank{r}.json').read_text()) for r in range(WORLD)]
    return single, ranks, by_hand, single_io


def test_single_process_means_are_the_per_image_means(runs):
    single, _, by_hand, _ = runs
    assert len(by_hand['psnr']) == 3 and len(set(by_hand['psnr'])) == 3  # three different scores
    for name, values in by_hand.items():
        assert single[name] == pytest.approx(sum(values) / len(values), rel=1e-12, abs=1e-12)


def test_every_rank_reports_the_single_process_means(runs):
    single, ranks, _, _ = runs
    assert [r['validated'] for r in ranks] == [2, 1]  # uneven shards: 3 images on 2 ranks
    for rank, record in enumerate(ranks):
        assert set(record['metrics']) == set(METRICS)
        for name, value in record['metrics'].items():
            assert value == pytest.approx(single[name], rel=1e-12, abs=1e-12), f'rank {rank} {name}'


def test_nan_on_one_rank_stops_every_rank_before_the_update(runs):
    _, ranks, _, _ = runs
    for rank, record in enumerate(ranks):
        assert record['stopped'] is not None and 'Non-finite loss at iteration 3' in record['stopped'], rank
        assert record['weights_unchanged'], rank


def test_images_and_scalars_are_written_at_the_iteration_in_both_modes(runs):
    """Each rank saves its share of the images (all three in the end) named with the iteration, and rank 0 logs
    each metric to the tensorboard writer at that iteration; the same in one process."""
    single, ranks, _, single_io = runs
    names = ['000_2.png', '001_2.png', '002_2.png']  # iterations below total_iter (4): not renumbered
    assert single_io['images'] == names
    assert single_io['scalars'] == [[f'metrics/tiny_val/{k}', v, 2] for k, v in single.items()]
    assert ranks[0]['images'] == [n.replace('_2', '_3') for n in names]
    assert ranks[0]['scalars'] == [[f'metrics/tiny_val/{k}', v, 3] for k, v in ranks[0]['metrics'].items()]
    assert ranks[1]['scalars'] == []  # only rank 0 logs
    assert [r['best_iter'] for r in ranks] == [3, 3]
