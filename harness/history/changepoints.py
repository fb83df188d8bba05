"""Change points of one figure's series over commits: penalised segmentation with per-point variances.

The method (numpy only):

1. **Scale.** Latency and memory figures (``scale == "ratio"``) are analysed as logarithms, so a
   step is a relative change and its size does not depend on the figure's magnitude; quality
   figures and fractions are analysed as they are.
2. **Each point's own uncertainty** (``se``): the standard error of the point's value, from its
   raw observations (median of per-call latencies: ``1.2533 * std / sqrt(n)``), from its
   confidence interval (bootstrap CI of FAD, KAD, CLAP: half-width over the normal quantile),
   or from its count (a failed or flagged fraction: binomial, with one pseudo-observation so that
   0 of n still has a spread). Single numbers (a memory peak) have none; they get a resolution
   of 0.5 % (``RESOLUTION``).
3. **Run-to-run variation** (``tau``): timings drift between runs (machine state, neighbours)
   by more than their spread within one run, so each point's variance is ``se**2 + tau**2``.
   ``tau**2`` is estimated from successive differences (the von Neumann / Rice estimator, made
   robust with the median absolute deviation, so a step, which moves one difference only,
   barely changes it): ``var(x[i+1] - x[i]) = 2 tau**2 + se[i]**2 + se[i+1]**2``.
4. **Segmentation.** The series is cut into segments of constant mean by exact optimal
   partitioning (the penalised search that PELT, Killick et al. 2012, and the ``ruptures``
   package speed up; asv's step detection penalises segmentations the same way) of the
   Gaussian cost with known variances,
   ``sum_i (x_i - mean_w(segment))**2 / var_i`` (the -2 log-likelihood up to a constant), plus
   a BIC-like penalty ``penalty * log(n)`` per step. A step therefore needs to beat the noise
   that each point says it has, not a fixed threshold.
5. **Each step's size and CI**: the difference of the inverse-variance weighted means of the
   segments before and after, with standard error ``sqrt(1/W_before + 1/W_after)``; on the log
   scale reported as a relative change ``exp(d) - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

DEFAULT_PENALTY = 3.0  # times log(n); chosen with benchmarks/history_simulation.py (see RESULTS.md)
DEFAULT_MIN_SIZE = 2  # points per segment: one outlying run is not a step
# A single number with no observations (a memory peak) still wobbles between identical runs
# (allocator, page cache, a growing process): 0.5 % is taken as its resolution, so a creep of a
# few hundred KiB is not a step while a +5 % jump still is.
RESOLUTION = 0.005
_MEDIAN_SE = math.sqrt(math.pi / 2)  # SE of a normal sample's median over the SE of its mean


@dataclass(frozen=True)
class Step:
    """A change of a series' level between point ``index - 1`` and point ``index``."""

    index: int  # first point after the step
    before: float  # level of the segment before, on the figure's own scale
    after: float
    size: float  # relative change (ratio scale) or difference
    ci_low: float
    ci_high: float
    relative: bool
    z: float  # size over its standard error (analysis scale)


def point_se(value: float, *, samples: Sequence[float] | None = None, ci_low: float | None = None,
             ci_high: float | None = None, confidence: float | None = None, n: int | None = None,
             fraction: bool = False) -> float:
    """Standard error of one point's value from what is known of it (0.0 when nothing is)."""
    if fraction and n:
        p = (value * n + 0.5) / (n + 1)  # one pseudo-observation: 0 of n is not certainty
        return math.sqrt(p * (1 - p) / n)
    if ci_low is not None and ci_high is not None and confidence:  # a bootstrap CI knows its statistic best
        return (ci_high - ci_low) / (2 * norm.ppf(0.5 + confidence / 2))
    if samples is not None and len(samples) >= 2:  # the value is their median (latency p50)
        return _MEDIAN_SE * float(np.std(samples, ddof=1)) / math.sqrt(len(samples))
    return 0.0


def to_analysis_scale(values: np.ndarray, se: np.ndarray, relative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Log values and relative standard errors for ratio-scale figures; the identity otherwise."""
    if not relative:
        return values, se
    if np.any(values <= 0):
        raise ValueError("a ratio-scale figure (latency, memory) must be positive to be analysed on a log scale")
    return np.log(values), se / values


def between_run_variance(x: np.ndarray, se: np.ndarray) -> float:
    """Variance of the run-to-run variation not covered by each point's own SE (robust, >= 0)."""
    if len(x) < 3:
        return 0.0
    diffs = np.diff(x)
    mad = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs))))
    return max(0.0, mad**2 / 2 - float(np.mean(se**2)))


def segment(x: np.ndarray, var: np.ndarray, penalty: float, min_size: int = DEFAULT_MIN_SIZE) -> list[int]:
    """Exact optimal partition of ``x``: the first index of every segment but the first.

    Optimal partitioning (Jackson et al., 2005) is O(n**2) vectorised over the candidate
    starts: a few milliseconds for a thousand commits. PELT's pruning would make it linear,
    but with a minimum segment length it is no longer exact, and series here are short.
    """
    n = len(x)
    if n < 2 * min_size:
        return []
    w = 1.0 / var
    cw, cwx, cwx2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (w, w * x, w * x * x))
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last = np.zeros(n + 1, dtype=int)
    for end in range(min_size, n + 1):
        starts = np.arange(0, end - min_size + 1)
        starts = starts[np.isfinite(best[starts])]
        sw, swx = cw[end] - cw[starts], cwx[end] - cwx[starts]
        total = best[starts] + (cwx2[end] - cwx2[starts] - swx * swx / sw) + penalty
        i = int(np.argmin(total))
        best[end], last[end] = total[i], starts[i]
    cuts, end = [], n
    while (end := int(last[end])) > 0:
        cuts.append(end)
    return sorted(cuts)


def detect(values: Sequence[float], se: Sequence[float], relative: bool, penalty: float = DEFAULT_PENALTY,
           min_size: int = DEFAULT_MIN_SIZE, confidence: float = 0.95) -> tuple[list[Step], float]:
    """Steps of one series and the run-to-run SD used (``tau``, on the analysis scale)."""
    x, s = to_analysis_scale(np.asarray(values, float), np.asarray(se, float), relative)
    s = _with_resolution(s, relative)
    tau2 = between_run_variance(x, s)
    var = s**2 + tau2
    floor = (1e-6 * max(1.0, float(np.median(np.abs(x))))) ** 2  # a perfectly flat series (e.g. memory)
    var = np.maximum(var, floor)
    cuts = segment(x, var, penalty * math.log(max(len(x), 2)), min_size)
    bounds = [0, *cuts, len(x)]
    z = norm.ppf(0.5 + confidence / 2)
    steps = []
    for a, cut, b in zip(bounds, bounds[1:], bounds[2:]):
        (m0, w0), (m1, w1) = _level(x[a:cut], var[a:cut]), _level(x[cut:b], var[cut:b])
        d, sd = m1 - m0, math.sqrt(1 / w0 + 1 / w1)
        back = math.exp if relative else (lambda v: v)
        size, low, high = ((math.expm1(d), math.expm1(d - z * sd), math.expm1(d + z * sd)) if relative
                           else (d, d - z * sd, d + z * sd))
        steps.append(Step(cut, back(m0), back(m1), size, low, high, relative, d / sd))
    return steps, math.sqrt(tau2)


def segment_levels(values: Sequence[float], se: Sequence[float], steps: Sequence[Step], relative: bool,
                   tau: float) -> np.ndarray:
    """Each point's segment level (inverse-variance weighted mean), on the figure's own scale."""
    x, s = to_analysis_scale(np.asarray(values, float), np.asarray(se, float), relative)
    var = np.maximum(_with_resolution(s, relative) ** 2 + tau**2, 1e-300)
    bounds = [0, *(st.index for st in steps), len(x)]
    out = np.empty(len(x))
    for a, b in zip(bounds, bounds[1:]):
        out[a:b] = _level(x[a:b], var[a:b])[0]
    return np.exp(out) if relative else out


def _with_resolution(se: np.ndarray, relative: bool) -> np.ndarray:
    """Points without an uncertainty of their own get the resolution of a single number (ratio scale)."""
    return np.where(se > 0, se, RESOLUTION) if relative else se


def _level(x: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    w = 1.0 / var
    return float(np.sum(w * x) / np.sum(w)), float(np.sum(w))
