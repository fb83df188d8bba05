"""OpenL3 embedder (stable-audio-metrics' configuration): torchopenl3's layout, the front end
against independent computations, resampy's kaiser_best against a closed form, the frame rule,
checkpoint files and the missing-file error. The equality with torchopenl3 and resampy
themselves is shown by benchmarks/stable_audio_crosscheck.py (throwaway venv)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.synthetic import synthetic_clips
from harness.score.embed.audio import Clip, peak_normalize
from harness.score.embed.openl3 import (OpenL3Embedder, _dft_kernels, build_openl3, openl3_frames, openl3_mel_basis,
                                        resample_kaiser_best)
from harness.score.embed.registry import EmbedderError, get_embedder


def test_network_has_torchopenl3_names_and_size():
    model = build_openl3()
    bn = [f"batch_normalization_{i}.{k}" for i in range(1, 9)
          for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    conv = [f"{n}.{k}" for n in [f"conv2d_{i}" for i in range(1, 8)] + ["audio_embedding_layer"] for k in ("weight", "bias")]
    spec = ["speclayer.dft_real_kernels", "speclayer.dft_imag_kernels", "speclayer.mel_basis"]
    assert sorted(model.state_dict()) == sorted([*spec, *bn, *conv])
    # 3x3 convs 1-64-64-128-128-256-256-512-512 with biases, plus 8 batch norms' affine terms
    widths = (1, 64, 64, 128, 128, 256, 256, 512, 512)
    expected = sum(9 * a * b + b for a, b in zip(widths[:-1], widths[1:])) + 2 * sum(widths[:-1])
    assert sum(p.numel() for p in model.parameters()) == expected == 4_687_042


def _htk_mel_l1(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(htk=True, norm=1) written out: HTK mel points, triangles in Hz, unit sums."""
    mel = np.linspace(0, 2595 * np.log10(1 + (sr / 2) / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    out = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        out[i] = np.maximum(0, np.minimum((freqs - hz[i]) / (hz[i + 1] - hz[i]), (hz[i + 2] - freqs) / (hz[i + 2] - hz[i + 1])))
        out[i] /= out[i].sum() if out[i].sum() > 0 else 1.0
    return out


def test_front_end_matches_a_numpy_reference():
    np.testing.assert_allclose(openl3_mel_basis(), _htk_mel_l1(48000, 2048, 256), atol=1e-12)
    frame = np.random.default_rng(0).normal(0, 0.1, 48000)
    got = build_openl3(widths=(4,) * 8).speclayer(torch.from_numpy(frame[None].astype(np.float32)))[0, 0].numpy()
    x = np.pad(frame, (982, 982))  # keras "same": 2048 - 48000 % 242 = 1964 zeros, split evenly
    frames = np.lib.stride_tricks.sliding_window_view(x, 2048)[::242]
    real, imag = _dft_kernels(2048)  # kapre's windowed DFT kernels, applied as torchopenl3's conv1d does
    power = (frames @ real[:, 0].T.astype(np.float64)) ** 2 + (frames @ imag[:, 0].T.astype(np.float64)) ** 2
    db = 10 * np.log10(np.maximum(np.sqrt(power @ _htk_mel_l1(48000, 2048, 256).T), 1e-10)).T
    expected = np.maximum(db - db.max(), -80.0)
    assert got.shape == expected.shape == (256, 199)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # dB, float32 FFT


def test_kaiser_best_resampling_reproduces_a_band_limited_tone():
    sr0, sr1, f = 44100, 48000, 1234.5
    x = np.sin(2 * np.pi * f * np.arange(2 * sr0) / sr0)
    y = resample_kaiser_best(x, sr0, sr1)
    assert y.shape == (2 * sr1,)
    t = np.arange(y.size) / sr1
    inner = slice(4000, y.size - 4000)  # away from the zero-padded edges
    np.testing.assert_allclose(y[inner], np.sin(2 * np.pi * f * t[inner]), atol=2e-4)
    # downsampling scales the filter by the ratio; kaiser_best's passband gain is then 1.0027 at
    # this frequency (resampy gives the same, see the cross-check)
    down = resample_kaiser_best(x, sr0, 16000)
    np.testing.assert_allclose(down[2000:-2000], np.sin(2 * np.pi * f * np.arange(32000) / 16000)[2000:-2000], atol=3e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sr1", [48000, 16000])
def test_kaiser_best_resampling_on_cuda_equals_cpu(sr1):
    """The float64 gathers on the GPU give the CPU's result to 1e-12 (only the order of the
    ~130-350 term sums differs); 3 s at 48 kHz spans three 65536-sample chunks."""
    sr0 = 44100
    x = 0.3 * np.random.default_rng(3).standard_normal(3 * sr0)
    cpu, cuda = resample_kaiser_best(x, sr0, sr1), resample_kaiser_best(x, sr0, sr1, "cuda")
    assert cuda.dtype == np.float64 and cuda.shape == cpu.shape == (3 * sr1,)
    np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-12)


def test_frames_follow_openl3_center_and_padding():
    x = np.arange(1, 72001, dtype=np.float64)  # 1.5 s at 48 kHz
    frames = openl3_frames(x)
    # 0.5 s of zeros in front: 96000 samples -> padded to 96000 (= 48000 + 2 hops) -> 3 frames
    assert frames.shape == (3, 48000)
    assert np.all(frames[0, :24000] == 0) and frames[0, 24000] == 1
    assert frames[1, 0] == 1 and frames[2, 0] == 24001 and frames[2, -1] == 72000
    longer = openl3_frames(np.arange(1, 76801, dtype=np.float64))  # 1.6 s: 100800 -> 120000 samples
    assert longer.shape == (4, 48000) and longer[3, 0] == 48001 and longer[3, 28800] == 0
    assert openl3_frames(np.ones(100)).shape == (1, 48000)  # short: one zero-padded frame


def test_embedding_rows_stereo_and_batch_independence():
    mono = get_embedder("tiny-openl3", channels=1)
    stereo = get_embedder("tiny-openl3")
    rng = np.random.default_rng(2)
    a = Clip(rng.normal(0, 0.1, 16000 + 160).astype(np.float32), 16000)
    b = Clip(rng.normal(0, 0.1, 22050).astype(np.float32), 44100)
    alone = mono.embed_audio([mono.audio_of(a)])[0]
    assert alone.shape == (3, mono.dim) and stereo.dim == 2 * mono.dim
    np.testing.assert_allclose(mono.embed_audio([mono.audio_of(b), mono.audio_of(a)])[1], alone, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(stereo.embed_audio([stereo.audio_of(a)])[0], np.concatenate([alone, alone], axis=1))
    assert mono.identity_key != stereo.identity_key != get_embedder("tiny-openl3", content_type="music").identity_key
    np.testing.assert_array_equal(peak_normalize(np.zeros(4)), np.zeros(4))
    assert np.max(np.abs(peak_normalize(a.samples))) == pytest.approx(10 ** (-1 / 20))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_openl3_on_cuda_is_as_close_to_float64_as_cpu(fp32_cuda):
    """--device cuda: the same frames (float64 resampling to 1e-12) and embeddings as close to the
    network run in float64 as the CPU's float32 ones. No fixed tolerance fits: the float32 DFT
    front end puts round-off into the quiet bins (down to -80 dB of amplitude, 1e-8), which moves
    these embeddings by up to 3e-3 of their scale on the CPU already (and 1e-2 for a 1e-7 input
    perturbation), so the GPU's different round-off may too; a device bug moves them by O(1)."""
    import copy

    cpu, cuda = get_embedder("tiny-openl3", channels=1), get_embedder("tiny-openl3", channels=1, device="cuda")
    assert cuda.identity_key == cpu.identity_key
    exact = copy.deepcopy(cpu.model).double()
    err_cpu = err_cuda = scale = 0.0
    for clip in [Clip(samples, 16000) for _, samples in synthetic_clips(4, duration_s=2.0)]:
        x = cpu.audio_of(clip)
        frames = cpu.frames(x)
        np.testing.assert_allclose(cuda.frames(x), frames, rtol=0, atol=1e-12)
        with torch.no_grad():
            truth = exact(torch.from_numpy(np.array(frames, dtype=np.float32)).double()).numpy()
        got, want = cuda.embed_audio([x])[0], cpu.embed_audio([x])[0]
        assert got.shape == want.shape == truth.shape and got.dtype == np.float32
        err_cpu = max(err_cpu, float(np.max(np.abs(want - truth))))
        err_cuda = max(err_cuda, float(np.max(np.abs(got - truth))))
        scale = max(scale, float(np.max(np.abs(truth))))
    assert err_cuda <= 10 * err_cpu + 1e-6 * scale, (err_cuda, err_cpu, scale)


def test_peak_normalisation_happens_at_the_file_rate_then_soxr():
    # stable-audio-metrics: pyln.normalize.peak(audio at its own rate), then soxr.resample to 44.1 kHz
    import soxr

    clip = Clip(np.random.default_rng(5).normal(0, 0.2, 8000).astype(np.float32), 16000)
    embedder = get_embedder("tiny-openl3")
    expected = soxr.resample(peak_normalize(clip.samples.astype(np.float64)), 16000, 44100, quality="HQ")
    np.testing.assert_array_equal(embedder.audio_of(clip), expected)
    # the scoring path (embed_sources) goes through audio_of
    from harness.score.embed.cache import AudioSource, embed_sources

    result = embed_sources([AudioSource(label="clip", load=lambda: clip)], [embedder], None)
    np.testing.assert_array_equal(result.embeddings[embedder.name][0], embedder.embed_audio([expected])[0])


def test_loads_torchopenl3_layout_strictly(tmp_path):
    model = build_openl3()
    torch.save(model.state_dict(), tmp_path / "torchopenl3_mel256_env_512.pth.tar")
    embedder = OpenL3Embedder(weights=str(tmp_path / "torchopenl3_mel256_env_512.pth.tar"), channels=1)
    audio = embedder.audio_of(Clip(np.random.default_rng(3).normal(0, 0.1, 44100).astype(np.float32), 44100))
    with torch.no_grad():
        expected = model(torch.from_numpy(embedder.frames(audio).astype(np.float32))).numpy()
    np.testing.assert_allclose(embedder.embed_audio([audio])[0], expected, rtol=1e-5, atol=1e-6)
    assert embedder.dim == 512
    torch.save({k: v for k, v in model.state_dict().items() if k != "speclayer.mel_basis"}, tmp_path / "other.pth.tar")
    with pytest.raises(EmbedderError, match="does not fit the model"):
        OpenL3Embedder(weights=str(tmp_path / "other.pth.tar"))


def test_missing_weights_and_bad_options_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    monkeypatch.delenv("AUDIOLDM2_HARNESS_OPENL3_WEIGHTS", raising=False)
    with pytest.raises(EmbedderError) as err:
        get_embedder("openl3", content_type="music")
    message = str(err.value)
    assert "torchopenl3_mel256_music_512.pth.tar" in message and "wget" in message and str(tmp_path) in message
    assert "\n" not in message
    with pytest.raises(EmbedderError, match="content_type"):
        get_embedder("tiny-openl3", content_type="speech")
    with pytest.raises(EmbedderError, match="channels"):
        get_embedder("tiny-openl3", channels=3)
