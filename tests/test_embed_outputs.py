"""PANN's class logits beside its embedding (cached), the audioldm-eval front ends, and VGGish
pooling: each checked against an independent computation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.io import wavfile

from harness.score.embed.audio import pcm16_round_trip
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources
from harness.score.embed.audio import Clip
from harness.score.embed.pann import TinyPannEmbedder
from harness.score.embed.vggish import TinyVggishEmbedder
from harness.score.metrics.registry import MetricData


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(16000 * seconds)) + 0.05).astype(np.float32)


def test_pann_logits_are_the_audioset_head_of_the_embedding_and_are_cached(tmp_path):
    pann = TinyPannEmbedder()
    clips = [_clip(1.0), _clip(0.2, 1)]
    embeddings, extras = pann.embed_audio_outputs(clips)
    assert pann.output_dims() == {"logits": 10}
    head = pann.model.fc_audioset
    for e, logits in zip(embeddings, extras["logits"]):
        with torch.no_grad():
            expected = head(torch.from_numpy(e)).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pann.embed_audio(clips)[0], embeddings[0])

    path = tmp_path / "a.wav"
    wavfile.write(path, 16000, clips[0])
    cache = EmbeddingCache(tmp_path / "cache")
    source = [AudioSource(str(path), lambda: Clip.from_file(path))]
    first = embed_sources(source, [pann], cache)
    again = embed_sources(source, [pann], cache)
    assert first.computed["tiny-pann"] == 1 and again.cached["tiny-pann"] == 1 and not again.computed
    np.testing.assert_array_equal(again.outputs["tiny-pann"]["logits"][0], first.outputs["tiny-pann"]["logits"][0])
    # A cache entry without its logits is a miss: everything is recomputed together.
    cache.path(pann.identity_key, first.keys[0], "logits").unlink()
    assert embed_sources(source, [pann], cache).computed["tiny-pann"] == 1


def test_pcm16_round_trip_equals_a_16_bit_file():
    x = np.concatenate([_clip(0.1), [1.0, -1.0, 1.5, -2.0, 0.5 / 32768]]).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
    buf.seek(0)
    expected = sf.read(buf, dtype="float32")[0]  # what torchaudio / soundfile give for the file
    np.testing.assert_array_equal(pcm16_round_trip(x, 16000), expected)
    assert np.all(np.abs(pcm16_round_trip(x, 16000) - np.clip(x, -1, 1)) <= 1 / 32768 + 1e-9)


def test_audioldm_eval_front_ends():
    clip = _clip(1.0)
    plain, aeval = TinyPannEmbedder(), TinyPannEmbedder(frontend="audioldm-eval")
    assert plain.identity_key != aeval.identity_key and "frontend" not in plain.preprocessing()
    # audioldm_eval's WaveDataset: 16-bit samples, mean removed, zero-padded to 32000 samples.
    x = pcm16_round_trip(clip, 16000)
    x = np.pad(x - x.mean(), (0, 32000 - x.size))
    with torch.no_grad():
        expected = plain.model(torch.from_numpy(x[None].astype(np.float32))).numpy()
    np.testing.assert_allclose(aeval.embed_audio([clip])[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.embed_audio([clip])[0], expected, atol=1e-4)

    v_plain, v_aeval = TinyVggishEmbedder(), TinyVggishEmbedder(frontend="audioldm-eval")
    np.testing.assert_array_equal(v_aeval.embed_audio([clip])[0], v_plain.embed_audio([pcm16_round_trip(clip, 16000)])[0])
    with pytest.raises(Exception, match="unknown frontend 'x'"):
        TinyPannEmbedder(frontend="x")


def test_vggish_pooling_frames_by_default_and_clip_mean_as_option():
    frames, mean = TinyVggishEmbedder(), TinyVggishEmbedder(pooling="clip-mean")
    assert frames.pooling == "frames" and mean.pooling == "clip-mean"
    assert frames.identity()["preprocessing"]["pooling"] == "frames" and frames.identity_key != mean.identity_key
    arrays = frames.embed_audio([_clip(3.0), _clip(2.0, 1)])  # 3 and 2 examples of 0.96 s
    assert [a.shape[0] for a in arrays] == [3, 2]
    pooled = MetricData({"embedding": arrays}, ["a", "b"], [("a", 0), ("b", 0)], pooling="frames")
    np.testing.assert_array_equal(pooled.rows(arrays), np.concatenate(arrays).astype(np.float64))
    averaged = MetricData({"embedding": arrays}, ["a", "b"], [("a", 0), ("b", 0)], pooling="clip-mean")
    np.testing.assert_allclose(averaged.rows(arrays), np.stack([a.mean(axis=0) for a in arrays]), rtol=1e-6)
    with pytest.raises(Exception, match="unknown pooling"):
        TinyVggishEmbedder(pooling="max")


def test_conv_stft_kernels_and_spectrogram_match_closed_forms():
    from harness.score.embed.pann import torchlibrosa_dft_kernels

    real, imag = torchlibrosa_dft_kernels()
    n, k = np.arange(512), np.arange(257)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 512)  # periodic
    np.testing.assert_allclose(real[:, 0], hann * np.cos(2 * np.pi * k * n / 512), atol=2e-6)
    np.testing.assert_allclose(imag[:, 0], -hann * np.sin(2 * np.pi * k * n / 512), atol=2e-6)
    model = TinyPannEmbedder().model
    audio = torch.from_numpy(_clip(0.7)[None])
    fft = model.power_spectrogram(audio)
    model.conv_stft = True
    conv = model.power_spectrogram(audio)
    assert conv.shape == fft.shape
    np.testing.assert_allclose(conv.numpy(), fft.numpy(), rtol=1e-4, atol=1e-6 * float(fft.max()))
