"""Uncertainty for metrics: bootstrap confidence intervals and paired / permutation tests.

Everything is deterministic given ``seed`` (a ``np.random.default_rng(seed)`` is handed to scipy).

Which tool for which question:

* ``bootstrap_ci``: CI of a statistic of per-sample values (e.g. mean CLAP score). Uses
  ``scipy.stats.bootstrap``; BCa by default (second-order accurate, corrects bias and skew).
* ``set_metric_ci``: CI of a set-level metric (FAD, KAD) over the prompt sample, by resampling
  rows of the evaluated set (and the same rows of the reference set when ``paired``).
  Percentile by default: BCa needs a jackknife, i.e. n extra metric evaluations.
  Caveat for FAD: a resample repeats rows, so its covariance is noisier and its FAD is biased
  upward; the percentile interval can sit above the point estimate. It measures sampling
  spread of the prompt set, not bias; ``method="basic"`` reflects the interval around the
  estimate instead (it can then go below 0).
* ``paired_bootstrap``: two cells scored on the same prompts, per-sample scores (CLAP): CI of
  the mean difference and a bootstrap p-value.
* ``permutation_test_sets``: two cells, one set metric against one reference (FAD(A) - FAD(B)):
  a permutation p-value, pooling rows, or swapping within prompts when ``paired``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.stats

__all__ = [
    "BootstrapResult",
    "PairedBootstrapResult",
    "PermutationResult",
    "bootstrap_ci",
    "paired_bootstrap",
    "permutation_test_sets",
    "set_metric_ci",
]

_METHODS = ("BCa", "percentile", "basic")


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with a bootstrap confidence interval."""

    value: float  # statistic on the full sample
    low: float
    high: float
    n: int  # sample size (values, or rows of the evaluated set)
    method: str  # scipy method actually used; "degenerate" when all values were equal
    confidence: float
    n_resamples: int
    standard_error: float  # std of the bootstrap distribution


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Mean of a - b over pairs, its bootstrap CI and a two-sided bootstrap p-value."""

    mean_diff: float
    low: float
    high: float
    # (1 + #{|t* - t| >= |t|}) / (B + 1): the bootstrap distribution shifted to 0 stands in
    # for the null distribution of the mean difference.
    p_value: float
    n: int
    method: str
    confidence: float
    n_resamples: int


@dataclass(frozen=True)
class PermutationResult:
    """Permutation test of metric(x_a, ref) - metric(x_b, ref) = 0."""

    statistic: float  # value_a - value_b
    value_a: float
    value_b: float
    p_value: float  # two-sided, (1 + #as-extreme) / (B + 1) when randomised (scipy)
    n_a: int
    n_b: int
    n_permutations: int  # size of the null distribution (all arrangements when exact)
    paired: bool


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")


def _scipy_bootstrap(
    data: np.ndarray,
    statistic: Callable[..., object],
    *,
    vectorized: bool | None,
    confidence: float,
    n_resamples: int,
    method: str,
    seed: int,
) -> tuple[float, float, str, float, np.ndarray]:
    """Run scipy.stats.bootstrap; fall back to percentile where BCa is undefined."""
    def run(m: str) -> object:
        # BCa on a discrete / tied bootstrap distribution warns (0/0 in its acceleration
        # estimate) and returns NaN; handled below by falling back to percentile.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
            return scipy.stats.bootstrap(
                (data,), statistic, vectorized=vectorized, confidence_level=confidence,
                n_resamples=n_resamples, method=m, rng=np.random.default_rng(seed),
            )

    res = run(method)
    used = method
    ci = res.confidence_interval
    if method == "BCa" and not (np.isfinite(ci.low) and np.isfinite(ci.high)):
        res, used = run("percentile"), "percentile (BCa undefined)"
        ci = res.confidence_interval
    se = float(res.standard_error)
    return float(ci.low), float(ci.high), used, se, res.bootstrap_distribution


def bootstrap_ci(
    values: object,
    statistic: Callable[..., object] = np.mean,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap CI of ``statistic(values)`` for 1-D per-sample values, via scipy.stats.bootstrap.

    ``statistic`` taking an ``axis`` keyword (as numpy reductions do) is evaluated vectorised.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"values must be 1-D with at least 2 entries; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values contain non-finite entries (NaN or inf)")
    _check_method(method)
    _check_confidence(confidence)
    value = float(statistic(v))
    if np.all(v == v[0]):
        # Every resample equals the sample: the interval is the point (scipy would return NaN).
        return BootstrapResult(value, value, value, v.size, "degenerate", confidence,
                               n_resamples, 0.0)
    low, high, used, se, _ = _scipy_bootstrap(
        v, statistic, vectorized=None, confidence=confidence,
        n_resamples=n_resamples, method=method, seed=seed,
    )
    return BootstrapResult(value, low, high, v.size, used, confidence, n_resamples, se)


def set_metric_ci(
    x: object,
    y: object,
    metric_fn: Callable[[np.ndarray, np.ndarray], object],
    *,
    paired: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 200,
    method: str = "percentile",
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap CI of a set metric ``float(metric_fn(x, y))`` over the rows (prompts) of ``x``.

    ``x`` is the evaluated set (one row per prompt), ``y`` the reference. Unpaired, only ``x``
    is resampled and ``y`` stays fixed (the reference is treated as the target, not a sample).
    ``paired=True`` needs len(x) == len(y) (row i of both belongs to prompt i) and resamples
    the same row indices of both. Costs ``n_resamples`` metric calls (plus n for BCa).
    """
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.ndim < 1 or xa.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows; got shape {xa.shape}")
    if paired and xa.shape[0] != ya.shape[0]:
        raise ValueError(f"paired resampling needs equal row counts; got {xa.shape} and {ya.shape}")
    _check_method(method)
    _check_confidence(confidence)

    def statistic(idx: np.ndarray) -> float:
        return float(metric_fn(xa[idx], ya[idx] if paired else ya))

    # Resampling row indices (not rows) lets scipy drive any metric, however it is computed.
    idx = np.arange(xa.shape[0])
    value = statistic(idx)
    low, high, used, se, _ = _scipy_bootstrap(
        idx, statistic, vectorized=False, confidence=confidence,
        n_resamples=n_resamples, method=method, seed=seed,
    )
    return BootstrapResult(value, low, high, xa.shape[0], used, confidence, n_resamples, se)


def paired_bootstrap(
    a: object,
    b: object,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int = 0,
) -> PairedBootstrapResult:
    """Paired bootstrap of mean(a - b) for per-sample scores of two cells on the same prompts."""
    av = np.asarray(a, dtype=np.float64)
    bv = np.asarray(b, dtype=np.float64)
    if av.ndim != 1 or av.shape != bv.shape:
        raise ValueError(
            f"a and b must be 1-D of equal length (paired); got {av.shape} and {bv.shape}"
        )
    if av.size < 2 or not (np.isfinite(av).all() and np.isfinite(bv).all()):
        raise ValueError(f"a and b need at least 2 finite pairs; got shape {av.shape}")
    _check_method(method)
    _check_confidence(confidence)
    d = av - bv
    mean_diff = float(np.mean(d))
    if np.all(d == d[0]):
        # All differences equal: the CI is the point; a constant nonzero shift is as significant
        # as B resamples can show.
        p = 1.0 if mean_diff == 0.0 else 1.0 / (n_resamples + 1)
        return PairedBootstrapResult(mean_diff, mean_diff, mean_diff, p, d.size, "degenerate",
                                     confidence, n_resamples)
    low, high, used, _, dist = _scipy_bootstrap(
        d, np.mean, vectorized=None, confidence=confidence,
        n_resamples=n_resamples, method=method, seed=seed,
    )
    extreme = np.count_nonzero(np.abs(dist - mean_diff) >= abs(mean_diff))
    p = (1.0 + extreme) / (dist.size + 1.0)
    return PairedBootstrapResult(mean_diff, low, high, p, d.size, used, confidence, n_resamples)


def permutation_test_sets(
    x_a: object,
    x_b: object,
    ref: object,
    metric_fn: Callable[[np.ndarray, np.ndarray], object],
    *,
    paired: bool = False,
    n_permutations: int = 199,
    seed: int = 0,
) -> PermutationResult:
    """Two-sided permutation test that cells A and B score the same on a set metric vs ``ref``.

    Null: the rows of A and B are exchangeable. Unpaired, rows are pooled and re-split at the
    original sizes; ``paired=True`` (row i of A and of B come from prompt i) swaps A/B labels
    within each prompt, which keeps the prompt mix of both sets fixed. Each permutation costs
    two metric calls; for FAD pass a ``metric_fn`` that reuses the reference statistics.
    """
    xa, xb = np.asarray(x_a), np.asarray(x_b)
    refa = np.asarray(ref)
    if xa.ndim < 1 or xb.ndim < 1 or xa.shape[1:] != xb.shape[1:]:
        raise ValueError(f"x_a and x_b must hold rows of one shape; got {xa.shape} and {xb.shape}")
    if paired and xa.shape[0] != xb.shape[0]:
        raise ValueError(f"paired test needs equal row counts; got {xa.shape} and {xb.shape}")
    pool = np.concatenate([xa, xb])
    idx_a = np.arange(xa.shape[0])
    idx_b = np.arange(xa.shape[0], pool.shape[0])

    def statistic(ia: np.ndarray, ib: np.ndarray) -> float:
        return float(metric_fn(pool[ia], refa)) - float(metric_fn(pool[ib], refa))

    value_a = float(metric_fn(xa, refa))
    value_b = float(metric_fn(xb, refa))
    res = scipy.stats.permutation_test(
        (idx_a, idx_b), statistic, permutation_type="samples" if paired else "independent",
        vectorized=False, n_resamples=n_permutations, alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return PermutationResult(
        statistic=value_a - value_b, value_a=value_a, value_b=value_b,
        p_value=float(res.pvalue), n_a=xa.shape[0], n_b=xb.shape[0],
        n_permutations=int(res.null_distribution.size), paired=paired,
    )
