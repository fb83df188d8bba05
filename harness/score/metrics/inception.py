"""Inception Score on classifier logits, as audioldm_eval 0.0.3 (``calculate_isc``) computes it.

Rows are shuffled with ``np.random.RandomState(seed).permutation(n)`` (audioldm_eval: seed
2020), then cut into ``splits`` (10) consecutive chunks ``[i n // splits, (i + 1) n // splits)``.
Per chunk, with p = softmax(logits) per row and its chunk mean q,

    IS_chunk = exp( mean_rows sum_c p_c (log p_c - log q_c) ),

and the score is the mean of the chunks' values, with their standard deviation (ddof 0).
Higher is better (confident and diverse class predictions). Float64 throughout, as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.score.metrics.frechet import check_embeddings
from harness.score.metrics.kl import log_softmax

__all__ = ["IS_SEED", "IS_SPLITS", "InceptionScoreResult", "inception_score"]

IS_SPLITS = 10
IS_SEED = 2020


@dataclass(frozen=True)
class InceptionScoreResult:
    """Mean and standard deviation of the per-split scores."""

    mean: float
    std: float
    splits: tuple[float, ...]


def inception_score(logits: object, *, splits: int = IS_SPLITS, seed: int | None = IS_SEED) -> InceptionScoreResult:
    """Inception Score of (n, classes) logits; ``seed=None`` keeps the row order (no shuffle)."""
    x = check_embeddings(logits, "logits", min_rows=1)
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"inception score with {splits} splits needs >= {splits} clips; have {n}")
    if seed is not None:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(x)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0, keepdims=True)
        scores.append(float(np.exp((p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1).mean())))
    return InceptionScoreResult(float(np.mean(scores)), float(np.std(scores)), tuple(scores))


# --- the registered metric (harness.score.metrics.registry) -----------------------------------

from harness.score.metrics.registry import Metric, MetricData, register  # noqa: E402


@register
class InceptionScoreMetric(Metric):
    """audioldm_eval's ``inception_score_mean`` (its std over splits in the details)."""

    name = "inception_score"
    description = "Inception Score of the classifier's softmax outputs (10 splits, shuffled with seed 2020)"
    formula = "mean over 10 splits of exp(mean_i KL(p_i || mean_split p)), p = softmax(logits)"
    output = "logits"
    needs = frozenset({"embeddings"})
    higher_is_better = True

    def check(self, data: MetricData) -> None:
        if data.n < IS_SPLITS:
            raise ValueError(f"inception_score needs >= {IS_SPLITS} samples (one per split); have {data.n}")

    def prepare(self, data: MetricData):
        return data.rows(data.x[self.output])

    def on_rows(self, state, data: MetricData, samples, reference) -> float:
        return inception_score(state[samples]).mean

    def details(self, state, data: MetricData) -> dict:
        res = inception_score(state)
        return {"std": res.std, "splits": list(res.splits), "n_splits": IS_SPLITS, "shuffle_seed": IS_SEED}
