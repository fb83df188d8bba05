"""Embedding throughput of 200 stored clips (10.24 s WAVs at 16 kHz): decoding and resampling
inline, in order, against decode-ahead threads plus a cache-writer thread, for `mel` and
`tiny-clap` (whose 48 kHz input needs a resampling step), in one session. ``extra_info`` has
clips per second; the group's relative column is the ratio.
Run: OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_embed_overlap.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from harness.score.embed.audio import Clip
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources
from harness.score.embed.registry import get_embedder

N_CLIPS = 200


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for i in range(N_CLIPS):
        wavfile.write(root / f"{i:03d}.wav", 16000, (0.1 * rng.standard_normal(163840)).astype(np.float32))
    return sorted(root.glob("*.wav"))


@pytest.mark.parametrize("embedder", ["mel", "tiny-clap"])
@pytest.mark.parametrize("mode", ["overlapped", "inline"])
def test_embedding_throughput(benchmark, clip_files, embedder, mode):
    benchmark.group = f"embed {N_CLIPS} clips of 10.24 s with {embedder}"
    e = get_embedder(embedder)
    sources = [AudioSource(str(p), lambda p=p: Clip.from_file(p)) for p in clip_files]

    def embed():
        root = Path(tempfile.mkdtemp())
        try:
            return embed_sources(sources, [e], EmbeddingCache(root), workers=2 if mode == "overlapped" else 0)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    result = benchmark.pedantic(embed, rounds=2, iterations=1, warmup_rounds=0)
    assert result.computed[embedder] == N_CLIPS and not result.errors
    benchmark.extra_info["clips_per_s"] = N_CLIPS / benchmark.stats.stats.median
