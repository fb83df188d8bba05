"""Tests for harness.score.metrics.frechet: FAD vs the sqrtm reference, closed forms, conditioning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.score.metrics.frechet import (
    FrechetAudioDistance,
    GaussianStats,
    fad_from_embeddings,
    fad_inf,
    frechet_distance,
    gaussian_stats,
    mahalanobis_scores,
)
from harness.testing.oracles import sqrtm_frechet_distance


reference_frechet = sqrtm_frechet_distance  # frechet-audio-distance's formula


def random_spd(rng: np.random.Generator, dim: int, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    """A random covariance with eigenvalues spread over [lo, hi] (condition number hi / lo)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    s = (q * rng.uniform(lo, hi, dim)) @ q.T
    return (s + s.T) / 2


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# sqrtm takes ~2.5 s at d=512 on 2 cores, hence a single draw there.
@pytest.mark.parametrize("dim,draws", [(8, 5), (64, 3), (512, 1)])
def test_matches_sqrtm_reference_on_well_conditioned_moments(dim, draws):
    rng = np.random.default_rng(dim)
    for _ in range(draws):
        mu1, mu2 = rng.normal(0, 0.5, dim), rng.normal(0, 0.5, dim)
        s1, s2 = random_spd(rng, dim), random_spd(rng, dim, 0.1, 3.0)
        ours = frechet_distance(mu1, s1, mu2, s2)
        assert ours.ok, ours.warnings
        assert rel(ours.value, reference_frechet(mu1, s1, mu2, s2)) <= 1e-9


@pytest.mark.parametrize("dim", [8, 64, 512])
def test_matches_sqrtm_reference_on_embeddings(dim):
    # Covariances estimated from data (np.cov, as frechet-audio-distance does), 4 rows per dim.
    rng = np.random.default_rng(100 + dim)
    n = 4 * dim
    x = rng.standard_normal((n, dim)) @ random_spd(rng, dim)
    y = rng.standard_normal((n, dim)) * rng.uniform(0.5, 1.5, dim) + rng.normal(0, 0.2, dim)
    ours = fad_from_embeddings(x, y)
    ref = reference_frechet(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert rel(ours.value, ref) <= 1e-9
    assert (ours.n1, ours.n2, ours.dim) == (n, n, dim)


def test_gaussian_stats_matches_numpy_cov():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 40)) + 3.0
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-13, atol=1e-14)
    assert np.array_equal(sigma, sigma.T)


@pytest.mark.parametrize("dim", [1, 16, 256])
def test_identical_gaussians_give_zero(dim):
    rng = np.random.default_rng(dim)
    mu, s = rng.normal(size=dim), random_spd(rng, dim)
    assert abs(frechet_distance(mu, s, mu, s).value) <= 1e-9


@pytest.mark.parametrize("dim,a,b", [(1, 1.0, 2.0), (32, 0.3, 1.7), (256, 2.5, 0.5)])
def test_isotropic_closed_form(dim, a, b):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    res = frechet_distance(mu1, a * a * np.eye(dim), mu2, b * b * np.eye(dim))
    expected = float(np.sum((mu1 - mu2) ** 2)) + dim * (a - b) ** 2
    assert rel(res.value, expected) <= 1e-12


@pytest.mark.parametrize("dim", [4, 128])
def test_diagonal_closed_form(dim):
    rng = np.random.default_rng(dim)
    d1, d2 = rng.uniform(0.01, 5.0, dim), rng.uniform(0.01, 5.0, dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    res = frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2))
    expected = float(np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2) + np.sum((mu1 - mu2) ** 2))
    assert rel(res.value, expected) <= 1e-12


def _exact_singular_fd(x: np.ndarray, y: np.ndarray) -> float:
    """FD via a small Gram matrix: eig(S1 S2) minus zeros = eig(A S2 A^T), S1 = A^T A, A (n1, d)."""
    mx, sx = x.mean(0), np.cov(x, rowvar=False)
    my, sy = y.mean(0), np.cov(y, rowvar=False)
    small, other = ((x, mx), sy) if len(x) <= len(y) else ((y, my), sx)
    a = (small[0] - small[1]) / math.sqrt(small[0].shape[0] - 1)
    lam = np.linalg.eigvalsh(a @ other @ a.T)
    lam = lam[lam > lam.max() * 1e-12]  # the centring null direction
    return float((mx - my) @ (mx - my) + np.trace(sx) + np.trace(sy) - 2 * np.sum(np.sqrt(lam)))


@pytest.mark.parametrize(
    "n1,n2,dim,route",
    [(50, 60, 128, "eigh"), (20, 20, 64, "eigh"), (100, 700, 512, "cholesky"),
     (300, 100, 256, "cholesky")],
)
def test_fewer_samples_than_dims_is_real_nonnegative_accurate_and_flagged(n1, n2, dim, route):
    rng = np.random.default_rng(n1 + dim)
    x = rng.standard_normal((n1, dim)) * rng.uniform(0.5, 2.0, dim)
    y = rng.standard_normal((n2, dim))
    res = fad_from_embeddings(x, y)
    assert isinstance(res.value, float) and math.isfinite(res.value) and res.value >= 0.0
    # Exact to round-off even though S1 S2 is singular (the sqrtm reference is off by ~1e-8).
    assert rel(res.value, _exact_singular_fd(x, y)) <= 1e-12
    assert res.method == route
    assert not res.ok
    assert res.rank <= min(n1, n2) - 1 < dim
    assert res.condition == math.inf
    small = "n1" if n1 <= n2 else "n2"
    assert any(f"{small}={min(n1, n2)} samples for dim={dim}" in w for w in res.warnings)
    assert any("numerically singular" in w for w in res.warnings)


@pytest.mark.parametrize("dim", [3, 64, 300])
def test_cholesky_and_eigh_routes_agree(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = random_spd(rng, dim, 1e-3, 10.0), random_spd(rng, dim)
    auto = frechet_distance(mu1, s1, mu2, s2)
    forced = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert (auto.method, forced.method) == ("cholesky", "eigh")
    assert rel(auto.value, forced.value) <= 1e-12
    assert auto.condition == pytest.approx(forced.condition, rel=1e-6)
    assert auto.rank == forced.rank == dim
    with pytest.raises(ValueError, match="method"):
        frechet_distance(mu1, s1, mu2, s2, method="sqrtm")


def test_same_singular_set_gives_zero_not_negative():
    x = np.random.default_rng(3).standard_normal((40, 200))
    res = fad_from_embeddings(x, x.copy())
    assert res.value == 0.0
    assert abs(res.raw_value) <= 1e-9
    assert not any("clamped" in w for w in res.warnings)  # round-off only, not an error


def test_near_singular_moments_never_negative_or_complex():
    rng = np.random.default_rng(7)
    dim = 64
    base = rng.standard_normal((dim, 5))
    s = base @ base.T + 1e-14 * np.eye(dim)  # rank 5 plus dust
    for other in (s, s * (1 + 1e-12), random_spd(rng, dim)):
        res = frechet_distance(np.zeros(dim), s, np.zeros(dim), other)
        assert isinstance(res.value, float) and res.value >= 0.0
        assert res.rank < dim and not res.ok


def test_not_psd_input_is_flagged_not_hidden():
    dim = 6
    indefinite = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, -0.5])
    # sigma1 positive definite: Cholesky route, the negative eigenvalue shows up in L^T S2 L.
    res = frechet_distance(np.zeros(dim), np.eye(dim), np.zeros(dim), indefinite)
    assert res.value >= 0.0 and res.method == "cholesky"
    assert any("sigma2 is not positive semidefinite" in w for w in res.warnings)
    # Neither side positive definite: eigh route, sigma1's own eigenvalues are checked.
    singular = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    res = frechet_distance(np.zeros(dim), indefinite, np.zeros(dim), singular)
    assert res.value >= 0.0 and res.method == "eigh"
    assert any("sigma1 has eigenvalue -0.5" in w for w in res.warnings)


@pytest.mark.parametrize(
    "bad,name",
    [("mu1", "mu1"), ("mu2", "mu2"), ("sigma1", "sigma1"), ("sigma2", "sigma2")],
)
def test_non_finite_input_raises_naming_it(bad, name):
    dim = 4
    args = {"mu1": np.zeros(dim), "sigma1": np.eye(dim), "mu2": np.ones(dim), "sigma2": np.eye(dim)}
    args[bad] = args[bad].copy()
    args[bad].flat[1] = np.nan if bad.startswith("mu") else np.inf
    with pytest.raises(ValueError, match=name):
        frechet_distance(args["mu1"], args["sigma1"], args["mu2"], args["sigma2"])


def test_non_finite_embeddings_raise_naming_them():
    x = np.ones((10, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        fad_from_embeddings(x, np.ones((10, 3)))


def test_shape_and_symmetry_checks():
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    asym = np.eye(3)
    asym[0, 1] = 0.5
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(np.zeros(3), asym, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="differ in dim"):
        fad_from_embeddings(np.ones((5, 3)), np.ones((5, 4)))


def test_streaming_class_matches_function():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((230, 24)) + 0.3
    y = rng.standard_normal((170, 24)) * 1.2
    fad = FrechetAudioDistance()
    for chunk in np.array_split(x, 7):
        fad.update(chunk, real=False)
    for chunk in np.array_split(y, 3):
        fad.update(chunk, real=True)
    res = fad.compute()
    ref = fad_from_embeddings(x, y)
    assert rel(res.value, ref.value) <= 1e-12
    assert (res.n1, res.n2) == (230, 170)

    cached = FrechetAudioDistance()
    cached.set_reference(*gaussian_stats(y), n=170)
    cached.update(x, real=False)
    assert rel(cached.compute().value, ref.value) <= 1e-12

    fad.reset()
    with pytest.raises(ValueError, match="at least 2 generated"):
        fad.compute()


def test_streaming_stats_stable_with_large_mean():
    # Raw second moments would cancel here (|mu|^2 ~ 1e12 vs variance ~ 1).
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1000, 8)) + 1e6
    stats = GaussianStats()
    for chunk in np.array_split(x, 10):
        stats.update(chunk)
    np.testing.assert_allclose(stats.cov, np.cov(x - 1e6, rowvar=False), rtol=1e-8, atol=1e-8)
    assert stats.n == 1000 and stats.dim == 8


def _fad_inf_data(seed: int):
    d = 32
    s = np.linspace(0.5, 2.0, d)
    delta = np.full(d, 0.05)
    truth = float(delta @ delta + np.sum((np.sqrt(s) - 1.0) ** 2))
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((50_000, d))
    x = rng.standard_normal((20_000, d)) * np.sqrt(s) + delta
    return x, y, truth


def test_fad_inf_extrapolates_toward_population_value():
    x, y, truth = _fad_inf_data(seed=0)
    ns = np.linspace(100, 2000, 20).astype(int)
    # One subset per size (as fadtk) makes a single intercept noisy; average over draws.
    runs = [fad_inf(x, y, ns=ns, seed=s) for s in range(10)]
    inf = np.mean([r.value for r in runs])
    fad_at_max = np.mean([r.fads[-1] for r in runs])
    # FAD(n) ~ truth + b/n: the largest subset still carries visible bias; the intercept less.
    assert all(r.value < r.fads[-1] for r in runs)
    assert abs(inf - truth) < 0.3 * (fad_at_max - truth)
    assert all(r.slope > 0 and r.r2 > 0.9 for r in runs)
    assert runs[0].ns == tuple(sorted(int(n) for n in ns))


def test_fad_inf_is_deterministic_given_seed():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((600, 8)) + 0.2, rng.standard_normal((800, 8))
    a = fad_inf(x, y, seed=3)
    assert a == fad_inf(x, y, seed=3)
    assert a.fads != fad_inf(x, y, seed=4).fads
    assert a.ns[-1] == 600 and a.ns[0] == 300  # default sizes: min(500, N/2) .. N
    # At n = N without replacement the subset is the whole set.
    assert a.fads[-1] == pytest.approx(fad_from_embeddings(x, y).value, rel=1e-12)
    assert a.value <= a.fads[-1]
    assert fad_inf(x, y, ns=[100, 400, 1000], seed=0, replace=True).replace


def test_fad_inf_rejects_bad_sizes():
    x, y = np.ones((50, 2)) * np.arange(50)[:, None], np.eye(2).repeat(5, 0)
    with pytest.raises(ValueError, match="2 distinct"):
        fad_inf(x, y, ns=[10, 10])
    with pytest.raises(ValueError, match="without replacement"):
        fad_inf(x, y, ns=[10, 60])


def test_mahalanobis_scores_full_rank_and_pseudo_inverse():
    rng = np.random.default_rng(2)
    dim = 6
    sigma, mu = random_spd(rng, dim), rng.normal(size=dim)
    x = rng.normal(size=(9, dim))
    diff = x - mu
    expected = np.sqrt(np.einsum("ij,ij->i", diff, np.linalg.solve(sigma, diff.T).T))
    np.testing.assert_allclose(mahalanobis_scores(x, mu, sigma), expected, rtol=1e-12)

    v = rng.normal(size=(dim, 3))
    singular = v @ v.T
    expected = np.sqrt(np.einsum("ij,ij->i", diff, diff @ np.linalg.pinv(singular, rcond=1e-10)))
    np.testing.assert_allclose(mahalanobis_scores(x, mu, singular), expected, rtol=1e-9)
    assert mahalanobis_scores(mu[None, :], mu, sigma)[0] == 0.0
