"""Tests for harness.score.metrics.clap_score: cosine against torch and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.score.metrics.clap_score import CLAPScore, clap_score, clap_scores


@pytest.mark.parametrize("n,dim", [(1, 3), (17, 512), (64, 1024)])
def test_matches_torch_cosine_similarity(n, dim):
    rng = np.random.default_rng(n + dim)
    text = rng.standard_normal((n, dim))
    audio = rng.standard_normal((n, dim)) + 0.5 * text
    expected = torch.nn.functional.cosine_similarity(
        torch.from_numpy(text), torch.from_numpy(audio), dim=1
    ).numpy()
    np.testing.assert_allclose(clap_scores(text, audio), expected, rtol=1e-12, atol=1e-15)
    assert clap_score(text, audio) == pytest.approx(float(expected.mean()), rel=1e-12)


def test_hand_computed_cases():
    # Last two rows: norms that would under- / overflow if squared directly.
    text = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1e200, -1e200]])
    audio = np.array(
        [[2.0, 0.0], [-5.0, 0.0], [0.0, 7.0], [4.0, 3.0], [1e-200, 1e-200], [1.0, 0.0]]
    )
    expected = np.array([1.0, -1.0, 0.0, 24.0 / 25.0, 1.0, np.sqrt(0.5)])
    np.testing.assert_allclose(clap_scores(text, audio), expected, rtol=1e-15, atol=1e-15)
    assert clap_score(text, audio) == pytest.approx(expected.mean(), rel=1e-15)


def test_scale_invariance_and_float32_input():
    rng = np.random.default_rng(0)
    t, a = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    np.testing.assert_allclose(clap_scores(3e5 * t, 1e-5 * a), clap_scores(t, a), rtol=1e-13)
    out = clap_scores(t.astype(np.float32), a.astype(np.float32))
    assert out.dtype == np.float64


def test_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(2, 4\)"):
        clap_scores(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 5\)"):
        clap_scores(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="2-D"):
        clap_scores(np.ones(4), np.ones(4))


def test_zero_rows_and_non_finite_raise():
    with pytest.raises(ValueError, match=r"audio_emb has zero-norm row\(s\) \[1\]"):
        clap_scores(np.ones((2, 3)), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="text_emb contains"):
        clap_scores(np.array([[np.inf, 1.0]]), np.ones((1, 2)))


def test_streaming_class():
    rng = np.random.default_rng(1)
    t, a = rng.standard_normal((30, 16)), rng.standard_normal((30, 16))
    metric = CLAPScore()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    for ts, as_ in zip(np.array_split(t, 4), np.array_split(a, 4)):
        metric.update(ts, as_)
    np.testing.assert_array_equal(metric.scores(), clap_scores(t, a))
    assert metric.compute() == pytest.approx(clap_score(t, a), rel=1e-14)
    metric.reset()
    assert metric.scores().size == 0
