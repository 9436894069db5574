"""Training at the GPU's speed: ``torch.compile``, TF32, and CUDA-graph capture of the whole training step.

On a GPU the paper network at training crop sizes is launch-bound (about a thousand small kernels per forward, the
host cannot issue them as fast as the GPU runs them), so what pays is fewer launches: inductor's fused kernels
(``train:compile``) or one replay of a captured graph per step (``train:cuda_graph``, or the compile mode
``reduce-overhead``). The options (``train:``)::

    compile: {mode: default, dynamic: false}   # or true (= mode default), or false / ~ (eager, the default)
    cuda_graph: true                           # capture forward, losses, backward, optimizer step and EMA
    tf32: true                                 # TF32 matmuls and convolutions (float32 storage, 10-bit mantissa)

The model calls :func:`compile_network` once (before DDP wraps the net; the EMA copy and validation use the eager
module, so whole images of any size validate without recompiling) and, with ``cuda_graph``, runs each step through
a :class:`GraphedStep`, which falls back to eager steps with one log line when the input shape changes or the
capture fails. Nothing here imports the models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import first_line
from .options import check_keys, check_switch

__all__ = [
    'COMPILE_MODES',
    'CompileOption',
    'GraphedStep',
    'LearningRates',
    'StaticBatch',
    'check_compile_option',
    'compile_network',
    'graph_fallback_reason',
    'set_tf32',
    'unwrap_compiled',
    'with_capturable',
]

#: ``torch.compile`` modes as torch names them (``torch._inductor.list_mode_options()``, plus ``default``).
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs', 'lite')
_COMPILE_KEYS = ('mode', 'dynamic', 'fullgraph', 'backend')


@dataclass(frozen=True)
class CompileOption:
    """A checked ``train:compile`` value: what :func:`torch.compile` gets."""

    mode: str = 'default'
    dynamic: bool | None = False  # the training crop is fixed: static shapes, no symbolic-shape guards
    fullgraph: bool = True  # the network has no graph break (tests/test_acceleration.py): keep it so
    backend: str = 'inductor'

    @property
    def uses_cudagraphs(self) -> bool:
        """Whether this mode captures CUDA graphs itself (``reduce-overhead``)."""
        return self.mode == 'reduce-overhead'


def check_compile_option(value, where: str = 'train:compile') -> CompileOption | None:
    """``train:compile`` as a :class:`CompileOption` (``None``: eager).

    Accepts ``~``/``false`` (eager), ``true`` (mode ``default``) or a mapping of ``mode`` (one of
    :data:`COMPILE_MODES`), ``dynamic`` (true/false/~), ``fullgraph`` (true/false) and ``backend`` (a name).

    Raises:
        ValueError: One line naming the key and what it accepts (an
            :class:`~s2former_plugin.errors.OptionError` from the checks of :mod:`.options`).
    """
    if value is None or value is False:
        return None
    if value is True:
        return CompileOption()
    if not isinstance(value, dict):
        raise ValueError(f'{where}: expected true, false or a mapping with mode/dynamic/fullgraph, got {value!r}')
    check_keys(value, _COMPILE_KEYS, where)
    mode = value.get('mode') or 'default'
    if mode not in COMPILE_MODES:
        raise ValueError(f'{where}:mode: unknown mode {mode!r}; torch names {", ".join(COMPILE_MODES)}')
    dynamic = value.get('dynamic', False)
    check_switch(dynamic, f'{where}:dynamic', nullable=True)  # ~: torch decides
    if value.get('fullgraph') is not None:
        check_switch(value['fullgraph'], f'{where}:fullgraph')
    backend = value.get('backend', 'inductor')
    if not isinstance(backend, str) or not backend:
        raise ValueError(f'{where}:backend: expected a backend name (inductor, eager, ...), got {backend!r}')
    return CompileOption(mode, dynamic, value.get('fullgraph', True), backend)


def compile_network(net: nn.Module, option: CompileOption | None) -> nn.Module:
    """The network compiled as ``option`` says (``None``: ``net`` itself).

    The returned module shares ``net``'s parameters; :func:`unwrap_compiled` gives ``net`` back (for state dicts,
    EMA and validation, which stay eager).
    """
    if option is None:
        return net
    mode = None if option.mode == 'default' else option.mode
    return torch.compile(net, mode=mode, dynamic=option.dynamic, fullgraph=option.fullgraph, backend=option.backend)


def unwrap_compiled(net: nn.Module) -> nn.Module:
    """The module a :func:`torch.compile` wrapper holds (``net`` itself if not compiled)."""
    return getattr(net, '_orig_mod', net)


def set_tf32(enabled: bool | None) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions (``None``: leave torch's settings as they are)."""
    if enabled is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision('high' if enabled else 'highest')


def with_capturable(optim_cls: type, kwargs: dict) -> dict:
    """``kwargs`` plus ``capturable=True`` where the optimizer has the switch (Adam, AdamW, ...): its step count
    then lives on the device, so a captured step advances it at every replay. An explicit value is kept."""
    if 'capturable' in inspect.signature(optim_cls.__init__).parameters:
        return {'capturable': True, **kwargs}
    return dict(kwargs)


def graph_fallback_reason(
    device: torch.device, distributed: bool, grad_scaler_on: bool, compiled_graphs: bool
) -> str | None:
    """Why ``train:cuda_graph`` cannot capture this run's step (``None``: it can)."""
    if device.type != 'cuda':
        return f'the step runs on {device.type}, not CUDA'
    if distributed:
        return "DDP's gradient all-reduce runs through host-side hooks that a captured graph would skip"
    if grad_scaler_on:
        return 'the fp16 GradScaler reads its inf check on the host at every step'
    if compiled_graphs:
        return 'train:compile mode reduce-overhead captures CUDA graphs already'
    return None


class StaticBatch:
    """The fixed input buffers a captured graph reads: each step's batch is copied into them."""

    def __init__(self, *tensors: Tensor):
        self.tensors = tuple(t.detach().clone() for t in tensors)

    def matches(self, *tensors: Tensor) -> bool:
        """Whether ``tensors`` have the captured shapes, dtypes and devices (else the graph would be wrong)."""
        return len(tensors) == len(self.tensors) and all(
            (t.shape, t.dtype, t.device) == (s.shape, s.dtype, s.device) for t, s in zip(tensors, self.tensors)
        )

    def describe(self, *tensors: Tensor) -> str:
        return ', '.join('x'.join(map(str, t.shape)) for t in tensors)

    def copy_(self, *tensors: Tensor) -> None:
        for static, t in zip(self.tensors, tensors, strict=True):
            static.copy_(t, non_blocking=True)


class LearningRates:
    """The optimizer's learning rates as device tensors a captured ``step()`` reads at every replay.

    A float learning rate would be baked into the graph at capture. torch's schedulers update tensor rates in place
    (``fill_``); basicsr's warm-up and a resumed optimizer state assign new values, which :meth:`sync` copies into
    the captured tensors before each replay.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.tensors = []
        for group in optimizer.param_groups:
            lr = group['lr']
            value = lr if isinstance(lr, Tensor) and lr.device == device else torch.tensor(float(lr), device=device)
            group['lr'] = value
            self.tensors.append(value)

    def sync(self) -> None:
        for group, captured in zip(self.optimizer.param_groups, self.tensors, strict=True):
            if group['lr'] is not captured:
                captured.fill_(float(group['lr']))
                group['lr'] = captured


class GraphedStep:
    """One training step as two captured CUDA graphs, replayed for each batch of the captured shape.

    The first graph runs the forward, the losses and the backward (``forward_backward``, gradients of every
    micro-batch accumulated); between the two replays the host reads the losses once (the non-finite check that
    stops before the update, as eagerly); the second graph runs ``update`` (clipping, optimizer step, EMA).
    ``warmup`` eager steps on a side stream come first (lazy initialisation: cuBLAS workspaces, optimizer state).

    Args:
        forward_backward: ``(lq, gt) -> (losses, output)``; must compute the gradients (``backward``).
        update: The parameter update after the gradients (captured as is).
        optimizer: Its learning rates become device tensors (:class:`LearningRates`).
        log: Where the one fallback line goes.
        warmup: Eager steps before the capture.
    """

    def __init__(
        self,
        forward_backward: Callable[[Tensor, Tensor], tuple[dict, Tensor]],
        update: Callable[[], None],
        optimizer: torch.optim.Optimizer,
        log: Callable[[str], None],
        warmup: int = 3,
    ):
        self.forward_backward, self.update, self.optimizer, self.log = forward_backward, update, optimizer, log
        self.warmup = warmup
        self.steps = 0
        self.disabled = False
        self.batch: StaticBatch | None = None
        self.graphs: tuple | None = None

    def disable(self, why: str) -> None:
        """Eager steps from now on, said once."""
        if not self.disabled:
            self.log(f'train:cuda_graph: {why}; eager steps from now on')
        self.disabled = True
        self.graphs = None

    def forward(self, lq: Tensor, gt: Tensor) -> tuple[dict, Tensor] | None:
        """Losses and output of the captured step on ``(lq, gt)`` (gradients computed), or ``None``: run eagerly.

        Call :meth:`step` after it to apply the update.
        """
        if self.disabled:
            return None
        self.steps += 1
        if self.graphs is None and self.steps <= self.warmup:
            return self._eager_on_side_stream(lq, gt)
        if self.graphs is None:
            try:
                self._capture(lq, gt)
            except Exception as exc:  # noqa: BLE001 (any capture failure: the eager step still works)
                self.optimizer.zero_grad(set_to_none=True)
                self.disable(f'capture failed ({type(exc).__name__}: {first_line(exc, 200)})')
                return None
        if not self.batch.matches(lq, gt):
            self.disable(
                f'the batch changed from {self.batch.describe(*self.batch.tensors)} to {self.batch.describe(lq, gt)}'
            )
            return None
        self.batch.copy_(lq, gt)
        self.graphs[0].replay()
        return self.outputs

    def step(self) -> None:
        """Apply the update of the step :meth:`forward` returned (eagerly during warm-up)."""
        if self.graphs is None:
            self.update()
            return
        self.rates.sync()
        self.graphs[1].replay()

    def _eager_on_side_stream(self, lq: Tensor, gt: Tensor) -> tuple[dict, Tensor]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.optimizer.zero_grad(set_to_none=True)
            result = self.forward_backward(lq, gt)
        torch.cuda.current_stream().wait_stream(stream)
        return result

    def _capture(self, lq: Tensor, gt: Tensor) -> None:
        self.rates = LearningRates(self.optimizer, lq.device)
        self.batch = StaticBatch(lq, gt)
        self.optimizer.zero_grad(set_to_none=True)  # gradients allocated inside the graph's pool, reused by replays
        torch.cuda.synchronize()
        first, second = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(first):
            self.outputs = self.forward_backward(*self.batch.tensors)
        with torch.cuda.graph(second, pool=first.pool()):
            self.update()
        self.graphs = (first, second)
