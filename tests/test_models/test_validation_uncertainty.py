"""``val: uncertainty_metrics``: validation logs the set's Spearman and AUSE of the final uncertainty map, or says
loudly why it logs no mean."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from helpers import basicsr_log, parsed_options, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

from s2former_plugin.errors import OptionError
from s2former_plugin.metrics.uncertainty_eval import UncertaintyAccumulator
from s2former_plugin.models.s2former_options import check_training_options, check_val_options


class _Board:
    def __init__(self):
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value


def _model_and_loader(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    write_paired_folder(tmp_path / 'data', n=3, size=(24, 24))
    write_paired_folder(tmp_path / 'val', n=3, size=(29, 35), seed=1)
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', None), tmp_path)
    opt['val']['uncertainty_metrics'] = True
    val = dict(
        opt['datasets']['val'], dataroot_gt=str(tmp_path / 'val' / 'gt'), dataroot_lq=str(tmp_path / 'val' / 'lq')
    )
    return build_model(opt), DataLoader(build_dataset(val))


def test_validation_logs_the_mean_spearman_ause_and_spread_of_the_set(tmp_path):
    model, loader = _model_and_loader(tmp_path)
    board = _Board()
    with basicsr_log() as records:
        model.validation(loader, current_iter=2, tb_logger=board, save_img=False)
    lines = [r.getMessage() for r in records if 'uncertainty' in r.getMessage()]
    assert len(lines) == 1 and '3 images' in lines[0]
    acc = UncertaintyAccumulator()
    for data in loader.dataset:
        out, unc = model.predict(data['lq'].unsqueeze(0))
        acc.add(data['lq_path'], unc[0].float(), out[0].float(), data['gt'])
    expected = acc.result.mean()
    assert acc.result.complete
    assert f'spearman {expected["spearman"]:.4f}' in lines[0] and f'ause {expected["ause"]:.4f}' in lines[0]
    assert board.scalars['metrics/tiny_val/uncertainty_spearman'] == pytest.approx(expected['spearman'])
    assert board.scalars['metrics/tiny_val/uncertainty_ause'] == pytest.approx(expected['ause'])
    assert f'spread {expected["spread"]:.4f}' in lines[0]
    assert board.scalars['metrics/tiny_val/uncertainty_spread'] == pytest.approx(expected['spread'])
    assert set(model.metric_results) == {'psnr'}  # the image metrics as before


def test_an_image_that_cannot_be_scored_leaves_no_mean_and_a_warning(tmp_path, monkeypatch):
    model, loader = _model_and_loader(tmp_path)
    predict = model.predict
    calls = []

    def constant_map_for_the_second(lq):
        out, unc = predict(lq)
        calls.append(1)
        return out, (torch.full_like(unc, 0.5) if len(calls) == 2 else unc)

    monkeypatch.setattr(model, 'predict', constant_map_for_the_second)
    board = _Board()
    with basicsr_log() as records:
        model.validation(loader, current_iter=2, tb_logger=board, save_img=False)
    lines = [r.getMessage() for r in records if 'uncertainty' in r.getMessage()]
    assert len(lines) == 1 and 'no mean logged, 1 of 3 images could not be scored' in lines[0]
    assert not [t for t in board.scalars if 'uncertainty' in t]
    assert np.isfinite(model.metric_results['psnr'])


def test_without_the_option_nothing_is_scored(tmp_path):
    model, loader = _model_and_loader(tmp_path)
    model.opt['val']['uncertainty_metrics'] = False
    with basicsr_log() as records:
        model.validation(loader, current_iter=2, tb_logger=None, save_img=False)
    assert not [r for r in records if 'uncertainty' in r.getMessage()]


def test_the_option_is_a_switch_and_a_typo_is_refused():
    with pytest.raises(OptionError, match='val:uncertainty_metrics'):
        check_val_options({'uncertainty_metrics': 'yes'})
    with pytest.raises(OptionError, match="val:uncertainty_metric: unknown key; did you mean 'uncertainty_metrics'"):
        check_training_options({'val': {'uncertainty_metric': True}})
