"""Validation of :class:`~.s2former_model.S2FormerModel`: the final output (and uncertainty) of every image.

``val:`` adds ``tile`` / ``tile_overlap`` / ``tile_blend`` / ``tile_batch`` (whole images of any size are validated
tile by tile with blended overlaps, ``tile_batch`` tiles per forward; ``tile: ~`` runs whole images; ``tile_blend:
official`` averages like the official test script), ``cuda_graph`` (each tile or image shape seen more than once
replayed as a CUDA graph, :mod:`s2former_plugin.graphed_inference`), ``uncertainty_metrics`` (the mean
Spearman, AUSE and spread of the final uncertainty map against the error, docs/uncertainty.md) and, with
``save_img: true``, saves the derained image next to its colour-mapped uncertainty. In distributed runs every
rank validates its share of the images and the metric sums are all-reduced.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from tqdm import tqdm

from s2former_plugin import imageio
from s2former_plugin.graphed_inference import GraphedForward
from s2former_plugin.metrics.pyiqa_metric import needs_reference
from s2former_plugin.metrics.uncertainty_eval import UncertaintyAccumulator
from s2former_plugin.tiling import tiled_forward
from s2former_plugin.visualize import uncertainty_to_color

from .s2former_options import NonFiniteLoss

__all__ = ['S2FormerValidation']

#: The uncertainty measures logged per validation (``val:uncertainty_metrics``), summed over the images.
LOGGED_UNCERTAINTY = ('spearman', 'ause', 'spread')


class S2FormerValidation:
    """basicsr's ``dist_validation`` / ``nondist_validation`` / ``test`` for a multi-output net: the EMA net (else
    the net) on whole images or tiles, metric sums all-reduced once, every rank failing together."""

    def _eval_network(self) -> torch.nn.Module:
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def _graphed_forward(self, net: torch.nn.Module) -> GraphedForward | torch.nn.Module:
        """``net``'s forward replayed as CUDA graphs per tile shape (``val: cuda_graph``), kept across validations
        (the graphs read the weights in place, so they follow the training); ``net`` itself off CUDA, said once."""
        if self.device.type != 'cuda':
            if not getattr(self, '_said_no_cuda_graph', False):
                get_root_logger().warning(f'val:cuda_graph: validation runs on {self.device.type}, not CUDA; eager')
                self._said_no_cuda_graph = True
            return net
        forwards = self.__dict__.setdefault('_graphed_forwards', {})  # one per evaluated network (EMA or net_g)
        if id(net) not in forwards:
            forwards[id(net)] = GraphedForward(net, get_root_logger().warning)
        return forwards[id(net)]

    @torch.no_grad()
    def predict(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Derained image and its uncertainty for ``lq`` (B x 3 x H x W, any size), tiled as ``val:tile`` says."""
        net = self._eval_network()
        was_training = net.training
        net.eval()
        val_opt = self.opt.get('val') or {}

        forward = self._graphed_forward(net) if val_opt.get('cuda_graph') else net

        def final_outputs(tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs, uncertainties = forward(tile, return_all=True)
            return outputs[0], uncertainties[0]

        try:
            return tiled_forward(
                final_outputs,
                lq,
                val_opt.get('tile'),
                val_opt.get('tile_overlap', 32),
                device=self.device,
                out_device='cpu',
                tile_batch=val_opt.get('tile_batch', 1),
                blend=val_opt.get('tile_blend', 'cosine'),
            )
        finally:
            net.train(was_training)

    def test(self) -> None:
        self.output, self.uncertainty = self.predict(self.lq)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """Validate this rank's share; a rank that fails still joins the one all-reduce, with a NaN image count,
        so every rank raises at once instead of the others waiting in it until the timeout."""
        self._pending_reduce = None
        try:
            self._validate(dataloader, current_iter, tb_logger, save_img)
        except Exception:
            if self._pending_reduce is not None:
                nan = torch.full((self._pending_reduce,), float('nan'), dtype=torch.float64)
                dist.all_reduce(nan.to(self._reduce_device()))
            raise

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        self._validate(dataloader, current_iter, tb_logger, save_img)

    @staticmethod
    def _score_uncertainty(unc: UncertaintyAccumulator, data: dict, output, uncertainty, sums: torch.Tensor) -> None:
        """Add one validation image's :data:`LOGGED_UNCERTAINTY` (final map against the Y error) to ``sums``, or
        count it refused (no ground truth, a constant map, ...): sums ``[spearman, ause, spread, refused]``,
        all-reduced with the metrics."""
        name = data['lq_path']
        if 'gt' not in data:
            unc.refuse(name, f'{name}: no ground truth')
        else:
            unc.add(name, uncertainty[0].float().cpu(), output[0].float().cpu(), data['gt'], files=(name, name, None))
        row = unc.result.per_image.get(name)
        if row is None:
            sums[-1] += 1
        else:
            for i, measure in enumerate(LOGGED_UNCERTAINTY):
                sums[i] += row[measure]

    def _log_uncertainty(self, unc, sums: torch.Tensor, images: float, dataset_name: str, it: int, tb_logger) -> None:
        """Log the set's mean :data:`LOGGED_UNCERTAINTY` of the uncertainty (``val:uncertainty_metrics``); a set
        with any image refused logs no mean (a subset's mean is not the set's) but says how many and why."""
        logger = get_root_logger()
        refused = int(sums[-1].item())
        if refused:
            reason = next(iter(unc.result.errors.values()), 'on another rank')
            logger.warning(
                f'Validation {dataset_name}, uncertainty: no mean logged, {refused} of {int(images)} images could not '
                f'be scored (first: {reason})'
            )
            return
        scored = max(images, 1)
        means = {m: sums[i].item() / scored for i, m in enumerate(LOGGED_UNCERTAINTY)}
        logger.info(
            f'Validation {dataset_name}, uncertainty (final map vs |Y error|, {int(images)} images): '
            + ', '.join(f'{m} {v:.4f}' for m, v in means.items())
        )
        if tb_logger is not None:
            for m, v in means.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/uncertainty_{m}', v, it)

    def _reduce_device(self) -> torch.device:
        """Where validation sums are all-reduced: the model's device under NCCL, else the CPU (gloo)."""
        return self.device if dist.get_backend() == 'nccl' else torch.device('cpu')

    def _validate(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        rank, world = (self.opt['rank'], self.opt['world_size']) if self.opt['dist'] else (0, 1)
        indices = range(rank, len(dataset), world)  # each rank validates its share
        unc = UncertaintyAccumulator() if self.opt['val'].get('uncertainty_metrics') else None
        n_sums = len(metrics_opt) + 1
        n_unc = len(LOGGED_UNCERTAINTY) + 1 if unc is not None else 0  # + the measures and the refused count
        sums = torch.zeros(n_sums + n_unc, dtype=torch.float64)
        self._pending_reduce = sums.numel() if self.opt['dist'] else None
        pbar = tqdm(total=len(indices), unit='image') if self.opt['val'].get('pbar') and rank == 0 else None

        for idx in indices:
            data = dataset[idx]
            lq = data['lq'].unsqueeze(0)
            output, uncertainty = self.predict(lq)
            if not torch.isfinite(output).all():  # tensor2img would turn NaN into black pixels and score them
                raise NonFiniteLoss(f'validation: the network output for {data["lq_path"]} holds NaN/inf values')
            sr_img = tensor2img(output)
            if metrics_opt:
                metric_data = {'img': sr_img}
                if 'gt' in data:
                    metric_data['img2'] = tensor2img(data['gt'].unsqueeze(0))
                elif full_ref := [n for n, o in metrics_opt.items() if needs_reference(o)]:
                    raise ValueError(
                        f'val:metrics:{full_ref[0]} compares with ground truth, but {dataset_name} has none '
                        f'({data["lq_path"]}); use no-reference metrics there, e.g. niqe: {{type: pyiqa, metric: niqe}}'
                    )
                for j, opt_ in enumerate(metrics_opt.values()):
                    sums[j] += float(calculate_metric(metric_data, dict(opt_)))
            sums[n_sums - 1] += 1
            if unc is not None:
                self._score_uncertainty(unc, data, output, uncertainty, sums[n_sums:])
            if save_img:
                name = os.path.splitext(os.path.basename(data['lq_path']))[0]
                path = os.path.join(self.opt['path']['visualization'], dataset_name, f'{name}_{current_iter}.png')
                os.makedirs(os.path.dirname(path), exist_ok=True)
                imageio.write(path, np.concatenate([sr_img, uncertainty_to_color(uncertainty[0])], axis=1))
            if pbar is not None:
                pbar.update(1)
        if pbar is not None:
            pbar.close()

        if self.opt['dist']:
            self._pending_reduce = None
            sums = sums.to(self._reduce_device())
            dist.all_reduce(sums)
            sums = sums.cpu()
            if not torch.isfinite(sums[n_sums - 1]):
                raise RuntimeError(f'validation of {dataset_name} failed on another rank; see its error')
        if unc is not None and rank == 0:
            self._log_uncertainty(unc, sums[n_sums:], sums[n_sums - 1].item(), dataset_name, current_iter, tb_logger)
        if metrics_opt:
            self._initialize_best_metric_results(dataset_name)
            count = max(sums[n_sums - 1].item(), 1)
            self.metric_results = {name: sums[j].item() / count for j, name in enumerate(metrics_opt)}
            for name, value in self.metric_results.items():
                self._update_best_metric_result(dataset_name, name, value, current_iter)
            if rank == 0:
                self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
