"""PANN (CNN14) and VGGish embedders: published architectures, front ends against independent
computations, checkpoint files in the published layouts, and the fixed window rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.score.embed.pann import PannEmbedder, build_cnn14
from harness.score.embed.registry import EmbedderError, get_embedder
from harness.score.embed.vggish import VggishEmbedder, build_vggish, vggish_examples, vggish_mel_matrix
from harness.generate.run import run_sweep
from harness.score.scoring import score_run


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def test_cnn14_is_the_published_architecture():
    model = build_cnn14()
    assert sum(p.numel() for p in model.parameters()) == 80_753_615  # PANNs' Cnn14 (paper, Table)
    expected = [*_bn("bn0")]
    for i in range(1, 7):
        expected += [f"conv_block{i}.conv1.weight", f"conv_block{i}.conv2.weight",
                     *_bn(f"conv_block{i}.bn1"), *_bn(f"conv_block{i}.bn2")]
    expected += ["fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias"]
    assert sorted(model.state_dict()) == sorted(expected)


def test_vggish_is_the_published_architecture():
    model = build_vggish()
    assert sum(p.numel() for p in model.parameters()) == 72_141_184  # torchvggish's VGGish
    convs = [0, 3, 6, 8, 11, 13]
    expected = [f"features.{i}.{k}" for i in convs for k in ("weight", "bias")]
    expected += [f"embeddings.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")]
    assert list(model.state_dict()) == expected


def _slaney_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale and area normalisation, written out (librosa's default)."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000.0, f / (200.0 / 3), 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        return np.where(m < 15.0, m * 200.0 / 3, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27))

    hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for i in range(n_mels):
        up = (freqs - hz[i]) / (hz[i + 1] - hz[i])
        down = (hz[i + 2] - freqs) / (hz[i + 2] - hz[i + 1])
        out[:, i] = np.maximum(0, np.minimum(up, down)) * 2.0 / (hz[i + 2] - hz[i])
    return out


def test_pann_front_end_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 16000 + 123).astype(np.float32)
    got = build_cnn14(widths=(4, 4, 4, 4, 4, 4)).log_mel(torch.from_numpy(audio[None]))[0, 0].numpy()
    x = np.pad(audio.astype(np.float64), 256, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    expected = 10 * np.log10(np.maximum(power @ _slaney_mel_filters(16000, 512, 64, 50, 8000), 1e-10))
    assert got.shape == expected.shape == (1 + (16000 + 123) // 160, 64)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # dB, float32 STFT


def test_vggish_front_end_matches_tensorflow_mel_weights_and_framing():
    from transformers.audio_utils import mel_filter_bank

    reference = mel_filter_bank(num_frequency_bins=257, num_mel_filters=64, min_frequency=125, max_frequency=7500,
                                sampling_rate=16000, norm=None, mel_scale="htk", triangularize_in_mel_space=True)
    np.testing.assert_allclose(vggish_mel_matrix(), reference, atol=1e-12)
    rng = np.random.default_rng(1)
    three = vggish_examples(rng.normal(0, 0.1, 3 * 16000))  # 298 frames -> 3 whole examples
    assert three.shape == (3, 96, 64)
    clip = rng.normal(0, 0.1, 16000)
    frame = clip[160 * 5: 160 * 5 + 400] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    by_hand = np.log(np.abs(np.fft.rfft(frame, 512)) @ reference + 0.01)
    np.testing.assert_allclose(vggish_examples(clip)[0, 5], by_hand, atol=1e-10)
    assert vggish_examples(np.ones(100)).shape == (1, 96, 64)  # too short: padded to one example


@pytest.mark.parametrize("name, rows_for_3s", [("tiny-pann", 1), ("tiny-vggish", 3)])
def test_window_rules_are_fixed_and_independent_of_batch_neighbours(name, rows_for_3s):
    embedder = get_embedder(name)
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 0.1, 3 * 16000).astype(np.float32), rng.normal(0, 0.1, 16000).astype(np.float32)
    alone = embedder.embed_audio([a])[0]
    together = embedder.embed_audio([b, a, b])
    assert alone.shape == (rows_for_3s, embedder.dim)
    np.testing.assert_allclose(together[1], alone, rtol=1e-5, atol=1e-6)
    assert np.array_equal(embedder.embed_audio([a])[0], alone)
    assert get_embedder(name).identity_key == embedder.identity_key  # seeded: same weights
    assert embedder.embed_audio([np.full(1000, 0.1, np.float32)])[0].shape == (1, embedder.dim)  # 62 ms: padded
    assert get_embedder(name, seed=1).identity_key != embedder.identity_key


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["tiny-pann", "tiny-vggish"])
def test_tiny_models_on_cuda_equal_cpu(name, cuda_embeds_like_cpu):
    """--device cuda: embeddings (and PANN's logits) within 1e-4 of the CPU ones' scale. A 1e-7
    relative perturbation of the input moves them by at most 5e-6 (PANN's on-device log-mel)."""
    from harness.data.synthetic import synthetic_clips
    from harness.score.embed.audio import Clip

    cuda_embeds_like_cpu(name, [Clip(samples, 16000) for _, samples in synthetic_clips(4, duration_s=2.0)])


def test_pann_loads_a_checkpoint_in_the_published_layout(tmp_path):
    model = build_cnn14()
    state = {"spectrogram_extractor.stft.conv_real.weight": torch.zeros(257, 1, 512),  # torchlibrosa's kernels
             "logmel_extractor.melW": model.mel_filters.clone(), **model.state_dict()}
    torch.save({"model": state, "iteration": 1}, tmp_path / "Cnn14_16k.pth")
    embedder = PannEmbedder(weights=str(tmp_path / "Cnn14_16k.pth"))
    audio = np.random.default_rng(3).normal(0, 0.1, 16000).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(audio[None])).numpy()
    np.testing.assert_allclose(embedder.embed_audio([audio])[0], expected, rtol=1e-5, atol=1e-6)
    assert embedder.dim == 2048

    state["logmel_extractor.melW"] = state["logmel_extractor.melW"] * 2
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(EmbedderError, match="different logmel_extractor.melW"):
        PannEmbedder(weights=str(tmp_path / "other.pth"))
    torch.save({"model": {"fc1.weight": torch.zeros(3, 3)}}, tmp_path / "wrong.pth")
    with pytest.raises(EmbedderError, match="does not fit the model"):
        PannEmbedder(weights=str(tmp_path / "wrong.pth"))


def test_vggish_loads_torchvggish_weights(tmp_path):
    model = build_vggish()
    torch.save(model.state_dict(), tmp_path / "vggish.pth")
    embedder = VggishEmbedder(weights=str(tmp_path / "vggish.pth"))
    audio = np.random.default_rng(4).normal(0, 0.1, 2 * 16000).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(vggish_examples(audio)[:, None].astype(np.float32))).numpy()
    np.testing.assert_allclose(embedder.embed_audio([audio])[0], expected, rtol=1e-5, atol=1e-6)
    assert embedder.dim == 128


@pytest.mark.parametrize("name, what", [("pann", "Cnn14_16k_mAP=0.438.pth"), ("vggish", "vggish-10086976.pth")])
def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path, name, what, monkeypatch):
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(EmbedderError) as err:
        get_embedder(name)
    message = str(err.value)
    assert what in message and "wget" in message and str(tmp_path) in message and "\n" not in message


def test_score_with_the_tiny_model_embedders(make_sweep, tmp_path):
    from harness.data.synthetic import write_synthetic_reference

    run = tmp_path / "run"
    run_sweep(make_sweep(audio_lengths_s=[1.0]), run, progress=False)
    write_synthetic_reference(tmp_path / "ref", 6)
    scored = score_run(run, str(tmp_path / "ref"), "tiny-pann,tiny-vggish", metrics=["fad"], bootstrap=20,
                       cache_dir=tmp_path / "cache")
    assert sorted(r["embedder"] for r in scored.rows) == ["tiny-pann", "tiny-vggish"]
    for r in scored.rows:
        assert r["n"] == 4 and np.isfinite(r["value"]) and r["details"]["embedder_identity"]["name"] == r["embedder"]
    with pytest.raises(ValueError, match="weights are given for pann"):
        score_run(run, str(tmp_path / "ref"), "mel", weights={"pann": "x.pth"})


def test_missing_clap_model_fails_at_once_without_network(tmp_path, monkeypatch):
    """Not cached, HF_HUB_OFFLINE unset, hub unreachable: one error at once, never five retries."""
    import time

    import harness.score.embed.clap as clap

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    probes = []
    monkeypatch.setattr(clap, "reachable", lambda: probes.append(1) or False)
    start = time.perf_counter()
    with pytest.raises(EmbedderError, match="cannot load CLAP model nobody/no-such-clap") as err:
        clap.ClapEmbedder("nobody/no-such-clap")
    assert time.perf_counter() - start < 10 and probes == [1] and "\n" not in str(err.value)


def test_embedders_built_for_a_gpu_turn_tf32_off(monkeypatch):
    """cuDNN's default TF32 moves embeddings by ~1e-3: an embedder built for a non-CPU device
    sets both TF32 switches off (no GPU needed: the flags are plain settings)."""
    import torch

    from harness.score.scoring import build_embedder

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:  # monkeypatch cannot restore cuBLAS's flag (a module __setattr__): by hand
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        build_embedder("tiny-pann", {}, "cpu")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setattr("harness.score.scoring.get_embedder", lambda name, **options: options)
        assert build_embedder("tiny-pann", {}, "cuda:1")["device"] == "cuda:1"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
