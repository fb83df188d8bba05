"""Decode-ahead embedding: the same embeddings, errors and cache contents as the inline path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.synthetic import synthetic_clips
from harness.score.embed.audio import Clip
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources
from harness.score.embed.registry import get_embedder


def _sources(n: int) -> list[AudioSource]:
    clips = [Clip(samples, 16000) for _, samples in synthetic_clips(n, duration_s=0.4)]
    sources = [AudioSource(f"clip{i}", (lambda c=c: c), c.sha256 if i % 2 else None) for i, c in enumerate(clips)]

    def broken() -> Clip:
        raise OSError("unreadable")

    sources[5] = AudioSource("broken", broken)
    sources[7] = AudioSource("changed", lambda c=clips[8]: c, clips[7].sha256)  # content differs from its key
    return sources


@pytest.mark.parametrize("chunk", [3, 64])
def test_overlapped_equals_inline(tmp_path, chunk):
    embedders = [get_embedder("mel"), get_embedder("tiny-pann")]
    sources = _sources(20)
    inline = embed_sources(sources, embedders, EmbeddingCache(tmp_path / "a"), chunk=chunk, workers=0)
    ahead = embed_sources(sources, embedders, EmbeddingCache(tmp_path / "b"), chunk=chunk, workers=3)
    assert ahead.errors == inline.errors and set(inline.errors) == {5, 7}
    assert "cannot decode broken" in inline.errors[5] and "changed since it was listed" in inline.errors[7]
    assert ahead.keys == inline.keys
    for e in embedders:
        for a, b in zip(inline.embeddings[e.name], ahead.embeddings[e.name]):
            assert (a is None and b is None) or np.array_equal(a, b)
        for output in e.output_dims():
            for a, b in zip(inline.outputs[e.name][output], ahead.outputs[e.name][output]):
                assert (a is None and b is None) or np.array_equal(a, b)
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npy"))  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b") and len(files(tmp_path / "a")) == 18 * 3
    again = embed_sources(sources, embedders, EmbeddingCache(tmp_path / "b"), chunk=chunk, workers=3)
    assert sum(again.computed.values()) == 0 and again.cached["mel"] == 18


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlapped_on_cuda_equals_inline_on_cpu(tmp_path, fp32_cuda):
    """The decode-ahead path with the embedders on cuda (as score --device cuda builds them) gives
    the CPU inline path's errors, keys, cache files and counts, embeddings (and logits) within 1e-4
    of their scale, and the same FAD figures to 1e-3 (n = 9 rows of 16 or 32 dims: ill-conditioned
    covariances amplify round-off)."""
    from harness.score.metrics import fad_from_embeddings
    from harness.score.scoring import build_embedder

    names = ["mel", "tiny-pann", "tiny-vggish", "tiny-passt", "tiny-clap"]
    sources = _sources(20)
    cpu = embed_sources(sources, [build_embedder(n, {}, "cpu") for n in names], EmbeddingCache(tmp_path / "a"),
                        chunk=3, workers=0)
    on_cuda = [build_embedder(n, {}, "cuda") for n in names]
    assert all(next(e.model.parameters()).device.type == "cuda" for e in on_cuda if e.name != "mel")
    cuda = embed_sources(sources, on_cuda, EmbeddingCache(tmp_path / "b"), chunk=3, workers=3)
    assert cuda.errors == cpu.errors and set(cpu.errors) == {5, 7} and cuda.keys == cpu.keys
    assert cuda.computed == cpu.computed and cuda.cached == cpu.cached
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npy"))  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b")
    for name in names:
        pairs = list(zip(cuda.embeddings[name], cpu.embeddings[name]))
        pairs += [p for output in cpu.outputs[name] for p in zip(cuda.outputs[name][output], cpu.outputs[name][output])]
        for a, b in pairs:
            assert (a is None) == (b is None)
            if b is not None:
                assert a.shape == b.shape and np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(b)), name
        rows = lambda result: [e.mean(axis=0) for e in result.embeddings[name] if e is not None]  # noqa: E731
        x, y = rows(cuda), rows(cpu)
        got, want = fad_from_embeddings(x[:9], x[9:]).value, fad_from_embeddings(y[:9], y[9:]).value
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6), name

