"""Tests for harness.score.metrics.kad: brute-force agreement, unbiasedness, bandwidth, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist

import harness.score.metrics.kad as kad_module
from harness.score.metrics.kad import (
    DEFAULT_SCALE,
    KernelAudioDistance,
    kernel_audio_distance,
    median_pairwise_distance,
)


def brute_force_kad(x: np.ndarray, y: np.ndarray, h: float, scale: float) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 h^2)), as literal double loops."""
    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2.0 * h * h))

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return scale * (kxx + kyy - 2.0 * kxy)


@pytest.mark.parametrize("m,n,dim,shift", [(12, 15, 5, 0.7), (9, 9, 1, 0.3), (20, 7, 16, 1.5)])
def test_matches_brute_force(m, n, dim, shift):
    rng = np.random.default_rng(m * n + dim)
    x = rng.standard_normal((m, dim)) + shift
    y = rng.standard_normal((n, dim))
    res = kernel_audio_distance(x, y)
    h = float(np.median(pdist(y)))
    expected = brute_force_kad(x, y, h, DEFAULT_SCALE)
    assert abs(res.value - expected) <= 1e-12 * abs(expected)
    assert res.bandwidth == pytest.approx(h, rel=1e-13)
    assert (res.n1, res.n2, res.scale) == (m, n, DEFAULT_SCALE)


@pytest.mark.parametrize("n,dim,offset", [(2, 3, 0.0), (7, 4, 0.0), (30, 64, 1e3), (101, 8, -5.0)])
def test_bandwidth_is_median_of_reference_pdist(n, dim, offset):
    # n = 7 gives an odd pair count (21), n = 30 and 101 even and odd with an offset set.
    y = np.random.default_rng(n).standard_normal((n, dim)) + offset
    assert median_pairwise_distance(y) == pytest.approx(float(np.median(pdist(y))), rel=1e-12)


def test_bandwidth_comes_from_reference_only():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 3)) * 10.0, rng.standard_normal((25, 3))
    assert kernel_audio_distance(x, y).bandwidth == pytest.approx(np.median(pdist(y)), rel=1e-12)
    # Hence KAD is not symmetric in its arguments.
    assert kernel_audio_distance(x, y).value != pytest.approx(kernel_audio_distance(y, x).value)


def test_unbiased_same_distribution_averages_to_zero():
    rng = np.random.default_rng(42)
    vals = np.array([
        kernel_audio_distance(rng.standard_normal((25, 4)), rng.standard_normal((25, 4))).value
        for _ in range(300)
    ])
    assert (vals < 0).any()  # individual estimates may be negative
    stderr = vals.std(ddof=1) / math.sqrt(vals.size)
    assert abs(vals.mean()) < 3.0 * stderr


def test_monotone_in_mean_shift():
    rng = np.random.default_rng(1)
    base, y = rng.standard_normal((60, 8)), rng.standard_normal((80, 8))
    direction = np.ones(8) / math.sqrt(8)
    shifts = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    vals = [kernel_audio_distance(base + s * direction, y).value for s in shifts]
    assert all(a < b for a, b in zip(vals, vals[1:]))


def test_scale_and_explicit_bandwidth():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((15, 3)) + 0.5, rng.standard_normal((18, 3))
    default = kernel_audio_distance(x, y)
    raw = kernel_audio_distance(x, y, scale=1.0)
    assert default.value == pytest.approx(1000.0 * raw.value, rel=1e-14)
    fixed = kernel_audio_distance(x, y, bandwidth=2.0, scale=100.0)
    assert fixed.bandwidth == 2.0
    assert fixed.value == pytest.approx(brute_force_kad(x, y, 2.0, 100.0), rel=1e-12)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        kernel_audio_distance(x, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        kernel_audio_distance(x, np.ones((5, 3)))  # all reference rows identical


def test_blocked_evaluation_matches_single_block(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((23, 5)) + 0.2, rng.standard_normal((31, 5))
    whole = kernel_audio_distance(x, y)
    monkeypatch.setattr(kad_module, "_BLOCK", 4)
    blocked = kernel_audio_distance(x, y)
    assert blocked.bandwidth == pytest.approx(whole.bandwidth, rel=1e-14)
    assert blocked.value == pytest.approx(whole.value, rel=1e-12)


def test_max_samples_subsets_deterministically():
    y = np.random.default_rng(4).standard_normal((300, 6))
    a = median_pairwise_distance(y, max_samples=50, seed=1)
    assert a == median_pairwise_distance(y, max_samples=50, seed=1)
    assert a != median_pairwise_distance(y, max_samples=50, seed=2)
    assert median_pairwise_distance(y, max_samples=1000) == median_pairwise_distance(y)


def test_streaming_class_matches_function():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 6)) + 0.3, rng.standard_normal((50, 6))
    metric = KernelAudioDistance(scale=10.0)
    for chunk in np.array_split(x, 4):
        metric.update(chunk, real=False)
    for chunk in np.array_split(y, 5):
        metric.update(chunk, real=True)
    assert metric.compute().value == pytest.approx(
        kernel_audio_distance(x, y, scale=10.0).value, rel=1e-13
    )
    with pytest.raises(ValueError, match="dim"):
        metric.update(np.ones((2, 7)), real=True)
    metric.reset()
    with pytest.raises(ValueError, match="needs both"):
        metric.compute()


def test_input_validation():
    with pytest.raises(ValueError, match="x contains"):
        kernel_audio_distance(np.array([[np.nan, 0.0], [1.0, 1.0]]), np.ones((3, 2)))
    with pytest.raises(ValueError, match="y needs at least 2 rows"):
        kernel_audio_distance(np.ones((3, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="differ in dim"):
        kernel_audio_distance(np.ones((3, 2)), np.eye(3))
