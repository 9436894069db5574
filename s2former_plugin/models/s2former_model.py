"""``S2FormerModel``: BasicSR's SRModel trained with the UDR-S2Former losses on all five outputs.

YAML (``train:``):
  * ``psnr_opt`` / ``perceptual_opt`` / ``udl_opt``: the three loss terms (total ``psnr + 0.2 * perceptual + udl``
    in the paper); at least one is required;
  * ``optim_g`` (Adam, AdamW, ... see ``compat``), ``scheduler`` (``CyclicLR`` in the paper), ``ema_decay``;
  * ``max_grad_norm``: optional gradient clipping;
  * ``amp``: ``bf16`` / ``fp16`` / ``~`` (default): mixed precision, ``torch.autocast`` around the network forward,
    losses in float32, a ``GradScaler`` for ``fp16`` (its state is saved with the training state);
  * ``accumulate``: ``N`` (default 1) micro-batches of ``batch_size_per_gpu`` per optimizer step; basicsr's
    iterations, schedulers, EMA, logging and checkpoints then count optimizer steps (``compat`` makes the loader
    read ``N x batch_size_per_gpu`` per iteration; this model splits it).

Validation (``val:``): :class:`.s2former_validation.S2FormerValidation`.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections import OrderedDict

import torch
import torch.distributed as dist
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from s2former_plugin import acceleration, compat
from s2former_plugin.checkpoint import load_state_dict_any
from s2former_plugin.errors import first_line
from s2former_plugin.metrics.pyiqa_metric import check_val_metrics

from .s2former_options import (
    AMP_DTYPES,
    LOSS_KEYS,
    LOSS_READS,
    LOSSES,
    NonFiniteLoss,
    OptionError,
    check_training_options,
    check_val_options,
)
from .s2former_validation import S2FormerValidation


@MODEL_REGISTRY.register()
class S2FormerModel(S2FormerValidation, SRModel):
    """Multi-output training (final image, four decoder scales, five uncertainty maps) of a UDR-S2Former net."""

    graphed_step: acceleration.GraphedStep | None = None  # train:cuda_graph
    autocast_cache: bool = True

    #: Called by ``compat`` right after basicsr parses the options, before any data is read.
    check_options = staticmethod(check_training_options)

    def __init__(self, opt: dict):
        check_training_options(opt)
        check_val_options(opt.get('val') or {})  # fail at start-up, not at the first validation hours later
        check_val_metrics((opt.get('val') or {}).get('metrics'))  # better: lower for NIQE, PIQE, LPIPS...
        acceleration.set_tf32((opt.get('train') or {}).get('tf32') if opt.get('is_train') else None)
        super().__init__(opt)
        compat.set_deterministic(opt)  # after basicsr.train's cudnn.benchmark = True; before the first step

    #: What each loss reads of the network's outputs: (the four side outputs, the uncertainty maps).
    LOSS_READS = LOSS_READS

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """Freeze the heads that no configured loss reaches, then move (and wrap for DDP/DataParallel).

        Such parameters would get no gradient anyway (Adam skips them, so single-process training is unchanged),
        but DDP without ``find_unused_parameters`` stops at the second iteration waiting for theirs, and finding
        them on every iteration costs a graph traversal. Frozen, they keep their initial or loaded values.
        """
        train_opt = (self.opt.get('train') or {}) if self.is_train else {}
        used = [self.LOSS_READS[spec.key] for spec in LOSSES if train_opt.get(spec.key)]
        if used and hasattr(net, 'heads_without_gradient'):
            names = net.heads_without_gradient(any(u[0] for u in used), any(u[1] for u in used))
            for name in names:
                net.get_submodule(name).requires_grad_(False)
            if names:
                get_root_logger().info(f'No loss reaches {", ".join(names)}: frozen (kept as initialised or loaded)')
        # Compiled inside DDP (DDP wraps the compiled module); get_bare_model unwraps both, so state dicts, EMA and
        # validation (whole images of any size) use the eager module, which shares the parameters.
        compiled = acceleration.check_compile_option(train_opt.get('compile'))
        if compiled is not None:
            get_root_logger().info(f'train:compile: {compiled}')
        return super().model_to_device(acceleration.compile_network(net.to(self.device), compiled))

    def get_bare_model(self, net: torch.nn.Module) -> torch.nn.Module:
        """The network inside DDP/DataParallel and ``torch.compile`` wrappers."""
        return acceleration.unwrap_compiled(super().get_bare_model(net))

    def feed_data(self, data: dict) -> None:
        """The batch on the device; from pinned memory (``pin_memory: true``) the copies overlap the GPU's work."""
        self.lq = data['lq'].to(self.device, non_blocking=True)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device, non_blocking=True)

    def setup_optimizers(self) -> None:
        """basicsr's, without its one warning line per frozen parameter (:meth:`model_to_device` logs them once)."""
        train_opt = self.opt['train']
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        optim_type = train_opt['optim_g'].pop('type')
        kwargs = train_opt['optim_g']  # fused / foreach / capturable reach torch as they are
        if self.graphed_step is not None and isinstance(getattr(torch.optim, optim_type, None), type):
            kwargs = acceleration.with_capturable(getattr(torch.optim, optim_type), kwargs)
        self.optimizer_g = self.get_optimizer(optim_type, params, **kwargs)
        self.optimizers.append(self.optimizer_g)

    def init_training_settings(self) -> None:
        self.net_g.train()
        train_opt = self.opt['train']  # its keys and types were checked in __init__ (check_training_options)
        if not any(train_opt.get(k) for k in LOSS_KEYS):
            raise ValueError(f'S2FormerModel: set at least one of train:{", train:".join(LOSS_KEYS)}')

        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = self._build_ema_network()

        for spec in LOSSES:  # self.cri_psnr, ...: None where not configured
            setattr(
                self, spec.attr, build_loss(train_opt[spec.key]).to(self.device) if train_opt.get(spec.key) else None
            )
        self.max_grad_norm = train_opt.get('max_grad_norm')
        self.amp_dtype = AMP_DTYPES.get(train_opt.get('amp'))
        self.accumulate = train_opt.get('accumulate') or 1
        # fp16 gradients underflow without loss scaling; bf16 has float32's exponent range and needs none.
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.graphed_step = self._graphed_step(train_opt)
        self.setup_optimizers()
        self.setup_schedulers()
        if self.graphed_step is not None:
            self.graphed_step.optimizer = self.optimizer_g

    def _graphed_step(self, train_opt: dict) -> acceleration.GraphedStep | None:
        """The CUDA-graph step of ``train:cuda_graph``, or None (eager steps; said once when asked for)."""
        if not train_opt.get('cuda_graph'):
            return None
        compiled = acceleration.check_compile_option(train_opt.get('compile'))
        reason = acceleration.graph_fallback_reason(
            self.device,
            self.opt['dist'],
            self.grad_scaler.is_enabled(),
            compiled is not None and compiled.uses_cudagraphs,
        )
        if reason is not None:
            get_root_logger().warning(f'train:cuda_graph: {reason}; eager steps')
            return None
        self.autocast_cache = False  # autocast's weight cache would hold tensors of the capture's pool
        return acceleration.GraphedStep(self._forward_backward, self._update, None, get_root_logger().warning)

    def _build_ema_network(self) -> torch.nn.Module:
        from basicsr.archs import build_network

        net = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(net, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            net.load_state_dict(self.get_bare_model(self.net_g).state_dict())
        return net.eval()

    def load_network(self, net, load_path: str, strict: bool = True, param_key: str | None = 'params') -> None:
        """Load a BasicSR checkpoint (``params``/``params_ema``), a plain/official state dict (``weights_only``) or a
        ``.safetensors`` file; weights that record another configuration than ``network_g``'s are refused (the
        bottleneck head count leaves no trace in the shapes), in one line."""
        net = self.get_bare_model(net)
        try:
            state, used_key = load_state_dict_any(load_path, param_key, expect_config=getattr(net, 'config', None))
        except ValueError as exc:
            raise OptionError(first_line(exc)) from None
        get_root_logger().info(f'Loading {type(net).__name__} from {load_path} [{used_key}]')
        self._print_different_keys_loading(net, state, strict)
        net.load_state_dict(state, strict=strict)

    # ------------------------------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter: int) -> None:
        """One optimizer step over the fed batch, in ``train:accumulate`` equal micro-batches.

        Each micro-batch's loss is divided by their number, so the summed gradients equal those of the whole batch
        (every loss term is a mean over images). A non-finite loss stops before the update; with ``amp: fp16``,
        inf/NaN *gradients* of a finite loss are the GradScaler's business (the step is skipped, the scale lowered).
        """
        n = self.accumulate
        if self.lq.shape[0] % n:
            raise ValueError(f'train:accumulate: {n} does not divide the batch of {self.lq.shape[0]} images')
        graphed = self.graphed_step.forward(self.lq, self.gt) if self.graphed_step is not None else None
        if graphed is None:
            self.optimizer_g.zero_grad(set_to_none=True)
            totals, self.output = self._forward_backward(self.lq, self.gt)
        else:
            totals, self.output = OrderedDict((k, v.clone()) for k, v in graphed[0].items()), graphed[1].clone()
        self._stop_if_not_finite(totals, current_iter)
        if graphed is None:
            self._update()
        else:
            self.graphed_step.step()
        self.log_dict = self.reduce_loss_dict(totals)

    def _forward_backward(self, lq_all: torch.Tensor, gt_all: torch.Tensor) -> tuple[OrderedDict, torch.Tensor]:
        """The losses (means over the micro-batches) and final output of the batch; gradients accumulated."""
        n = self.accumulate
        totals, finals = OrderedDict(), []
        for i, (lq, gt) in enumerate(zip(lq_all.tensor_split(n), gt_all.tensor_split(n), strict=True)):
            # DDP all-reduces the gradients once, in the last micro-batch's backward.
            sync = self.net_g.no_sync() if i < n - 1 and hasattr(self.net_g, 'no_sync') else contextlib.nullcontext()
            with sync:
                losses, final = self._losses(lq, gt)
                self.grad_scaler.scale(losses['l_total'] / n).backward()
            finals.append(final.detach())
            for key, value in losses.items():
                totals[key] = totals.get(key, 0) + value.detach() / n
        return totals, torch.cat(finals)

    def _update(self) -> None:
        """Clipping, the optimizer step (through the GradScaler) and EMA, after the gradients."""
        if self.max_grad_norm:
            self.grad_scaler.unscale_(self.optimizer_g)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.max_grad_norm)
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _losses(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[OrderedDict, torch.Tensor]:
        """The configured losses of one (micro-)batch and its final output; the forward under ``train:amp``."""
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=amp, cache_enabled=self.autocast_cache):
            outputs, uncertainties = self.net_g(lq, return_all=True)
        if self.amp_dtype is not None:  # the losses (logs, exp, VGG features) in float32
            outputs = [o.float() for o in outputs]
            uncertainties = [u.float() for u in uncertainties]
        losses = OrderedDict()
        for spec in LOSSES:
            loss = getattr(self, spec.attr)
            if loss is not None:
                losses[spec.log] = spec.call(loss, outputs, uncertainties, gt)
        losses['l_total'] = sum(losses.values())
        return losses, outputs[0]

    def extra_training_state(self) -> dict:
        """Saved with the optimizers and schedulers (``compat``): the fp16 GradScaler's scale and growth tracker."""
        return {'grad_scaler': self.grad_scaler.state_dict()} if self.grad_scaler.is_enabled() else {}

    def resume_training(self, resume_state: dict) -> None:
        """basicsr's (optimizers, schedulers), then the GradScaler of an ``amp: fp16`` run."""
        super().resume_training(resume_state)
        if not self.grad_scaler.is_enabled():
            return
        if resume_state.get('grad_scaler') is None:
            get_root_logger().warning(
                f'train:amp: fp16: the training state holds no GradScaler state (saved without fp16); '
                f'loss scaling starts afresh at {self.grad_scaler.get_scale():g}'
            )
        else:
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])

    def _stop_if_not_finite(self, losses: OrderedDict, current_iter: int) -> None:
        """Raise before the update if any rank's loss is NaN/inf; checkpoints already saved are untouched."""
        finite = torch.tensor([float(all(torch.isfinite(v).all() for v in losses.values()))], device=self.device)
        if self.opt['dist']:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            values = ', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())
            models = self.opt['path'].get('models', 'experiments/<name>/models')
            saved = glob.glob(os.path.join(models, 'net_g_[0-9]*.pth'))
            last = max(saved, key=lambda p: int(os.path.basename(p)[6:-4])) if saved else f'{models}/net_g_<iter>.pth'
            # A resumed run restores the optimizer's and scheduler's learning rates, so a lowered
            # train:optim_g:lr would be ignored there; train:max_grad_norm is read from the YAML and does apply.
            raise NonFiniteLoss(
                f'Non-finite loss at iteration {current_iter} ({values}); stopped before the update. Either set '
                'train:max_grad_norm (e.g. 0.5) and resume with --auto_resume, or, to lower the learning rate '
                '(a resumed run keeps the saved one), start a new run (new name) with a lower train:optim_g:lr '
                f"(and the scheduler's base_lr/max_lr) and path:pretrain_network_g: {last}"
            )
