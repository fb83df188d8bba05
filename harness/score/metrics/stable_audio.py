"""The stable-audio-metrics protocol's formulas (Stability-AI/stable-audio-metrics ``src/``), pure numpy.

Three figures, each equal to the reference code's on the same embeddings or logits:

* ``fd_openl3`` (``src/openl3_fd.py``): every OpenL3 frame of every clip is one row
  (``extract_embeddings`` concatenates the per-file frame arrays along axis 0);
  ``calculate_embd_statistics`` takes ``np.mean(axis=0)`` and ``np.cov(rowvar=False)`` (ddof 1)
  of those rows; ``calculate_frechet_distance`` is pytorch-fid's ``|mu1 - mu2|^2 + tr(S1) + tr(S2)
  - 2 tr sqrtm(S1 S2)``. The harness evaluates the trace-sqrt term through its symmetric
  eigenvalue form (``harness.score.metrics.frechet``), equal to scipy's ``sqrtm`` to round-off.
  Generated and reference sets are unpaired; frames, not clips, are the samples.
* ``kl_passt`` (``src/passt_kld.py``): per clip, PaSST's 527 logits of each 10 s window
  (``harness.score.embed.passt.passt_windows``) are collapsed by their ``mean``
  (``collect="mean"``, what every example uses; ``"max"`` is the alternative), then ``softmax``
  over classes (not sigmoid: as MusicGen's KLD, the reference's docstring says). Per pair:
  ``F.kl_div((p_ref + 1e-6).log(), p_gen, reduction="sum")`` = ``sum_c p_gen (log p_gen -
  log(p_ref + 1e-6))``: KL(generated || reference), the eps on the reference side. This is the
  opposite direction from audioldm_eval's ``kl_softmax`` (KL(reference || generated), eps on the
  generated side). The figure is the mean over pairs (generated and reference clip of one id).
* ``clap_score`` (``src/clap_score.py``): per clip, the cosine between the LAION-CLAP text
  embedding of its prompt and the audio embedding of the clip loaded at 48 kHz, peak-normalised
  to -1 dBFS and passed through laion's int16 round trip (x32767, truncation, /32767); the
  figure is the mean cosine. Checkpoint: ``630k-audioset-fusion-best.pt`` (fusion) in both the
  AudioCaps and the MusicCaps examples (the music checkpoints are options there, never used by
  the examples); its transformers conversion is ``laion/clap-htsat-fused``, the ``clap``
  embedder's default. In the harness: the ``clap`` embedder with ``peak_dbfs=-1.0``; the cosine is
  ``harness.score.metrics.clap_score.clap_scores``.

Variants (the reference's ``examples/audiocaps.py`` and ``examples/musiccaps.py``): ``VARIANTS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.score.metrics.frechet import FrechetResult, check_embeddings, frechet_distance, gaussian_stats

__all__ = ["COLLECTS", "KL_EPS", "PROTOCOL", "PROTOCOL_VERSION", "VARIANTS", "fd_openl3", "kl_passt",
           "kl_passt_divergences", "passt_probabilities", "pooled_frames"]

PROTOCOL = "stable-audio-metrics"
# Bump when a formula or a setting below changes, so stored figures of the old rules are not mixed in.
PROTOCOL_VERSION = "1"
KL_EPS = 1e-6
COLLECTS = ("mean", "max")

# What each reference example sets. openl3: channels=2 (1024-d rows; a mono file is faked to
# stereo), samplingrate=44100 (the bandwidth before openl3's own 48 kHz resampling), hop 0.5 s,
# content type by dataset; passt: collect="mean"; clap: the fusion checkpoint, peak -1 dBFS.
VARIANTS: dict[str, dict[str, dict]] = {
    "audiocaps": {"openl3": {"content_type": "env", "channels": 2}, "passt": {"collect": "mean"},
                  "clap": {"checkpoint": "630k-audioset-fusion-best.pt", "model": "laion/clap-htsat-fused",
                           "peak_dbfs": -1.0}},
    "musiccaps": {"openl3": {"content_type": "music", "channels": 2}, "passt": {"collect": "mean"},
                  "clap": {"checkpoint": "630k-audioset-fusion-best.pt", "model": "laion/clap-htsat-fused",
                           "peak_dbfs": -1.0}},
}


def pooled_frames(per_clip: Sequence[np.ndarray]) -> np.ndarray:
    """All frame rows of all clips as one (total_frames, dim) float64 array, in clip order."""
    if len(per_clip) == 0:
        raise ValueError("no clips to pool")
    rows = [np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1]) for a in per_clip]
    widths = {r.shape[1] for r in rows}
    if len(widths) != 1:
        raise ValueError(f"clips have embeddings of different widths: {sorted(widths)}")
    return np.concatenate(rows)


def fd_openl3(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> FrechetResult:
    """Fréchet distance between the pooled OpenL3 frames of two clip sets (stable-audio-metrics' FD_openl3)."""
    x = check_embeddings(pooled_frames(generated), "generated frames", min_rows=2)
    y = check_embeddings(pooled_frames(reference), "reference frames", min_rows=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"generated and reference frames differ in width: {x.shape[1]} vs {y.shape[1]}")
    mu_x, s_x = gaussian_stats(x)
    mu_y, s_y = gaussian_stats(y)
    return frechet_distance(mu_x, s_x, mu_y, s_y, n1=x.shape[0], n2=y.shape[0])


def passt_probabilities(window_logits: np.ndarray, collect: str = "mean") -> np.ndarray:
    """Softmax over classes of one clip's window logits (n_windows, classes) collapsed by ``collect``."""
    if collect not in COLLECTS:
        raise ValueError(f"unknown collect {collect!r}; valid: {', '.join(COLLECTS)}")
    logits = np.asarray(window_logits, dtype=np.float64)
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.shape[0] == 0:
        raise ValueError("a clip has no PaSST window")
    pooled = logits.mean(axis=0) if collect == "mean" else logits.max(axis=0)
    shifted = np.exp(pooled - pooled.max())
    return shifted / shifted.sum()


def kl_passt_divergences(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                         collect: str = "mean") -> np.ndarray:
    """Per pair i: KL(p_gen_i || p_ref_i) = sum_c p_gen (log p_gen - log(p_ref + 1e-6)), as passt_kld.py."""
    if len(generated) != len(reference):
        raise ValueError("generated and reference must be paired clip lists; "
                         f"got {len(generated)} and {len(reference)}")
    out = np.empty(len(generated))
    for i, (g, r) in enumerate(zip(generated, reference)):
        p, q = passt_probabilities(g, collect), passt_probabilities(r, collect)
        if p.shape != q.shape:
            raise ValueError(f"pair {i}: {p.size} classes against {q.size}")
        with np.errstate(divide="ignore", invalid="ignore"):  # torch's kl_div: a 0 target adds 0
            out[i] = np.where(p > 0, p * (np.log(p) - np.log(q + KL_EPS)), 0.0).sum()
    return out


def kl_passt(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray], collect: str = "mean") -> float:
    """stable-audio-metrics' KL_passt: the mean over pairs of ``kl_passt_divergences``."""
    if len(generated) == 0:
        raise ValueError("no pairs to compare")
    return float(kl_passt_divergences(generated, reference, collect).mean())


# --- the registered metric (harness.score.metrics.registry) -----------------------------------
from harness.score.metrics.kl import _PairedKL  # noqa: E402
from harness.score.metrics.registry import MetricData, register  # noqa: E402


@register
class KLPasstMetric(_PairedKL):
    """stable-audio-metrics' KL_passt: PaSST window logits averaged per clip, softmax, paired."""

    name = "kl_passt"
    description = "KL(generated || reference) of PaSST class probabilities per pair, mean over pairs"
    formula = ("mean_i sum_c p_c (log p_c - log(q_c + 1e-6)), p = softmax(mean_w gen_i,w), "
               "q = softmax(mean_w ref_i,w)")
    collect = "mean"

    def per_sample(self, data: MetricData) -> np.ndarray:
        # One (windows, classes) array per clip: clips are not flattened to one row as _PairedKL does.
        ref = data.pair if data.pair is not None else list(range(data.n))
        return kl_passt_divergences(data.x[self.output], [data.y[self.output][j] for j in ref], self.collect)

    def details(self, scores, data: MetricData) -> dict:
        return {**super().details(scores, data), "direction": "KL(generated || reference)",
                "collect": self.collect}
