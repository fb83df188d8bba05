"""Tests for harness.score.metrics.bootstrap: scipy agreement, coverage, paired and permutation tests."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from harness.score.metrics.bootstrap import (
    bootstrap_ci,
    paired_bootstrap,
    permutation_test_sets,
    set_metric_ci,
)
from harness.score.metrics.frechet import fad_from_embeddings


@pytest.mark.parametrize("method", ["BCa", "percentile", "basic"])
def test_agrees_with_scipy_for_mean(method):
    v = np.random.default_rng(0).gamma(2.0, size=57)
    ours = bootstrap_ci(v, confidence=0.9, n_resamples=2000, method=method, seed=3)
    ref = scipy.stats.bootstrap(
        (v,), np.mean, confidence_level=0.9, n_resamples=2000, method=method,
        rng=np.random.default_rng(3),
    )
    assert ours.low == ref.confidence_interval.low
    assert ours.high == ref.confidence_interval.high
    assert ours.standard_error == ref.standard_error
    assert ours.value == pytest.approx(v.mean(), rel=1e-15)
    assert (ours.n, ours.method, ours.confidence, ours.n_resamples) == (57, method, 0.9, 2000)


def test_coverage_near_nominal():
    rng = np.random.default_rng(123)
    true_mean, repeats = 1.0, 200
    hits = 0
    for i in range(repeats):
        sample = rng.normal(true_mean, 2.0, size=40)
        ci = bootstrap_ci(sample, n_resamples=999, seed=i)
        hits += ci.low <= true_mean <= ci.high
    assert 0.90 <= hits / repeats <= 0.99


def test_deterministic_and_seed_dependent():
    v = np.random.default_rng(1).normal(size=30)
    assert bootstrap_ci(v, seed=5) == bootstrap_ci(v, seed=5)
    assert bootstrap_ci(v, seed=5) != bootstrap_ci(v, seed=6)


def test_degenerate_and_invalid_values():
    ci = bootstrap_ci(np.full(10, 0.25))
    assert (ci.value, ci.low, ci.high, ci.method, ci.n) == (0.25, 0.25, 0.25, "degenerate", 10)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([1.0, 2.0], method="bca")


def test_custom_statistic_without_axis():
    v = np.random.default_rng(2).exponential(size=41)
    ci = bootstrap_ci(v, statistic=lambda s: float(np.median(s)), n_resamples=500, seed=0)
    assert ci.low <= np.median(v) <= ci.high


def test_bca_undefined_falls_back_to_percentile_and_says_so(recwarn):
    # Median of heavily tied data: every jackknife median is 0, so BCa's acceleration is 0/0.
    v = np.array([0.0] * 30 + [1.0] * 3)
    ci = bootstrap_ci(v, statistic=np.median, n_resamples=500)
    assert ci.method == "percentile (BCa undefined)"
    assert (ci.value, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not recwarn.list


def test_set_metric_ci_equals_value_bootstrap_for_a_mean_metric():
    # metric(x, y) = mean(x[:, 0]) - mean(y[:, 0]) resamples exactly like bootstrap_ci on x[:, 0].
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, size=(35, 2)), rng.normal(0.0, 1.0, size=(50, 2))

    def metric(a, b):
        return float(a[:, 0].mean() - b[:, 0].mean())

    ours = set_metric_ci(x, y, metric, n_resamples=300, seed=9)
    ref = bootstrap_ci(x[:, 0], n_resamples=300, method="percentile", seed=9)
    shift = y[:, 0].mean()
    assert ours.value == pytest.approx(ref.value - shift, abs=1e-14)
    assert ours.low == pytest.approx(ref.low - shift, abs=1e-12)
    assert ours.high == pytest.approx(ref.high - shift, abs=1e-12)
    assert (ours.n, ours.method) == (35, "percentile")


def test_set_metric_ci_paired_resamples_both_sides_together():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(30, 1))
    x = y + rng.normal(0.5, 0.1, size=(30, 1))

    def metric(a, b):
        return float(np.mean(a - b))  # only meaningful when rows stay paired

    ours = set_metric_ci(x, y, metric, paired=True, n_resamples=300, seed=1)
    ref = bootstrap_ci((x - y)[:, 0], n_resamples=300, method="percentile", seed=1)
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    with pytest.raises(ValueError, match="equal row counts"):
        set_metric_ci(x, y[:-1], metric, paired=True)


def test_set_metric_ci_runs_fad():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.3, 1.0, size=(80, 4)), rng.normal(size=(200, 4))
    ci = set_metric_ci(x, y, fad_from_embeddings, n_resamples=50, seed=0)
    assert ci.value == pytest.approx(fad_from_embeddings(x, y).value, rel=1e-15)
    assert 0.0 <= ci.low < ci.high and ci.n == 80
    assert ci == set_metric_ci(x, y, fad_from_embeddings, n_resamples=50, seed=0)


def test_paired_bootstrap_detects_real_shift_only():
    rng = np.random.default_rng(6)
    b = rng.normal(0.3, 0.1, size=60)
    shifted = paired_bootstrap(b + 0.02 + rng.normal(0, 0.03, size=60), b, seed=0)
    assert shifted.p_value < 0.01 and shifted.low > 0.0
    assert shifted.mean_diff == pytest.approx(0.02, abs=0.01)
    noisy_a, noisy_b = b + rng.normal(0, 0.03, size=60), b + rng.normal(0, 0.03, size=60)
    null = paired_bootstrap(noisy_a, noisy_b, seed=0)
    assert null.p_value > 0.05 and null.low < 0.0 < null.high
    assert shifted.n == null.n == 60
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(b, b[:-1])


def test_paired_bootstrap_degenerate_differences():
    a = np.arange(5.0)
    same = paired_bootstrap(a, a)
    assert (same.mean_diff, same.p_value, same.method) == (0.0, 1.0, "degenerate")
    constant = paired_bootstrap(a + 1.0, a, n_resamples=99)
    assert constant.p_value == 0.01 and constant.low == constant.high == 1.0


def _mean_gap(x, ref):
    return float(np.linalg.norm(x.mean(0) - ref.mean(0)))


@pytest.mark.parametrize("paired", [False, True])
def test_permutation_detects_set_difference_only(paired):
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(100, 3))
    a = rng.normal(size=(50, 3))
    b_shift = rng.normal(size=(50, 3)) + 0.6
    b_null = rng.normal(size=(50, 3))
    kw = {"paired": paired, "n_permutations": 199, "seed": 0}
    hit = permutation_test_sets(a, b_shift, ref, _mean_gap, **kw)
    assert hit.p_value < 0.02 and hit.statistic < 0
    assert hit.statistic == pytest.approx(hit.value_a - hit.value_b, abs=1e-15)
    miss = permutation_test_sets(a, b_null, ref, _mean_gap, **kw)
    assert miss.p_value > 0.05
    assert (hit.n_a, hit.n_b, hit.n_permutations, hit.paired) == (50, 50, 199, paired)
    assert miss == permutation_test_sets(a, b_null, ref, _mean_gap, **kw)


def test_permutation_with_fad_and_unequal_sizes():
    rng = np.random.default_rng(8)
    ref = rng.normal(size=(200, 3))
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(40, 3)) * 1.8

    def fad(x, y):
        return fad_from_embeddings(x, y).value

    res = permutation_test_sets(a, b, ref, fad, n_permutations=99, seed=0)
    assert res.p_value <= 0.02 and res.value_b > res.value_a
    assert (res.n_a, res.n_b) == (60, 40)
    with pytest.raises(ValueError, match="equal row counts"):
        permutation_test_sets(a, b, ref, fad, paired=True)
