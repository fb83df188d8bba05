"""Pure-math evaluation metrics: FAD, KAD, CLAP score and bootstrap uncertainty.

No I/O and no knowledge of the run store or of AudioLDM 2: callers pass embedding arrays
((n, dim), float64 internally) and get small result dataclasses back. Each metric has a plain
function form and a torchmetrics-style class (``update(...)`` / ``compute()`` / ``reset()``)
built on it. For set metrics taking ``(x, y)``, ``x`` is the evaluated (generated) set and
``y`` the reference set.
"""

from harness.score.metrics.bootstrap import (
    BootstrapResult,
    PairedBootstrapResult,
    PermutationResult,
    bootstrap_ci,
    paired_bootstrap,
    permutation_test_sets,
    set_metric_ci,
)
from harness.score.metrics.clap_score import CLAPScore, clap_score, clap_scores
from harness.score.metrics.frechet import (
    FADInfResult,
    FrechetAudioDistance,
    FrechetResult,
    GaussianStats,
    fad_from_embeddings,
    fad_inf,
    frechet_distance,
    gaussian_stats,
    mahalanobis_scores,
)
from harness.score.metrics.kad import (
    KADResult,
    KernelAudioDistance,
    kernel_audio_distance,
    median_pairwise_distance,
)

__all__ = [
    "BootstrapResult",
    "CLAPScore",
    "FADInfResult",
    "FrechetAudioDistance",
    "FrechetResult",
    "GaussianStats",
    "KADResult",
    "KernelAudioDistance",
    "PairedBootstrapResult",
    "PermutationResult",
    "bootstrap_ci",
    "clap_score",
    "clap_scores",
    "fad_from_embeddings",
    "fad_inf",
    "frechet_distance",
    "gaussian_stats",
    "kernel_audio_distance",
    "mahalanobis_scores",
    "median_pairwise_distance",
    "paired_bootstrap",
    "permutation_test_sets",
    "set_metric_ci",
]
