"""Kernel Audio Distance (KAD; Chung et al. 2025, "KAD: No More FAD!", kadtk).

KAD is the unbiased estimator of the squared maximum mean discrepancy with a Gaussian kernel,

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(mn) sum_{i,j} k(x_i, y_j),        k(a, b) = exp(-|a - b|^2 / (2 h^2)),

times ``scale``. As in kadtk, the bandwidth h defaults to the median pairwise Euclidean distance
within the *reference* set ``y``, so the score keeps one meaning across evaluated sets (and KAD is
not symmetric in its arguments). Being unbiased, it can be slightly negative when the two sets
come from the same distribution; that is expected and not clamped.

``scale`` defaults to 1000. Note that kadtk's ``SCALE_FACTOR`` is 100 in the code read for
this module (YoonjinXD/kadtk, kadtk/kad.py at 7ec65d7); pass ``scale=100`` to compare numbers
with that toolkit. Other differences from kadtk: float64 instead of float32, no ``+1e-8`` in the
kernel's denominator (a zero bandwidth raises instead), and distances from centred data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.score.metrics.frechet import check_embeddings

__all__ = [
    "DEFAULT_SCALE",
    "KADResult",
    "KernelAudioDistance",
    "kernel_audio_distance",
    "median_pairwise_distance",
]

DEFAULT_SCALE = 1000.0
# Rows per block of kernel evaluations: bounds the temporary (block, n) matrices to ~64 MB at
# n = 4096 while keeping each gemm large enough to run at full BLAS speed.
_BLOCK = 2048


def _sq_norms(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


def median_pairwise_distance(
    y: object, *, max_samples: int | None = None, seed: int = 0
) -> float:
    """Median Euclidean distance over all pairs i < j of rows of ``y`` (the median heuristic).

    Equals ``np.median(scipy.spatial.distance.pdist(y))`` up to round-off, but uses BLAS
    (pdist at n=4000, d=2048 is a slow scalar loop). ``max_samples`` caps the rows used (a
    uniform subset drawn with ``seed``) to bound the O(n^2) memory for very large sets.
    """
    ya = check_embeddings(y, "y", min_rows=2)
    if max_samples is not None and ya.shape[0] > max_samples:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2; got {max_samples}")
        idx = np.random.default_rng(seed).choice(ya.shape[0], size=max_samples, replace=False)
        ya = ya[np.sort(idx)]
    # Distances are translation invariant; centring first keeps |a|^2 + |b|^2 - 2ab from
    # cancelling when the set sits far from the origin.
    ya = ya - ya.mean(axis=0)
    norms = _sq_norms(ya)
    n = ya.shape[0]
    cols = np.arange(n)
    upper = []
    for start in range(0, n - 1, _BLOCK):
        stop = min(start + _BLOCK, n)
        d2 = norms[start:stop, None] + norms[None, :] - 2.0 * (ya[start:stop] @ ya.T)
        upper.append(d2[cols[None, :] > cols[start:stop, None]])  # pairs i < j only
    d2 = np.concatenate(upper)
    return float(np.median(np.sqrt(np.clip(d2, 0.0, None))))


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, same: bool) -> float:
    """Sum of exp(-gamma |a_i - b_j|^2) over all (i, j), excluding i == j when ``same``."""
    na, nb = _sq_norms(a), _sq_norms(b)
    total = 0.0
    for start in range(0, a.shape[0], _BLOCK):
        stop = min(start + _BLOCK, a.shape[0])
        d2 = na[start:stop, None] + nb[None, :] - 2.0 * (a[start:stop] @ b.T)
        np.clip(d2, 0.0, None, out=d2)
        if same:
            # The diagonal is exactly 0; round-off would otherwise leave exp(-tiny) != 1 there.
            d2[np.arange(stop - start), np.arange(start, stop)] = 0.0
        total += float(np.sum(np.exp(-gamma * d2)))
    if same:
        total -= a.shape[0]  # remove the k(x_i, x_i) = 1 terms
    return total


@dataclass(frozen=True)
class KADResult:
    """A KAD value with the bandwidth and sizes behind it."""

    value: float  # scale * unbiased MMD^2; may be slightly negative for matching distributions
    bandwidth: float
    scale: float
    n1: int  # evaluated set size
    n2: int  # reference set size

    def __float__(self) -> float:
        return self.value


def kernel_audio_distance(
    x: object,
    y: object,
    *,
    bandwidth: float | None = None,
    scale: float = DEFAULT_SCALE,
) -> KADResult:
    """KAD between ``x`` (evaluated, (m, dim)) and ``y`` (reference, (n, dim)); see module doc."""
    xa = check_embeddings(x, "x", min_rows=2)
    ya = check_embeddings(y, "y", min_rows=2)
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y differ in dim: {xa.shape} vs {ya.shape}")
    h = median_pairwise_distance(ya) if bandwidth is None else float(bandwidth)
    if not np.isfinite(h) or h <= 0.0:
        raise ValueError(f"bandwidth must be positive and finite; got {h} "
                         "(a zero median means most reference rows are identical)")
    gamma = 1.0 / (2.0 * h * h)
    # One common shift for both sets: all distances are unchanged, cancellation is reduced.
    centre = ya.mean(axis=0)
    xc, yc = xa - centre, ya - centre
    m, n = xc.shape[0], yc.shape[0]
    k_xx = _kernel_sum(xc, xc, gamma, same=True) / (m * (m - 1))
    k_yy = _kernel_sum(yc, yc, gamma, same=True) / (n * (n - 1))
    k_xy = _kernel_sum(xc, yc, gamma, same=False) / (m * n)
    mmd2 = k_xx + k_yy - 2.0 * k_xy
    return KADResult(value=scale * mmd2, bandwidth=h, scale=float(scale), n1=m, n2=n)


class KernelAudioDistance:
    """Streaming KAD: ``update(batch, real=...)`` any number of times, then ``compute()``.

    Unlike FAD there is no fixed-size sufficient statistic, so the embeddings themselves are the
    state (as torchmetrics' KID keeps its feature lists).
    """

    def __init__(self, *, bandwidth: float | None = None, scale: float = DEFAULT_SCALE) -> None:
        self.bandwidth = bandwidth
        self.scale = scale
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []

    def reset(self) -> None:
        """Forget all accumulated embeddings."""
        self.real, self.fake = [], []

    def update(self, embeddings: object, real: bool) -> None:
        """Add a batch (n, dim) to the reference (``real=True``) or evaluated set."""
        arr = check_embeddings(embeddings, "embeddings")
        known = self.real + self.fake
        if known and arr.shape[1] != known[0].shape[1]:
            raise ValueError(f"embeddings have dim {arr.shape[1]}; earlier: {known[0].shape[1]}")
        (self.real if real else self.fake).append(arr)

    def compute(self) -> KADResult:
        """KAD(evaluated, reference) over everything accumulated so far."""
        if not self.real or not self.fake:
            raise ValueError("KAD needs both reference (real=True) and evaluated embeddings")
        return kernel_audio_distance(
            np.concatenate(self.fake), np.concatenate(self.real),
            bandwidth=self.bandwidth, scale=self.scale,
        )


# --- the registered metric (harness.score.metrics.registry) -----------------------------------

from harness.score.metrics.registry import Metric, MetricData, register  # noqa: E402


@register
class KADMetric(Metric):
    """Kernel audio distance; the bandwidth is the reference's median distance, fixed across resamples."""

    name = "kad"
    description = "kernel audio distance to the reference set (unbiased MMD^2 x 1000, Gaussian kernel)"
    formula = "1000 * MMD^2_u, k(a, b) = exp(-|a-b|^2 / (2 h^2)), h = median pairwise distance of the reference"

    def prepare(self, data: MetricData):
        y = data.rows(data.y[self.output])
        return {"y": y, "bandwidth": median_pairwise_distance(y)}

    def on_rows(self, state, data: MetricData, samples, reference) -> float:
        ys = state["y"] if reference is None else data.rows(data.y[self.output], reference)
        return kernel_audio_distance(data.rows(data.x[self.output], samples), ys,
                                     bandwidth=state["bandwidth"]).value

    def details(self, state, data: MetricData) -> dict:
        return {"bandwidth": state["bandwidth"], "scale": DEFAULT_SCALE}
