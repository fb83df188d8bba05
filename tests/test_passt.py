"""PaSST classifier (stable-audio-metrics' KL_passt input): hear21passt's layout, the Kaldi mel matrix
and log-mel front end against numpy, the reference's window loop by hand, checkpoint files,
the missing-file error, and KL on the tiny model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.score.embed.passt import PasstEmbedder, build_passt, kaldi_mel_banks, passt_log_mel, passt_windows
from harness.score.embed.registry import EmbedderError, get_embedder
from harness.score.metrics.stable_audio import kl_passt


def test_network_has_hear21passt_names_and_size():
    model = build_passt()
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    expected = ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "dist_token", "new_pos_embed",
                "freq_new_pos_embed", "time_new_pos_embed", *[f"blocks.{i}.{k}" for i in range(12) for k in block],
                "norm.weight", "norm.bias", "head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias",
                "head_dist.weight", "head_dist.bias"]
    assert sorted(model.state_dict()) == sorted(expected)
    d = 768  # ViT-B blocks (qkv, proj, 4x MLP, two norms) + patches + tokens/positions + norms + two 527 heads
    per_block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 4 * d
    total = 12 * per_block + (256 * d + d) + 2 * d + 2 * d + d * 12 + d * 99 + 2 * d + 2 * d + 2 * (d * 527 + 527)
    assert sum(p.numel() for p in model.parameters()) == total


def _kaldi_numpy() -> np.ndarray:
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    edges = np.linspace(mel(0.0), mel(15000.0), 130)  # 128 triangles, evenly spaced in Kaldi mel
    bins = mel(32000 / 1024 * np.arange(512))[None]
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    banks = np.maximum(0, np.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)))
    return np.pad(banks, ((0, 0), (0, 1)))


def test_front_end_matches_a_numpy_reference():
    np.testing.assert_allclose(kaldi_mel_banks(), _kaldi_numpy(), atol=2e-5)
    audio = np.random.default_rng(0).normal(0, 0.1, 32000 + 77)
    got = passt_log_mel(torch.from_numpy(audio[None]), torch.from_numpy(kaldi_mel_banks()).double(),
                        torch.hann_window(800, periodic=False, dtype=torch.float64))[0].numpy()
    x = np.pad(audio[1:] - 0.97 * audio[:-1], 512, mode="reflect")
    window = np.zeros(1024)
    window[112:912] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 799)  # symmetric Hann, centred in n_fft
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::320]
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    expected = (np.log(power @ _kaldi_numpy().T + 1e-5) + 4.5) / 5
    assert got.shape == expected.T.shape == (128, 1 + (32000 + 76) // 320)
    np.testing.assert_allclose(got, expected.T, atol=1e-4)


@pytest.mark.parametrize("seconds, sizes", [
    (10.0, [320000]),                 # range(0, 160000, 160000): one window
    (10.24, [320000, 320000]),        # second window 5-10.24 s, padded
    (20.0, [320000] * 3),             # 0-10, 5-15, 10-20
    (4.0, [320000]),                  # short clip: padded to 10 s
    (1.0, [32000]),                   # under 15% of 10 s: left short, as the code does
])
def test_windows_follow_the_reference_loop(seconds, sizes):
    x = np.arange(1, int(seconds * 32000) + 1, dtype=np.float64)
    windows = passt_windows(x)
    assert [w.size for w in windows] == sizes
    assert all(w[0] == 1 + 160000 * i for i, w in enumerate(windows))


def test_tiny_passt_outputs_windows_and_ignores_gain():
    embedder = get_embedder("tiny-passt")
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, int(32000 * 10.24)).astype(np.float32)
    b = np.sin(2 * np.pi * 440 * np.arange(32000 * 3) / 32000).astype(np.float32)
    features, extra = embedder.embed_audio_outputs([a, b])
    assert features[0].shape == (2, 16) and extra["logits"][0].shape == (2, 527) and extra["logits"][1].shape == (1, 527)
    assert embedder.output_dims() == {"logits": 527}
    # peak normalisation first: a gain does not change the input the network sees
    np.testing.assert_allclose(embedder.embed_audio_outputs([0.3 * b])[1]["logits"][0], extra["logits"][1], atol=1e-4)
    assert np.ptp(extra["logits"][1]) > 1.0  # the tiny model's logits are not flat
    same = kl_passt([extra["logits"][0]], [extra["logits"][0]])
    # identical clips: each class adds p log(p / (p + 1e-6)), between -1e-6 and 0
    assert -527e-6 <= same <= 0 and kl_passt([extra["logits"][0]], [extra["logits"][1]]) > 0.01


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_passt_on_cuda_equals_cpu(cuda_embeds_like_cpu):
    """--device cuda: features and logits within 1e-4 of the CPU ones' scale (a 1e-7 relative input
    perturbation moves them by 4e-7)."""
    from harness.data.synthetic import synthetic_clips
    from harness.score.embed.audio import Clip

    cuda_embeds_like_cpu("tiny-passt", [Clip(samples, 16000) for _, samples in synthetic_clips(4, duration_s=2.0)])


def test_loads_the_published_layout_and_names_a_missing_file(tmp_path, monkeypatch):
    model = build_passt(embed_dim=32, depth=1, num_heads=2)
    torch.save(model.state_dict(), tmp_path / "p.pt")
    monkeypatch.setattr("harness.score.embed.passt.build_passt", lambda: build_passt(embed_dim=32, depth=1, num_heads=2))
    embedder = PasstEmbedder(weights=str(tmp_path / "p.pt"))
    audio = np.random.default_rng(2).normal(0, 0.1, 32000 * 2).astype(np.float32)
    window = passt_windows(audio / np.abs(audio).max() * 10 ** (-1 / 20))[0].astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(window[None]))[1].numpy()
    np.testing.assert_allclose(embedder.embed_audio_outputs([audio])[1]["logits"][0], expected, rtol=1e-5, atol=1e-5)
    torch.save({"head.1.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(EmbedderError, match="does not fit the model"):
        PasstEmbedder(weights=str(tmp_path / "wrong.pt"))
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    monkeypatch.delenv("AUDIOLDM2_HARNESS_PASST_WEIGHTS", raising=False)
    with pytest.raises(EmbedderError) as err:
        get_embedder("passt")
    message = str(err.value)
    assert "passt-s-f128-p16-s10-ap.476-swa.pt" in message and "wget" in message and "\n" not in message


def test_inputs_have_librosa_load_lengths():
    # librosa.load(sr=...) pads soxr's output to ceil(n * (sr_new / sr)) computed in float64
    from harness.score.embed.audio import Clip

    clip = Clip(np.zeros(5 * 44100, np.float32), 44100)
    assert 5 * 44100 * (48000 / 44100) > 240000 and clip.at_rate(48000).size == 240000
    assert clip.at_rate_librosa(48000).size == 240001
    embedder = get_embedder("tiny-passt")
    assert embedder.audio_of(Clip(np.ones(16000, np.float32), 16000)).size == 32000
    assert get_embedder("tiny-clap", peak_dbfs=-1.0).audio_of(clip).size == 240001
    assert get_embedder("tiny-clap").audio_of(clip).size == 240000  # laion mode unchanged
