"""CLAP score: cosine similarity between paired text and audio embeddings.

Row i of the text embeddings is the prompt of the clip in row i of the audio embeddings. The
score is the raw cosine in [-1, 1] (no x100, no clamping at 0, no (s + 1) / 2 remapping; papers
differ on these, so apply any such convention when reporting, not here).
"""

from __future__ import annotations

import numpy as np

from harness.score.metrics.frechet import check_embeddings

__all__ = ["CLAPScore", "clap_score", "clap_scores"]


def clap_scores(text_emb: object, audio_emb: object) -> np.ndarray:
    """Per-pair cosine similarity of rows ``text_emb[i]`` and ``audio_emb[i]``; shape (n,)."""
    t = check_embeddings(text_emb, "text_emb")
    a = check_embeddings(audio_emb, "audio_emb")
    if t.shape != a.shape:
        raise ValueError(
            "text_emb and audio_emb must have the same shape (paired rows); "
            f"got {t.shape} and {a.shape}"
        )
    return np.einsum("ij,ij->i", _unit_rows(t, "text_emb"), _unit_rows(a, "audio_emb"))


def _unit_rows(m: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit length; raises on zero rows."""
    # Divide by the largest |entry| first so that squaring can neither overflow nor underflow
    # (a row of 1e-200s would otherwise get norm 0, one of 1e200s norm inf).
    peak = np.max(np.abs(m), axis=1)
    zero = np.flatnonzero(peak == 0.0)
    if zero.size:
        # A zero row has no direction; torch's eps clamp would silently score it 0, which hides
        # a broken embedding (e.g. of an all-zero clip) inside an average.
        raise ValueError(f"{name} has zero-norm row(s) {zero[:10].tolist()}: cosine undefined")
    u = m / peak[:, None]
    return u / np.linalg.norm(u, axis=1)[:, None]


def clap_score(text_emb: object, audio_emb: object) -> float:
    """Mean of ``clap_scores`` over all pairs."""
    return float(np.mean(clap_scores(text_emb, audio_emb)))


class CLAPScore:
    """Streaming CLAP score: ``update(text_emb, audio_emb)`` per batch, then ``compute()``.

    Keeps the per-pair scores (not the embeddings), so ``scores()`` can feed a paired bootstrap.
    """

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []

    def reset(self) -> None:
        """Forget all accumulated pairs."""
        self._scores = []

    def update(self, text_emb: object, audio_emb: object) -> None:
        """Score a batch of paired (n, dim) text and audio embeddings."""
        self._scores.append(clap_scores(text_emb, audio_emb))

    def scores(self) -> np.ndarray:
        """All per-pair scores so far, in update order."""
        return np.concatenate(self._scores) if self._scores else np.empty(0)

    def compute(self) -> float:
        """Mean cosine over all pairs so far."""
        if not self._scores:
            raise ValueError("CLAPScore.compute() called before any update()")
        return float(np.mean(self.scores()))


# --- the registered metric (harness.score.metrics.registry) -----------------------------------

from harness.score.metrics.registry import Metric, MetricData, register  # noqa: E402


@register
class CLAPScoreMetric(Metric):
    """Mean cosine of each sample's audio and the text of its own prompt (paired by sample rows)."""

    name = "clap_score"
    description = "CLAP score: cosine of each sample's audio embedding and its own prompt's text embedding"
    formula = "mean_i cos(text(prompt_i), audio_i), raw cosine in [-1, 1]"
    needs = frozenset({"embeddings", "text"})
    kind = "mean"
    higher_is_better = True

    def check(self, data: MetricData) -> None:
        if data.n == 0:
            raise ValueError("no samples to score")

    def per_sample(self, data: MetricData) -> np.ndarray:
        return clap_scores(data.texts, data.rows(data.x[self.output]))

    def details(self, scores, data: MetricData) -> dict:
        return {"per_sample": [[p, s, round(float(v), 6)] for (p, s), v in zip(data.keys, scores)],
                "std": float(np.std(scores))}
