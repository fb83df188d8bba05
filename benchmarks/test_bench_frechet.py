"""FAD at d=2048 from 4,000 embeddings per side: harness symmetric-eigenvalue form vs sqrtm.

The reference is frechet-audio-distance's ``calculate_frechet_distance`` formula, written out here
because that package pins numpy<2 and cannot be installed next to this project. Two groups:

* ``fad-distance-d2048``: the distance alone, from precomputed (mu, sigma) shared by all
  (reference; harness default, which takes the Cholesky route here; harness eigh route);
* ``fad-end-to-end-d2048``: from embeddings, each side computing its own statistics
  (reference: ``np.mean`` / ``np.cov`` as frechet-audio-distance does; ours: ``gaussian_stats``).

The sqrtm reference takes tens of seconds at d=2048, so each function runs ``FAD_BENCH_ROUNDS``
rounds (default 3). Reference tests run first and leave their timings and value in ``_SEEN``; the
matching harness test checks the value (relative 1e-9) and records the speed-up in
``benchmark.extra_info``: median ratio and the range min(ref)/max(ours) .. max(ref)/min(ours).

Run: ``python -m pytest benchmarks/test_bench_frechet.py -q``
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.score.metrics.frechet import fad_from_embeddings, frechet_distance
from harness.testing.oracles import sqrtm_frechet_distance

DIM = 2048
N = 4000
ROUNDS = int(os.environ.get("FAD_BENCH_ROUNDS", "3"))
REL_TOL = 1e-9

_SEEN: dict[str, tuple[float, list[float]]] = {}


reference_frechet = sqrtm_frechet_distance  # frechet-audio-distance's formula


def reference_end_to_end(x, y) -> float:
    """frechet-audio-distance's statistics (np.mean, np.cov) followed by its distance."""
    return reference_frechet(x.mean(axis=0), np.cov(x, rowvar=False),
                             y.mean(axis=0), np.cov(y, rowvar=False))


@pytest.fixture(scope="module")
def embeddings() -> tuple[np.ndarray, np.ndarray]:
    """Two correlated sets with decaying spectra (like real audio embeddings), distinct laws."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    spectrum = 1.0 / (1.0 + np.arange(DIM)) ** 0.8
    x = (rng.standard_normal((N, DIM)) * np.sqrt(spectrum)) @ q.T
    # The second set: a perturbed spectrum, a partly rotated basis and a mean shift.
    q2, _ = np.linalg.qr(q + 0.3 * rng.standard_normal((DIM, DIM)) / np.sqrt(DIM))
    y = (rng.standard_normal((N, DIM)) * np.sqrt(spectrum * rng.uniform(0.5, 1.5, DIM))) @ q2.T
    return x, y + 0.01 * rng.standard_normal(DIM)


@pytest.fixture(scope="module")
def moments(embeddings):
    """(mu1, sigma1, mu2, sigma2) computed once, as frechet-audio-distance does."""
    x, y = embeddings
    return x.mean(axis=0), np.cov(x, rowvar=False), y.mean(axis=0), np.cov(y, rowvar=False)


def _round_times(benchmark) -> list[float]:
    # Empty under --benchmark-disable, where the target runs once untimed.
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    return list(stats.data) if stats else []


def _record(benchmark, key: str, value: float, run_reference) -> None:
    """Check ``value`` against the reference run of ``key`` and record the speed-up."""
    ref_value, ref_times = _SEEN.get(key) or (run_reference(), [])
    rel = abs(value - ref_value) / abs(ref_value)
    benchmark.extra_info["value"] = value
    benchmark.extra_info["reference_value"] = ref_value
    benchmark.extra_info["rel_diff_vs_reference"] = rel
    ours = _round_times(benchmark)
    if ref_times and ours:
        benchmark.extra_info["speedup_median"] = float(np.median(ref_times) / np.median(ours))
        benchmark.extra_info["speedup_low"] = min(ref_times) / max(ours)
        benchmark.extra_info["speedup_high"] = max(ref_times) / min(ours)
    assert rel <= REL_TOL, f"harness FAD {value!r} vs reference {ref_value!r}: rel {rel:.3g}"


def test_distance_reference_sqrtm(benchmark, moments):
    benchmark.group = "fad-distance-d2048"
    value = benchmark.pedantic(reference_frechet, args=moments, rounds=ROUNDS, iterations=1)
    _SEEN["distance"] = (value, _round_times(benchmark))


def test_distance_harness(benchmark, moments):
    benchmark.group = "fad-distance-d2048"
    result = benchmark.pedantic(frechet_distance, args=moments, rounds=ROUNDS, iterations=1)
    assert result.ok, result.warnings
    benchmark.extra_info["condition"] = result.condition
    benchmark.extra_info["route"] = result.method
    _record(benchmark, "distance", result.value, lambda: reference_frechet(*moments))


def test_distance_harness_eigh_route(benchmark, moments):
    # The eigh route (used when both covariances are singular), forced here to time it too.
    benchmark.group = "fad-distance-d2048"
    result = benchmark.pedantic(frechet_distance, args=moments, kwargs={"method": "eigh"},
                                rounds=ROUNDS, iterations=1)
    assert result.ok, result.warnings
    benchmark.extra_info["route"] = result.method
    _record(benchmark, "distance", result.value, lambda: reference_frechet(*moments))


def test_end_to_end_reference_sqrtm(benchmark, embeddings):
    benchmark.group = "fad-end-to-end-d2048"
    value = benchmark.pedantic(reference_end_to_end, args=embeddings, rounds=ROUNDS, iterations=1)
    _SEEN["end-to-end"] = (value, _round_times(benchmark))


def test_end_to_end_harness(benchmark, embeddings):
    benchmark.group = "fad-end-to-end-d2048"
    result = benchmark.pedantic(fad_from_embeddings, args=embeddings, rounds=ROUNDS, iterations=1)
    assert result.ok, result.warnings
    _record(benchmark, "end-to-end", result.value, lambda: reference_end_to_end(*embeddings))
