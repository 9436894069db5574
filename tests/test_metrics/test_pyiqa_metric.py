"""No-reference metrics in S2FormerModel validation, on a folder of rainy photos without ground truth."""

from __future__ import annotations

import cv2
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.metrics import calculate_niqe
from basicsr.models import build_model
from basicsr.utils import tensor2img
from helpers import parsed_options, photo, tiny_s2former_options, write_paired_folder
from torch.utils.data import DataLoader

from s2former_plugin.metrics.pyiqa_metric import check_val_metrics, needs_reference

NR_METRICS = {
    'niqe': {'type': 'pyiqa', 'metric': 'niqe'},
    'piqe': {'type': 'pyiqa', 'metric': 'piqe'},
    'niqe_basicsr': {'type': 'calculate_niqe', 'crop_border': 0},
}


@pytest.fixture()
def real_rain(tmp_path, vgg19_file):
    torch.manual_seed(0)
    write_paired_folder(tmp_path / 'data', n=2, size=(24, 24))
    opt = parsed_options(tiny_s2former_options(tmp_path / 'data', vgg19_file), tmp_path)
    photos = tmp_path / 'real_rain'
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f'rainy_{i}.png'), photo(i, (96, 192)))  # two NIQE blocks each
    (photos / 'notes.txt').write_text('not an image')
    val = {'name': 'real_rain', 'type': 'DerainFolderDataset', 'layout': 'single', 'dataroot': str(photos)}
    opt['datasets']['val'] = {**val, 'phase': 'val', 'scale': 1}
    return tmp_path, opt


def test_validation_without_ground_truth_with_no_reference_metrics(real_rain):
    _, opt = real_rain
    opt['val']['metrics'] = {k: dict(v) for k, v in NR_METRICS.items()}
    dataset = build_dataset(opt['datasets']['val'])
    assert len(dataset) == 2 and 'gt' not in dataset[0] and dataset[0]['lq'].shape == (3, 96, 192)
    model = build_model(opt)
    model.validation(DataLoader(dataset), current_iter=3, tb_logger=None, save_img=False)
    outputs = [tensor2img(model.predict(dataset[i]['lq'][None])[0]) for i in range(2)]
    expected = sum(calculate_niqe(o, 0) for o in outputs) / 2
    assert model.metric_results['niqe'] == pytest.approx(expected, rel=1e-9)
    assert model.metric_results['niqe_basicsr'] == pytest.approx(expected, rel=1e-9)
    assert 0 < model.metric_results['piqe'] <= 100
    best = model.best_metric_results['real_rain']
    assert {k: v['better'] for k, v in best.items()} == dict.fromkeys(NR_METRICS, 'lower')  # basicsr says higher
    assert best['niqe']['val'] == model.metric_results['niqe'] and best['niqe']['iter'] == 3


def test_full_reference_metric_on_a_set_without_ground_truth_is_refused(real_rain):
    _, opt = real_rain
    opt['val']['metrics'] = {'niqe': dict(NR_METRICS['niqe']), 'psnr': {'type': 'pyiqa', 'metric': 'psnr'}}
    model = build_model(opt)
    loader = DataLoader(build_dataset(opt['datasets']['val']))
    with pytest.raises(ValueError, match=r'val:metrics:psnr compares with ground truth, but real_rain has none'):
        model.validation(loader, current_iter=1, tb_logger=None, save_img=False)
    with pytest.raises(ValueError, match='only be validated on'):
        build_dataset({**opt['datasets']['val'], 'phase': 'train', 'gt_size': 16})


def test_better_flags():
    metrics = {
        'niqe': {'type': 'pyiqa', 'metric': 'niqe'},
        'psnr': {'type': 'pyiqa', 'metric': 'psnr'},
        'psnr_basicsr': {'type': 'calculate_psnr', 'crop_border': 0},
    }
    check_val_metrics(metrics)
    assert metrics['niqe']['better'] == 'lower' and metrics['psnr']['better'] == 'higher'
    assert 'better' not in metrics['psnr_basicsr']  # basicsr's own default applies
    with pytest.raises(ValueError, match='val:metrics:niqe:better'):
        check_val_metrics({'niqe': {'type': 'pyiqa', 'metric': 'niqe', 'better': 'higher'}})
    with pytest.raises(ValueError, match="val:metrics:niqe:metric: unknown metric 'nique'"):
        check_val_metrics({'niqe': {'type': 'pyiqa', 'metric': 'nique'}})  # a typo fails at start-up
    with pytest.raises(ValueError, match='val:metrics:piqe:better'):
        check_val_metrics({'piqe': {'type': 'pyiqa', 'metric': 'piqe', 'better': 'lowr'}})
    assert not needs_reference(metrics['niqe']) and needs_reference(metrics['psnr'])
    assert needs_reference(metrics['psnr_basicsr']) and not needs_reference({'type': 'calculate_niqe'})
