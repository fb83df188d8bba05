"""stable-audio-metrics' formulas: FD_openl3 against its scipy ``sqrtm`` statistics on pooled frames,
KL_passt against torch's ``kl_div`` the way ``src/passt_kld.py`` calls it, and the CLAP embedder's
peak normalisation option."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from harness.score.embed.audio import peak_normalize
from harness.score.embed.registry import get_embedder
from harness.score.metrics.stable_audio import (fd_openl3, kl_passt, kl_passt_divergences, passt_probabilities,
                                                pooled_frames)


def _reference_fd(frames_x: list[np.ndarray], frames_y: list[np.ndarray]) -> float:
    """openl3_fd.py: concatenate frames, np.mean / np.cov, pytorch-fid's sqrtm formula."""
    stats = []
    for frames in (frames_x, frames_y):
        rows = np.concatenate(frames, axis=0)
        stats.append((np.mean(rows, axis=0), np.cov(rows, rowvar=False)))
    (mu1, s1), (mu2, s2) = stats
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _clips(rng, n_clips, dim, shift=0.0):
    return [rng.normal(shift, 1.0, (int(rng.integers(3, 22)), dim)) for _ in range(n_clips)]


def test_fd_openl3_equals_the_reference_statistics_on_pooled_frames():
    rng = np.random.default_rng(0)
    x, y = _clips(rng, 12, 16, 0.3), _clips(rng, 9, 16)
    assert pooled_frames(x).shape == (sum(c.shape[0] for c in x), 16)
    assert float(fd_openl3(x, y)) == pytest.approx(_reference_fd(x, y), rel=1e-9)
    # clip-mean pooling (one row per clip) is a different figure: frames are the samples
    assert float(fd_openl3([c.mean(0, keepdims=True) for c in x], [c.mean(0, keepdims=True) for c in y])) != \
        pytest.approx(float(fd_openl3(x, y)), rel=1e-2)


def test_faked_stereo_rows_double_the_distance():
    # a mono file in channels=2 mode gives rows [e, e]: every term of FD doubles (closed form)
    rng = np.random.default_rng(1)
    x, y = _clips(rng, 10, 8, 0.2), _clips(rng, 10, 8)
    mono = float(fd_openl3(x, y))
    stereo = float(fd_openl3([np.hstack([c, c]) for c in x], [np.hstack([c, c]) for c in y]))
    assert stereo == pytest.approx(2 * mono, rel=1e-7)


def _reference_kl(gen: list[np.ndarray], ref: list[np.ndarray], collect: str) -> float:
    """passt_kld.py: stack window logits, collect, softmax; F.kl_div((ref + 1e-6).log(), gen, 'sum'), mean."""
    def probs(windows):
        t = torch.from_numpy(windows.astype(np.float32))
        t = t.mean(dim=0) if collect == "mean" else t.max(dim=0).values
        return F.softmax(t, dim=0)

    total = sum(F.kl_div((probs(r) + 1e-6).log(), probs(g), reduction="sum", log_target=False)
                for g, r in zip(gen, ref))
    return float(total) / len(gen)


@pytest.mark.parametrize("collect", ["mean", "max"])
def test_kl_passt_equals_torch_kl_div_as_the_reference_calls_it(collect):
    rng = np.random.default_rng(2)
    gen = [rng.normal(0, 2, (int(rng.integers(1, 4)), 527)) for _ in range(7)]
    ref = [rng.normal(0, 2, (int(rng.integers(1, 4)), 527)) for _ in range(7)]
    assert kl_passt(gen, ref, collect) == pytest.approx(_reference_kl(gen, ref, collect), rel=2e-5)  # torch float32


def test_kl_passt_direction_and_a_hand_computed_case():
    # two classes, one window each: p_gen = softmax([0, log 3]) = (1/4, 3/4), p_ref = (1/2, 1/2)
    gen, ref = [np.array([[0.0, np.log(3.0)]])], [np.array([[0.0, 0.0]])]
    expected = 0.25 * (np.log(0.25) - np.log(0.5 + 1e-6)) + 0.75 * (np.log(0.75) - np.log(0.5 + 1e-6))
    assert kl_passt(gen, ref) == pytest.approx(expected, rel=1e-12)
    swapped = 0.5 * (np.log(0.5) - np.log(0.25 + 1e-6)) + 0.5 * (np.log(0.5) - np.log(0.75 + 1e-6))
    assert kl_passt(ref, gen) == pytest.approx(swapped, rel=1e-12)  # KL(generated || reference): not symmetric
    np.testing.assert_allclose(passt_probabilities(np.array([[0.0, 2.0], [2.0, 0.0]])), [0.5, 0.5])
    np.testing.assert_allclose(kl_passt_divergences(gen + ref, ref + ref), [expected, 0.0], atol=2e-6)
    with pytest.raises(ValueError, match="paired"):
        kl_passt_divergences(gen, ref + ref)


def test_clap_peak_normalisation_option_is_stable_audio_metrics_input():
    plain, peaked = get_embedder("tiny-clap"), get_embedder("tiny-clap", peak_dbfs=-1.0)
    clip = np.random.default_rng(3).normal(0, 0.05, 48000).astype(np.float32)
    np.testing.assert_allclose(peaked.embed_audio([clip])[0],
                               plain.embed_audio([peak_normalize(clip, -1.0).astype(np.float32)])[0], atol=1e-6)
    assert not np.allclose(peaked.embed_audio([clip])[0], plain.embed_audio([clip])[0], atol=1e-4)
    assert "peak_normalize_dbfs" not in plain.identity()["preprocessing"]  # existing cache keys unchanged
    assert peaked.identity_key != plain.identity_key
