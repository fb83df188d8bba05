"""Embedders, their registry and the content-keyed embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from harness.data.synthetic import synthetic_clips
from harness.score.embed import EmbedderError, available, get_embedder
from harness.score.embed.audio import Clip
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources, embed_texts
from harness.score.embed.clap_window import clap_windows
from harness.score.embed.mel import frame_windows
from harness.score.metrics import fad_from_embeddings


@pytest.fixture(scope="module")
def tiny_clap():
    return get_embedder("tiny-clap")


def _noise(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def test_registry_lists_embedders_and_rejects_unknown_names_and_options():
    assert {"mel", "clap", "tiny-clap", "clap-window", "tiny-clap-window"} <= set(available())
    with pytest.raises(EmbedderError, match=r"unknown embedder 'vggish2'; valid: .*mel"):
        get_embedder("vggish2")
    with pytest.raises(EmbedderError, match="no option.*colour.*accepted: sample_rate"):
        get_embedder("mel", colour="red")


def test_mel_is_deterministic_with_documented_shapes():
    mel = get_embedder("mel")
    clip = _noise(3.0)
    first, again = mel.embed_audio([clip])[0], mel.embed_audio([clip])[0]
    assert first.dtype == np.float32 and first.shape == (5, 128)  # windows at 0, .5, 1, 1.5, 2 s
    assert np.array_equal(first, again)
    assert mel.embed_audio([clip[:8000]])[0].shape == (1, 128)  # shorter than a window: one window
    assert mel.embed_audio([clip[:100]])[0].shape == (1, 128)  # shorter than an STFT frame: padded
    assert get_embedder("mel").identity_key == mel.identity_key  # a fresh instance, same identity
    other = get_embedder("mel", n_mels=32)
    assert other.dim == 64 and other.identity_key != mel.identity_key
    assert set(mel.identity()) == {"name", "version", "weights_sha256", "dim", "preprocessing"}


def test_window_rules_cover_the_clip_without_randomness():
    assert frame_windows(50, 100, 50) == [(0, 50)]
    assert frame_windows(230, 100, 50) == [(0, 100), (50, 150), (100, 200), (130, 230)]
    w = 480000  # 10 s at 48 kHz
    clip = np.arange(int(10.24 * 48000), dtype=np.float32)
    starts = [int(x[0]) for x in clap_windows(clip, w)]
    assert starts == [0, 11520] and all(x.size == w for x in clap_windows(clip, w))
    assert len(clap_windows(clip[:w], w)) == 1 and len(clap_windows(np.zeros(25 * 48000), w)) == 3


def test_tiny_clap_gives_the_same_embedding_for_the_same_audio(tiny_clap):
    long_clip, short_clip = _noise(12.0, 48000, 1), _noise(0.5, 48000, 2)
    np.random.seed(1)
    a = tiny_clap.embed_audio([long_clip, short_clip])
    np.random.seed(2)
    b = tiny_clap.embed_audio([long_clip, short_clip])
    c = tiny_clap.embed_audio([short_clip, _noise(3.0, 48000, 3), long_clip])
    assert a[0].shape == (1, 16) and a[1].shape == (1, 16)  # laion_clap: one embedding per clip
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # Other batch neighbours change only float round-off in the batched matmuls.
    np.testing.assert_allclose(c[0], a[1], atol=1e-6)
    np.testing.assert_allclose(c[2], a[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a[0], axis=1), 1.0, rtol=1e-5)
    assert tiny_clap.embed_text(["a dog barks", "rain"]).shape == (2, 16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["tiny-clap", "tiny-clap-window"])
def test_tiny_clap_on_cuda_equals_cpu(name, cuda_embeds_like_cpu):
    """--device cuda: audio and text embeddings within 1e-4 of the CPU ones' scale (the log-mel front
    end is numpy on both; the network's float32 round-off measured against float64 is 1.3e-6)."""
    cuda, cpu = cuda_embeds_like_cpu(name, [Clip(samples, 16000) for _, samples in synthetic_clips(4, duration_s=2.0)])  # tone, chirp, noise, clicks
    texts = ["a dog barks", "rain on a tin roof"]
    got, want = cuda.embed_text(texts), cpu.embed_text(texts)
    assert got.shape == want.shape == (2, cpu.dim)
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_window_clap_never_takes_the_feature_extractors_random_paths():
    fused = get_embedder("tiny-clap-window", fusion=True)
    # What the stock call does: for a batch of short clips it marks a random one as "longer".
    picks = set()
    for seed in range(6):
        np.random.seed(seed)
        feats = fused.feature_extractor([np.full(1000, 0.1)] * 3, sampling_rate=48000, truncation="fusion")
        picks.add(tuple(bool(x[0]) for x in feats["is_longer"]))
    assert len(picks) > 1
    clips = [_noise(0.7, 48000, 4), _noise(11.0, 48000, 5)]
    outs = []
    for seed in (0, 1):
        np.random.seed(seed)
        outs.append(fused.embed_audio(clips))
    state = np.random.get_state()
    fused.embed_audio(clips)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG left alone
    assert all(np.array_equal(o[i], outs[0][i]) for o in outs for i in range(2))
    assert fused.identity_key != get_embedder("tiny-clap-window").identity_key


def test_clap_without_weights_names_the_model_and_how_to_get_it(tmp_path):
    with pytest.raises(EmbedderError, match=r"cannot load CLAP model nobody/no-such-clap.*hf download nobody/no-such"):
        get_embedder("clap", model="nobody/no-such-clap")
    with pytest.raises(EmbedderError, match=str(tmp_path / "missing")):
        get_embedder("clap", model=str(tmp_path / "missing"))


def test_clap_loads_a_local_folder_with_the_same_identity_parts(tiny_clap, tmp_path):
    folder = tmp_path / "clap"
    for part in (tiny_clap.model, tiny_clap.tokenizer, tiny_clap.feature_extractor):
        part.save_pretrained(folder)
    loaded = get_embedder("clap", model=str(folder))
    assert loaded.source()["model"] == str(folder)
    # Checksums of the state dict and tokenizer do not depend on how the model was obtained.
    assert loaded.identity()["weights_sha256"] == tiny_clap.identity()["weights_sha256"]
    assert loaded.identity()["preprocessing"] == tiny_clap.identity()["preprocessing"]
    clip = _noise(1.0, 48000)
    np.testing.assert_allclose(loaded.embed_audio([clip])[0], tiny_clap.embed_audio([clip])[0], atol=1e-6)
    np.testing.assert_allclose(loaded.embed_text(["a dog"]), tiny_clap.embed_text(["a dog"]), atol=1e-6)


def _wav(path, clip, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, clip)
    return path


def _source(path):
    return AudioSource(str(path), lambda: Clip.from_file(path))


def test_cache_is_keyed_by_content_and_embedder_identity(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    mel = get_embedder("mel")
    clip = _noise(1.5)
    first = embed_sources([_source(_wav(tmp_path / "a.wav", clip))], [mel], cache)
    assert first.computed["mel"] == 1 and cache.writes == 1
    # The same samples at another path, in a file with other bytes (libsndfile adds a PEAK chunk).
    import soundfile as sf

    other_file = tmp_path / "sub" / "renamed.wav"
    other_file.parent.mkdir()
    sf.write(other_file, clip, 16000, subtype="FLOAT")
    assert other_file.read_bytes() != (tmp_path / "a.wav").read_bytes()
    moved = embed_sources([_source(other_file)], [mel], cache)
    assert moved.computed["mel"] == 0 and moved.cached["mel"] == 1
    assert np.array_equal(moved.embeddings["mel"][0], first.embeddings["mel"][0])
    changed = clip.copy()
    changed[100] += 1e-3
    assert embed_sources([_source(_wav(tmp_path / "b.wav", changed))], [mel], cache).computed["mel"] == 1
    other = get_embedder("mel", hop_s=0.25)
    assert embed_sources([_source(tmp_path / "a.wav")], [other], cache).computed["mel"] == 1
    # A damaged cache file is a miss, recomputed and rewritten.
    cache.path(mel.identity_key, first.keys[0]).write_bytes(b"not npy")
    again = embed_sources([_source(tmp_path / "a.wav")], [mel], cache)
    assert again.computed["mel"] == 1 and np.array_equal(again.embeddings["mel"][0], first.embeddings["mel"][0])
    assert (cache.root / mel.identity_key / "identity.json").is_file()


def test_one_decode_and_one_resample_per_rate_feed_several_embedders(tmp_path, monkeypatch):
    import soxr

    calls = []
    real = soxr.resample
    monkeypatch.setattr(soxr, "resample", lambda x, a, b, **kw: calls.append((a, b)) or real(x, a, b, **kw))
    loads = []
    path = _wav(tmp_path / "c.wav", _noise(1.0, 22050), 22050)

    def load():
        loads.append(1)
        return Clip.from_file(path)

    embedders = [get_embedder("mel"), get_embedder("mel", n_mels=40)]  # both at 16 kHz
    res = embed_sources([AudioSource("c", load)], embedders, EmbeddingCache(tmp_path / "cache"))
    assert loads == [1] and calls == [(22050, 16000)]
    assert res.embeddings["mel"][0].shape[1] in (128, 80) and not res.errors


def test_unreadable_source_is_reported_not_dropped(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    res = embed_sources([_source(bad), _source(_wav(tmp_path / "ok.wav", _noise(1.0)))],
                        [get_embedder("mel")], None)
    assert res.embeddings["mel"][0] is None and "cannot decode" in res.errors[0]
    assert res.embeddings["mel"][1] is not None


def test_text_embeddings_are_cached_per_text(tiny_clap, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    a = embed_texts(["rain", "a dog", "rain"], tiny_clap, cache)
    assert a.shape == (3, 16) and np.array_equal(a[0], a[2]) and cache.writes == 2
    b = embed_texts(["a dog", "rain"], tiny_clap, cache)
    assert cache.writes == 2 and np.array_equal(b[0], a[1])


def test_mel_fad_rises_monotonically_with_added_noise():
    mel = get_embedder("mel")
    clips = [c for _, c in synthetic_clips(24, seed=0)]
    ref = np.stack([e.mean(axis=0) for e in mel.embed_audio(clips)]).astype(np.float64)
    fads = []
    for level in (0.0, 0.003, 0.03, 0.3):
        rng = np.random.default_rng(1)
        noisy = [(c + level * rng.standard_normal(c.size)).astype(np.float32) for c in clips]
        x = np.stack([e.mean(axis=0) for e in mel.embed_audio(noisy)]).astype(np.float64)
        fads.append(fad_from_embeddings(x, ref).value)
    assert fads[0] < 1e-2  # identical sets: 0 up to round-off of a rank-deficient covariance
    assert all(b > a * 1.1 for a, b in zip(fads, fads[1:])), fads
