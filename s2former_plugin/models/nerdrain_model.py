"""``NeRDRainModel``: BasicSR's SRModel trained on NeRD-Rain's multi-scale outputs, as the authors' ``train.py``.

Training calls ``net_g(lq, return_all=True)`` and gives the seven outputs with the ground truth to ``pixel_opt``
(``NeRDRainLoss``, the authors' total loss; its four sums are logged as ``l_char``, ``l_fft``, ``l_edge``,
``l_inr``, as the authors log them). A ``pixel_opt`` that is not a ``NeRDRainLoss`` (``L1Loss``, ...) and a
``perceptual_opt`` see the final image only. Everything else is SRModel's: validation, saving, EMA, schedulers;
validation and testing run ``net_g(lq)``, the final image of any size by the authors' window procedure.

Distributed training needs ``find_unused_parameters: true``: the authors' network has one layer its forward never
uses (``reduce_chan_level1_max3``, see ``archs/nerdrain_arch.py``).
"""

from __future__ import annotations

from collections import OrderedDict

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

__all__ = ['NeRDRainModel']


@MODEL_REGISTRY.register()
class NeRDRainModel(SRModel):
    """SRModel whose training step sees all of NeRD-Rain's outputs (``net_g(lq, return_all=True)``)."""

    def optimize_parameters(self, current_iter: int) -> None:
        # Imported here: importing the losses module imports basicsr, whose plugin hook imports this module.
        from s2former_plugin.losses.nerdrain_loss import NeRDRainLoss

        self.optimizer_g.zero_grad()
        outputs = self.net_g(self.lq, return_all=True)
        self.output = outputs[0]

        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            if isinstance(self.cri_pix, NeRDRainLoss):
                terms = self.cri_pix.terms(outputs, self.gt)
                loss_dict.update(terms)
                l_pix = terms['l_pix']
            else:
                l_pix = self.cri_pix(self.output, self.gt)
                loss_dict['l_pix'] = l_pix
            l_total += l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict['l_style'] = l_style

        l_total.backward()
        self.optimizer_g.step()

        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
