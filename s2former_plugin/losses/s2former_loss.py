"""The UDR-S2Former training losses, equal to the official training code (``train.py`` of the authors' release).

Total loss (paper and official code): ``L = L_psnr + 0.2 * L_perceptual + L_udl``; the weights come from YAML.
All three take the network's multi-scale lists in the official order ``[final, full, 1/2, 1/4, 1/8]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

__all__ = ['target_pyramid', 'UncertaintyDrivenLoss', 'MultiScalePSNRLoss', 'S2FormerPerceptualLoss']

VGG19_FILE = 'vgg19-dcbb9e9d.pth'  # torchvision's file name for the ImageNet VGG19 weights
VGG19_URL = f'https://download.pytorch.org/models/{VGG19_FILE}'


def target_pyramid(gt: Tensor, outputs: Sequence[Tensor]) -> list[Tensor]:
    """The ground truth bicubically resized to each output's size (no-op where the sizes already match).

    For the official power-of-two crops this equals the official ``interpolate(gt, scale_factor=0.5 ** k)``.
    """
    return [
        gt if o.shape[-2:] == gt.shape[-2:] else F.interpolate(gt, size=o.shape[-2:], mode='bicubic') for o in outputs
    ]


def _check_lists(outputs: Sequence[Tensor], *others: Sequence[Tensor]) -> None:
    for other in others:
        if len(other) != len(outputs):
            raise ValueError(f'expected lists of equal length, got {len(outputs)} and {len(other)}')


@LOSS_REGISTRY.register()
class UncertaintyDrivenLoss(nn.Module):
    """Uncertainty-driven loss L_UDL (Ning et al., NeurIPS 2021), averaged over the scales.

    Per scale ``s``: ``mean(|(y_s - gt_s) * exp(-u_s)|) + 2 * mean(u_s)``: errors count less where the predicted
    uncertainty ``u_s`` is high, and the second term keeps ``u_s`` from growing without bound.

    Args:
        loss_weight: Multiplier of the loss.
        uncertainty_weight: Weight of the ``mean(u)`` regulariser (2 in the official code).
    """

    def __init__(self, loss_weight: float = 1.0, uncertainty_weight: float = 2.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.uncertainty_weight = uncertainty_weight

    def forward(self, outputs: Sequence[Tensor], uncertainties: Sequence[Tensor], gt: Tensor) -> Tensor:
        _check_lists(outputs, uncertainties)
        total = 0.0
        for y, u, t in zip(outputs, uncertainties, target_pyramid(gt, outputs)):
            s = torch.exp(-u)
            total = total + F.l1_loss(y * s, t * s) + self.uncertainty_weight * u.mean()
        return self.loss_weight * total / len(outputs)


def psnr_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``10/ln(10) * log(mse + 1e-8)`` per image, averaged over the batch (i.e. minus the PSNR, in dB)."""
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return (10.0 / math.log(10.0)) * torch.log(mse + 1e-8).mean()


@LOSS_REGISTRY.register()
class MultiScalePSNRLoss(nn.Module):
    """PSNR loss of the final output plus ``side_weight`` x the mean PSNR loss of the other scales.

    Also accepts a single output tensor (then it is the plain PSNR loss), so single-output archs trained by
    basicsr's ``SRModel`` can use it as ``pixel_opt`` for like-for-like comparisons.

    Args:
        loss_weight: Multiplier of the loss.
        side_weight: Weight of the side outputs' mean (0.5 in the official code).
    """

    def __init__(self, loss_weight: float = 1.0, side_weight: float = 0.5):
        super().__init__()
        self.loss_weight = loss_weight
        self.side_weight = side_weight

    def forward(self, outputs: Sequence[Tensor] | Tensor, gt: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        targets = target_pyramid(gt, outputs)
        loss = psnr_loss(outputs[0], targets[0])
        if len(outputs) > 1:
            side = sum(psnr_loss(y, t) for y, t in zip(outputs[1:], targets[1:])) / (len(outputs) - 1)
            loss = loss + self.side_weight * side
        return self.loss_weight * loss


def default_vgg19_path() -> str:
    """Where torchvision would cache the VGG19 weights (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``)."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', VGG19_FILE)


@LOSS_REGISTRY.register()
class S2FormerPerceptualLoss(nn.Module):
    """The official perceptual term: L1 between VGG19 conv1_1 and conv1_2 features (before ReLU), 0.5 / 0.5.

    As in the official code the inputs are not normalised with ImageNet statistics. Only the first two VGG19
    convolutions are needed, so only their weights are loaded (from a full torchvision VGG19 state dict).

    Args:
        loss_weight: Multiplier of the loss (0.2 in the paper).
        vgg_weights: Path to torchvision's ImageNet VGG19 state dict (``vgg19-dcbb9e9d.pth``). Default: the torch
            hub cache. Nothing is downloaded: a missing file stops model building with a message saying where to
            put it.
        layer_weights: Weights of the conv1_1 and conv1_2 terms.
    """

    def __init__(
        self, loss_weight: float = 0.2, vgg_weights: str | None = None, layer_weights: Sequence[float] = (0.5, 0.5)
    ):
        super().__init__()
        self.loss_weight = loss_weight
        self.layer_weights = tuple(layer_weights)
        self.conv1_1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv1_2 = nn.Conv2d(64, 64, 3, padding=1)
        self._load_vgg(vgg_weights or default_vgg19_path())
        self.requires_grad_(False)
        self.eval()

    def _load_vgg(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'VGG19 weights for the perceptual loss not found at {path}: download {VGG19_URL} there, '
                'or set train:perceptual_opt:vgg_weights to a local copy'
            )
        from s2former_plugin.checkpoint import TorchLoadError, torch_load

        try:
            state = torch_load(path)
        except TorchLoadError as exc:
            raise ValueError(f'{path} is not a torchvision VGG19 state dict (unreadable: {exc.first_line()})') from None
        try:
            self.conv1_1.load_state_dict({'weight': state['features.0.weight'], 'bias': state['features.0.bias']})
            self.conv1_2.load_state_dict({'weight': state['features.2.weight'], 'bias': state['features.2.bias']})
        except (KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f'{path} is not a torchvision VGG19 state dict ({type(err).__name__}: {err})') from None

    def train(self, mode: bool = True) -> S2FormerPerceptualLoss:
        return super().train(False)  # a fixed feature extractor

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        f1_p, f1_t = self.conv1_1(pred), self.conv1_1(target)
        f2_p, f2_t = self.conv1_2(F.relu(f1_p)), self.conv1_2(F.relu(f1_t))
        loss = self.layer_weights[0] * F.l1_loss(f1_p, f1_t) + self.layer_weights[1] * F.l1_loss(f2_p, f2_t)
        return self.loss_weight * loss
