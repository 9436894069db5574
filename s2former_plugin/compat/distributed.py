"""Distributed training: gloo without CUDA, the local GPU by ``LOCAL_RANK``, DDP of CPU models."""

from __future__ import annotations

import os

from ._state import ORIGINAL


def init_dist(launcher: str, backend: str | None = None, **kwargs) -> None:
    """basicsr's ``init_dist`` that also works without CUDA and picks the local GPU by ``LOCAL_RANK``.

    The backend is device-aware where CUDA exists (``cpu:gloo,cuda:nccl``: a ``num_gpu: 0`` run on a GPU host
    communicates CPU tensors through gloo), gloo elsewhere. A rank without a GPU of its own selects none: if the
    run then uses CUDA, :func:`check_local_gpus` stops every rank (sharing a GPU by modulo is slow or hangs).
    """
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if launcher != 'pytorch':  # slurm: basicsr's own code (GPU clusters)
        return ORIGINAL['init_dist'](launcher, backend or 'nccl', **kwargs)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
    backend = backend or ('cpu:gloo,cuda:nccl' if torch.cuda.is_available() else 'gloo')
    dist.init_process_group(backend=backend, **kwargs)


def check_local_gpus() -> None:
    """Stop (on every rank alike) a CUDA run that has more processes on this node than visible GPUs.

    The count is torchrun's ``LOCAL_WORLD_SIZE``; launchers that do not set it are not checked.
    """
    import torch

    if 'LOCAL_WORLD_SIZE' not in os.environ:
        return
    ranks, gpus = int(os.environ['LOCAL_WORLD_SIZE']), torch.cuda.device_count()
    if ranks > gpus:
        raise RuntimeError(
            f'{ranks} processes on this node but {gpus} visible GPU(s): start one process per GPU '
            f'(torchrun --nproc_per_node={gpus}), or set num_gpu: 0 to train on the CPU'
        )


def _model_to_device(self, net):
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if self.opt['dist'] and self.device.type == 'cuda':
        check_local_gpus()
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False)
        )
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net
