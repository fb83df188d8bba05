"""KL divergences and Inception Score against audioldm_eval 0.0.3's formulas (re-typed here in
torch, as its kl.py and isc.py compute them) and against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.score.metrics.inception import inception_score
from harness.score.metrics.kl import kl_divergences


def _audioldm_eval_kl(gen: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """audioldm_eval/metrics/kl.py: (kl_softmax, kl_sigmoid), features_1 = generated."""
    eps = 1e-6
    f1, f2 = torch.from_numpy(gen), torch.from_numpy(ref)
    soft = torch.nn.functional.kl_div((f1.softmax(dim=1) + eps).log(), f2.softmax(dim=1), reduction="sum") / len(f1)
    sig = torch.nn.functional.kl_div((f1.sigmoid() + eps).log(), f2.sigmoid(), reduction="sum") / len(f1)
    return float(soft), float(sig)


def _audioldm_eval_isc(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """audioldm_eval/metrics/isc.py (samples_shuffle=True)."""
    features = torch.from_numpy(logits)
    n = features.shape[0]
    features = features[np.random.RandomState(seed).permutation(n), :].double()
    p, log_p = features.softmax(dim=1), features.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        pc, lpc = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        q = pc.mean(dim=0, keepdim=True)
        scores.append((pc * (lpc - q.log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_kl_matches_audioldm_eval(scale):
    rng = np.random.default_rng(int(scale * 10))
    gen, ref = rng.normal(0, scale, (37, 527)), rng.normal(0, scale, (37, 527))
    soft, sig = _audioldm_eval_kl(gen, ref)
    assert np.mean(kl_divergences(gen, ref, "softmax")) == pytest.approx(soft, rel=1e-10)
    assert np.mean(kl_divergences(gen, ref, "sigmoid")) == pytest.approx(sig, rel=1e-10)


def test_kl_hand_computed_and_direction():
    # Two classes, logits (0, log 3) -> p = (1/4, 3/4); generated (0, 0) -> q = (1/2, 1/2).
    ref, gen = np.array([[0.0, math.log(3.0)]]), np.zeros((1, 2))
    expected = 0.25 * (math.log(0.25) - math.log(0.5 + 1e-6)) + 0.75 * (math.log(0.75) - math.log(0.5 + 1e-6))
    assert kl_divergences(gen, ref, "softmax")[0] == pytest.approx(expected, rel=1e-12)
    reverse = 0.5 * (math.log(0.5) - math.log(0.25 + 1e-6)) + 0.5 * (math.log(0.5) - math.log(0.75 + 1e-6))
    assert kl_divergences(ref, gen, "softmax")[0] == pytest.approx(reverse, rel=1e-12)  # not symmetric
    # sigmoid: each class its own p log(p / (q + eps)) term; sigmoid(0) = 1/2, sigmoid(log 3) = 3/4.
    sig = 0.5 * (math.log(0.5) - math.log(0.5 + 1e-6)) + 0.75 * (math.log(0.75) - math.log(0.5 + 1e-6))
    assert kl_divergences(gen, ref, "sigmoid")[0] == pytest.approx(sig, rel=1e-12)
    # Identical outputs: only the EPS offset remains (slightly negative).
    same = kl_divergences(ref, ref, "softmax")[0]
    assert -1e-5 < same < 0
    with pytest.raises(ValueError, match="paired rows"):
        kl_divergences(gen, np.zeros((2, 2)))


def test_inception_score_matches_audioldm_eval_and_closed_forms():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, (53, 527))
    res = inception_score(logits)
    mean, std = _audioldm_eval_isc(logits)
    assert res.mean == pytest.approx(mean, rel=1e-12) and res.std == pytest.approx(std, rel=1e-12)
    # Identical predictions: every KL to the mean is 0 -> IS = 1 exactly.
    assert inception_score(np.tile(rng.normal(size=(1, 5)), (20, 1))).mean == pytest.approx(1.0, abs=1e-12)
    # Confident one-hot predictions spread evenly over k classes within each split -> IS = k.
    onehot = np.full((40, 4), -60.0)
    onehot[np.arange(40), np.arange(40) % 4] = 60.0
    assert inception_score(onehot, splits=10, seed=None).mean == pytest.approx(4.0, rel=1e-9)
    with pytest.raises(ValueError, match="needs >= 10 clips"):
        inception_score(logits[:5])
