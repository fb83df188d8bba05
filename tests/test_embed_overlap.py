"""Decode-ahead embedding: the same embeddings, errors and cache contents as the inline path."""

from __future__ import annotations

import numpy as np
import pytest

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
