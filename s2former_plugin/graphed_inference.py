"""Inference forwards replayed as CUDA graphs, one per input shape (``infer --cuda-graph``, ``val: cuda_graph``).

On a GPU a forward of the paper network below about 512² is launch-bound: the host issues about a thousand small
kernels and the GPU waits for them. A captured graph launches them all at once. Tiles of one size are one static
shape, so a tiled image, or a validation set of a few sizes, replays a handful of graphs over and over.

:class:`GraphedForward` wraps ``net``: a shape is captured the second time it is seen (a shape seen once, e.g. one
photo of its own size, runs eagerly: a capture costs about two forwards and the graph's memory), at most
``max_graphs`` shapes are kept (each holds its own activation memory; later new shapes run eagerly), and the
outputs are cloned out of the graph's buffers, so a result stays valid after the next replay. The weights are read
where they live, so a graph replays the current weights of a network trained or loaded in place since the capture.
Anything else runs eagerly: gradients enabled, a CPU input, a network in training mode, or, after one log line,
every call once a capture has failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import first_line

__all__ = ['GraphedForward', 'capture_cuda_graph']

#: ``capture(fn, x) -> replay``: records ``fn`` on a static copy of ``x``; ``replay(x)`` runs it on new values and
#: returns outputs that the next replay overwrites.
Capture = Callable[[Callable[[Tensor], Any], Tensor], Callable[[Tensor], Any]]


def _clone(tree: Any) -> Any:
    """``tree`` (a tensor, or lists/tuples of them) with every tensor copied out of the graph's memory."""
    if isinstance(tree, Tensor):
        return tree.clone()
    if isinstance(tree, list | tuple):
        return type(tree)(_clone(t) for t in tree)
    return tree


def capture_cuda_graph(fn: Callable[[Tensor], Any], x: Tensor) -> Callable[[Tensor], Any]:
    """Capture ``fn(x)`` as a CUDA graph (after one warm-up call on a side stream) and return its replay."""
    static = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(static)  # lazy initialisation (cuDNN plans, workspaces) outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)

    def replay(new: Tensor) -> Any:
        static.copy_(new)
        graph.replay()
        return out  # the graph's own buffers, overwritten by the next replay

    return replay


class GraphedForward:
    """``net(x, **kwargs)`` for inference, replayed as one CUDA graph per input shape (see the module docstring).

    Args:
        net: The network; called as ``net(x, **kwargs)``.
        log: Where the one line of a failed capture goes.
        max_graphs: Shapes kept as graphs; later new shapes run eagerly.
        capture: How a shape is captured (default: :func:`capture_cuda_graph`).
        devices: The device types whose inputs are captured.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        log: Callable[[str], None],
        max_graphs: int = 8,
        capture: Capture | None = None,
        devices: tuple[str, ...] = ('cuda',),
    ):
        self.net, self.log, self.max_graphs, self.devices = net, log, max_graphs, devices
        self.capture = capture or capture_cuda_graph
        self.graphs: dict[tuple, Callable[[Tensor], Any]] = {}
        self.seen: set[tuple] = set()
        self.failed = False

    def _key(self, x: Tensor, kwargs: dict) -> tuple:
        amp = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if amp else None
        return tuple(x.shape), x.dtype, x.device, amp, dtype, tuple(sorted(kwargs.items()))

    def _eligible(self, x: Tensor) -> bool:
        return (
            not self.failed
            and x.device.type in self.devices
            and not torch.is_grad_enabled()
            and not getattr(self.net, 'training', False)
        )

    def __call__(self, x: Tensor, **kwargs: Any) -> Any:
        if not self._eligible(x):
            return self.net(x, **kwargs)
        key = self._key(x, kwargs)
        replay = self.graphs.get(key)
        if replay is not None:
            return _clone(replay(x))
        if key not in self.seen or len(self.graphs) >= self.max_graphs:
            self.seen.add(key)
            return self.net(x, **kwargs)
        amp, dtype = key[3], key[4]

        def forward(t: Tensor) -> Any:
            # autocast's weight cache would hand the graph casts made outside it (stale after an update)
            with torch.autocast(t.device.type, dtype=dtype or torch.bfloat16, enabled=amp, cache_enabled=False):
                return self.net(t, **kwargs)

        try:
            replay = self.capture(forward, x)
        except Exception as exc:  # noqa: BLE001 (any capture failure: the eager forward still works)
            self.failed = True
            self.graphs.clear()
            why = f'{type(exc).__name__}: {first_line(exc, 200)}'
            self.log(f'cuda graph: capture failed ({why}); eager forwards from now on')
            return self.net(x, **kwargs)
        self.graphs[key] = replay
        return _clone(replay(x))
