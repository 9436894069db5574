"""benchmarks/uncertainty_example.py's rain masks taken from the pairs (``--rain-threshold``): the pixels where the
rainy input differs from its clean image by more than the threshold, and a pair of another size refused."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from helpers import REPO

SCRIPT = REPO / 'benchmarks' / 'uncertainty_example.py'


def _script():
    spec = importlib.util.spec_from_file_location('uncertainty_example', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_difference_masks_mark_where_the_rain_was_added(tmp_path):
    lq, gt, out = tmp_path / 'rain', tmp_path / 'norain', tmp_path / 'masks'
    lq.mkdir()
    gt.mkdir()
    clean = np.full((6, 8, 3), 100, np.uint8)
    rainy = clean.copy()
    rainy[1, 2, 0] = 160  # +60/255 = 0.235 in one channel: rain at threshold 0.2
    rainy[3, 4] = 140  # +40/255 = 0.157 in every channel: not rain
    cv2.imwrite(str(gt / 'norain-1.png'), clean)
    cv2.imwrite(str(lq / 'norain-1x2.png'), rainy)  # the rain200 naming pairs it with norain-1
    _script()._difference_masks(str(lq), str(gt), str(out), 0.2)
    mask = cv2.imread(str(out / 'norain-1x2.png'), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((6, 8), np.uint8)
    expected[1, 2] = 255
    assert np.array_equal(mask, expected)


def test_difference_masks_refuse_a_pair_of_another_size(tmp_path):
    lq, gt = tmp_path / 'rain', tmp_path / 'norain'
    lq.mkdir()
    gt.mkdir()
    cv2.imwrite(str(gt / 'norain-1.png'), np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(str(lq / 'norain-1x2.png'), np.zeros((6, 9, 3), np.uint8))
    with pytest.raises(SystemExit, match='differ in size or depth'):
        _script()._difference_masks(str(lq), str(gt), str(tmp_path / 'masks'), 0.2)
