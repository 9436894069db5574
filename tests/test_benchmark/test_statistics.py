"""The benchmark's statistics against hand computations: mean/std over seeds, quantiles, the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s2former_plugin.benchmark import statistics as st


def test_mean_std_by_hand():
    # mean (20 + 21 + 23) / 3 = 21.333...; squared deviations 1.7778 + 0.1111 + 2.7778 = 4.6667; / 2 = 2.3333
    mean, std = st.mean_std([20.0, 21.0, 23.0])
    assert mean == pytest.approx(64 / 3)
    assert std == pytest.approx(math.sqrt(14 / 6))
    assert st.mean_std([19.5]) == (19.5, None)
    with pytest.raises(st.StatisticsError):
        st.mean_std([])
    with pytest.raises(st.StatisticsError):
        st.mean_std([1.0, float('inf')])


def test_percentile_interval_by_hand():
    # 5 values, confidence 0.5: quantiles 0.25 and 0.75 -> positions 1.0 and 3.0 of the sorted values
    assert st.percentile_interval([4.0, 1.0, 3.0, 2.0, 5.0], 0.5) == (2.0, 4.0)
    # 4 values, confidence 0.9: q = 0.05 -> position 0.15: 1 + 0.15 * (2 - 1); q = 0.95 -> 2.85: 3 + 0.85 * (7 - 3)
    lo, hi = st.percentile_interval([1.0, 2.0, 3.0, 7.0], 0.9)
    assert lo == pytest.approx(1.15) and hi == pytest.approx(6.4)
    with pytest.raises(st.StatisticsError):
        st.percentile_interval([1.0], 1.0)


def test_bootstrap_is_seeded_and_equals_the_hand_computation():
    diffs = [0.5, -0.2, 1.1]
    idx = st.bootstrap_indices(3, 4, seed=7)
    assert idx.shape == (4, 3) and idx.min() >= 0 and idx.max() <= 2
    assert np.array_equal(idx, st.bootstrap_indices(3, 4, seed=7))  # deterministic
    assert not np.array_equal(st.bootstrap_indices(3, 50, seed=7), st.bootstrap_indices(3, 50, seed=8))
    # by hand: the mean of each resample, then the linear-interpolation quantiles of the four means
    means = sorted(sum(diffs[j] for j in row) / 3 for row in idx.tolist())
    pos_lo, pos_hi = 0.025 * 3, 0.975 * 3
    lo = means[0] + pos_lo * (means[1] - means[0])
    hi = means[2] + (pos_hi - 2) * (means[3] - means[2])
    assert st.bootstrap_mean_interval(diffs, resamples=4, confidence=0.95, seed=7) == pytest.approx((lo, hi))
    # a constant difference has a zero-width interval at that value
    assert st.bootstrap_mean_interval([0.3] * 5, resamples=20) == pytest.approx((0.3, 0.3))


def test_paired_comparison_averages_seeds_per_image_then_pairs_by_image():
    ref = [{'a': 20.0, 'b': 22.0, 'c': 18.0}, {'a': 20.4, 'b': 21.6, 'c': 18.2}]
    # per image, seed-averaged: ref a 20.2, b 21.8, c 18.1; arch a 21.2, b 22.8, c 19.1: every difference is 1.0
    arch = [{'a': 21.0, 'b': 23.0, 'c': 19.0}, {'a': 21.4, 'b': 22.6, 'c': 19.2}]
    out = st.paired_comparison(arch, ref, resamples=200, seed=0)
    assert out['mean_diff'] == pytest.approx(1.0)
    assert (out['low'], out['high']) == pytest.approx((1.0, 1.0))
    assert out['verdict'] == 'better' and out['images'] == 3 and out['dropped'] == 0
    rev = st.paired_comparison(ref, arch, resamples=200, seed=0)
    assert rev['verdict'] == 'worse' and rev['mean_diff'] == pytest.approx(-1.0)

    # differences +1 and -1 on two images: every resample mean lies in [-1, 1]; the interval holds 0 -> tie
    tie = st.paired_comparison([{'a': 21.0, 'b': 19.0}], [{'a': 20.0, 'b': 20.0}], resamples=500, seed=3)
    assert tie['verdict'] == 'tie' and tie['low'] < 0 < tie['high'] and tie['mean_diff'] == 0.0
    # equal to the hand computation from the same seeded indices
    idx = st.bootstrap_indices(2, 500, seed=3)
    means = np.array([1.0, -1.0])[idx].mean(axis=1)
    assert (tie['low'], tie['high']) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


def test_paired_comparison_refuses_mismatched_images_and_drops_infinite_ones():
    with pytest.raises(st.StatisticsError, match='different images'):
        st.paired_comparison([{'a': 1.0}], [{'b': 1.0}])
    with pytest.raises(st.StatisticsError, match='seeds scored different images'):
        st.paired_comparison([{'a': 1.0}, {'b': 1.0}], [{'a': 1.0}])
    out = st.paired_comparison([{'a': 21.0, 'b': float('inf')}], [{'a': 20.0, 'b': 30.0}], resamples=10)
    assert out['images'] == 1 and out['dropped'] == 1 and out['mean_diff'] == 1.0
