"""KL divergence between paired classifier outputs, as audioldm_eval 0.0.3 computes it.

For each generated clip i paired with its reference clip (the reference clip of the same
prompt), with classifier logits g_i (generated) and r_i (reference), 527 AudioSet classes for
PANN CNN14:

    kl_softmax_i = sum_c p_c (log p_c - log(q_c + EPS)),   p = softmax(r_i), q = softmax(g_i)
    kl_sigmoid_i = sum_c s_c (log s_c - log(t_c + EPS)),   s = sigmoid(r_i), t = sigmoid(g_i)

KL(reference || generated), summed over classes, EPS = 1e-6 added to the generated
probabilities only (as audioldm_eval's ``torch.nn.functional.kl_div((q + EPS).log(), p)``, where
a term with p_c = 0 is 0). The metric is the mean over pairs. The sigmoid form treats each class
as an independent Bernoulli but, like audioldm_eval, keeps only the p log(p / q) half of each
Bernoulli KL, so it is not a divergence and can be negative. Several generated clips of one prompt each pair with that prompt's reference clip.
Computed in float64 (audioldm_eval works in float32; the difference is round-off).
"""

from __future__ import annotations

import numpy as np

from harness.score.metrics.frechet import check_embeddings

__all__ = ["KL_EPS", "kl_divergences", "log_softmax", "sigmoid"]

KL_EPS = 1e-6


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, shifted by the row maximum so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function without overflow for large |logits|."""
    out = np.empty_like(logits)
    pos = logits >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logits[pos]))
    e = np.exp(logits[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _kl_terms(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row sum of p (log p - log(q + EPS)), with 0 log 0 = 0 as torch's kl_div."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q + KL_EPS)), 0.0)
    return terms.sum(axis=1)


def kl_divergences(generated_logits: object, reference_logits: object, kind: str = "softmax") -> np.ndarray:
    """Per-pair KL(reference || generated) of row i of both logit arrays; ``kind``: softmax or sigmoid."""
    g = check_embeddings(generated_logits, "generated_logits")
    r = check_embeddings(reference_logits, "reference_logits")
    if g.shape != r.shape:
        raise ValueError(f"generated and reference logits must be paired rows of one shape; got {g.shape} and {r.shape}")
    if kind == "softmax":
        return _kl_terms(np.exp(log_softmax(r)), np.exp(log_softmax(g)))
    if kind == "sigmoid":
        return _kl_terms(sigmoid(r), sigmoid(g))
    raise ValueError(f"unknown KL kind {kind!r}; valid: softmax, sigmoid")


# --- the registered metrics (harness.score.metrics.registry) ----------------------------------

from harness.score.metrics.registry import Metric, MetricData, register  # noqa: E402


class _PairedKL(Metric):
    output = "logits"
    needs = frozenset({"embeddings", "paired_reference"})
    kind = "mean"
    kl_kind = "softmax"

    def check(self, data: MetricData) -> None:
        if data.pair is None and not data.aligned:
            raise ValueError(f"{self.name} needs a paired reference (--pair-by) or a baseline cell")
        if data.n == 0:
            raise ValueError("no sample has a paired reference clip")

    def per_sample(self, data: MetricData) -> np.ndarray:
        ref = data.pair if data.pair is not None else list(range(data.n))
        g = np.concatenate([np.asarray(a, dtype=np.float64).reshape(1, -1) for a in data.x[self.output]])
        r = np.concatenate([np.asarray(data.y[self.output][j], dtype=np.float64).reshape(1, -1) for j in ref])
        return kl_divergences(g, r, self.kl_kind)

    def details(self, scores, data: MetricData) -> dict:
        return {"per_sample": [[p, s, round(float(v), 6)] for (p, s), v in zip(data.keys, scores)],
                "std": float(np.std(scores)), "eps": KL_EPS, "direction": "KL(reference || generated)"}


@register
class KLSoftmaxMetric(_PairedKL):
    """audioldm_eval's ``kullback_leibler_divergence_softmax`` on classifier logits."""

    name = "kl_softmax"
    description = "KL(reference || generated) of softmax class probabilities per pair, mean over pairs"
    formula = "mean_i sum_c p_c (log p_c - log(q_c + 1e-6)), p = softmax(ref_i), q = softmax(gen_i)"
    kl_kind = "softmax"


@register
class KLSigmoidMetric(_PairedKL):
    """audioldm_eval's ``kullback_leibler_divergence_sigmoid`` on classifier logits."""

    name = "kl_sigmoid"
    description = "KL(reference || generated) of sigmoid class probabilities per pair, mean over pairs"
    formula = "mean_i sum_c s_c (log s_c - log(t_c + 1e-6)), s = sigmoid(ref_i), t = sigmoid(gen_i)"
    kl_kind = "sigmoid"
