"""Every supported loss combination trains under DistributedDataParallel (2 processes, gloo, CPU).

Without the UDL loss the uncertainty heads get no gradient (and with the perceptual loss alone neither do the
side-output heads): DDP without ``find_unused_parameters`` then stops at the second iteration ("Expected to have
finished reduction in the prior iteration"). The model freezes exactly the heads its losses cannot reach.
"""

from __future__ import annotations

import datetime
import itertools
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import parsed_options, tiny_s2former_options, write_paired_folder

LOSSES = ('psnr_opt', 'perceptual_opt', 'udl_opt')
COMBOS = [c for n in (1, 2, 3) for c in itertools.combinations(LOSSES, n)]


def _options(root, vgg19, losses, **extra) -> dict:
    opt = parsed_options(tiny_s2former_options(root / 'data', vgg19), root)
    for key in LOSSES:
        if key not in losses:
            opt['train'].pop(key, None)
    opt.update(extra)
    return opt


def _batch(rank: int) -> dict:
    gen = torch.Generator().manual_seed(rank)  # each rank its own data, as a distributed sampler gives
    lq = torch.rand(2, 3, 16, 16, generator=gen)
    return {'lq': lq, 'gt': (lq * 0.8).clamp(0, 1)}


def _worker(rank: int, world: int, init_file: str, root, vgg19, results) -> None:
    from basicsr.models import build_model

    dist.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        for combo in COMBOS:
            name = '+'.join(combo)
            try:
                torch.manual_seed(0)
                model = build_model(_options(root, vgg19, combo, dist=True, rank=rank, world_size=world))
                for it in (1, 2):  # DDP's check of unused parameters fires at the second iteration
                    model.feed_data(_batch(rank))
                    model.optimize_parameters(it)
                params = torch.cat([p.detach().flatten() for p in model.net_g.parameters()])
                gathered = [torch.empty_like(params) for _ in range(world)]
                dist.all_gather(gathered, params)
                results[(rank, name)] = {
                    'find_unused': model.net_g.find_unused_parameters,
                    'in_sync': all(torch.equal(gathered[0], g) for g in gathered),
                    'log': model.get_current_log(),
                }
            except Exception:  # noqa: BLE001 - reported per combination by the test below
                results[(rank, name)] = {'error': traceback.format_exc()[-2000:]}
                dist.barrier()  # keep the ranks in step for the next combination
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory, vgg19_file) -> dict:
    """Run all combinations in one 2-process gloo job (one spawn instead of seven)."""
    root = tmp_path_factory.mktemp('ddp_losses')
    write_paired_folder(root / 'data', n=2, size=(16, 16))
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, str(root / 'init'), root, vgg19_file, results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.slow
@pytest.mark.parametrize('combo', COMBOS, ids=['+'.join(c).replace('_opt', '') for c in COMBOS])
def test_loss_combination_trains_under_ddp(ddp_results, combo):
    name = '+'.join(combo)
    for rank in (0, 1):
        res = ddp_results[(rank, name)]
        assert 'error' not in res, res.get('error')
        assert res['find_unused'] is False  # no search for unused parameters on every iteration
        assert res['in_sync'], 'replicas diverged: gradients were not averaged'
        assert all(torch.isfinite(torch.tensor(v)) for v in res['log'].values())


@pytest.mark.parametrize('combo', COMBOS, ids=['+'.join(c).replace('_opt', '') for c in COMBOS])
def test_frozen_heads_are_exactly_those_the_losses_cannot_reach(tmp_path, vgg19_file, combo):
    from basicsr.models import build_model

    torch.manual_seed(0)
    model = build_model(_options(tmp_path, vgg19_file, combo))
    frozen = {n for n, p in model.net_g.named_parameters() if not p.requires_grad}
    assert bool(frozen) == ('udl_opt' not in combo)
    model.net_g.requires_grad_(True)  # unfreeze: which parameters does the loss actually reach?
    model.feed_data(_batch(0))
    model.optimize_parameters(1)
    assert {n for n, p in model.net_g.named_parameters() if p.grad is None} == frozen


def _validation_worker(rank: int, world: int, init_file: str, root, results) -> None:
    import time

    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from torch.utils.data import DataLoader

    dist.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=world, timeout=datetime.timedelta(seconds=90)
    )
    try:
        model = build_model(_options(root, None, ('psnr_opt', 'udl_opt'), dist=True, rank=rank, world_size=world))
        loader = DataLoader(build_dataset(model.opt['datasets']['val']))
        if rank == 1:

            def broken(lq):
                raise MemoryError('out of memory on this rank')

            model.predict = broken
        start = time.monotonic()
        try:
            model.validation(loader, current_iter=1, tb_logger=None, save_img=False)
            results[rank] = ('no error', time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - what each rank saw is the test's subject
            results[rank] = (f'{type(exc).__name__}: {exc}', time.monotonic() - start)
        deadline = time.monotonic() + 120  # the failed rank stays alive (as under a launcher that does not kill)
        while len(results) < world and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_validation_failure_on_one_rank_stops_all_ranks_at_once(tmp_path):
    write_paired_folder(tmp_path / 'data', n=3, size=(16, 16))
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_validation_worker, args=(2, str(tmp_path / 'init'), tmp_path, results), nprocs=2, join=True)
        results = dict(results)
    assert results[1][0] == 'MemoryError: out of memory on this rank'
    assert results[0][0] == 'RuntimeError: validation of tiny_val failed on another rank; see its error'
    assert results[0][1] < 60  # not the 90 s collective timeout
