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


# --- stereo files: left and right apart, as stable-audio-metrics' extract_embeddings (channels=2) ---

def _stereo(n: int, seed: int) -> np.ndarray:
    """(n, 2) float32: a tone on the left, noise on the right, both peaking at exactly 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    left = 0.3 * np.sin(2 * np.pi * (330 + 40 * seed) * t) + rng.normal(0, 0.02, n)
    right = rng.normal(0, 0.1, n)
    for ch in (left, right):
        ch *= 0.5 / np.max(np.abs(ch))
    return np.stack([left, right], axis=1).astype(np.float32)


def _write(path, data, rate):
    import soundfile as sf

    sf.write(path, data, rate, subtype="FLOAT")  # float32 WAV: the samples come back exactly
    return path


def _embed_files(paths, embedder, cache=None, listed=None):
    """embed_sources over files (``listed``: (content hash, channel count) per file, as a reference manifest gives)."""
    from harness.score.embed.cache import AudioSource, embed_sources
    from harness.score.reference import clip_loader

    sources = [AudioSource(str(p), clip_loader(p), *(listed[k] if listed else (None, None)))
               for k, p in enumerate(paths)]
    result = embed_sources(sources, [embedder], cache, workers=0)
    assert not result.errors
    return result.embeddings[embedder.name], result


def test_stereo_file_embeds_each_channel_as_its_own_mono_file(tmp_path):
    stereo = get_embedder("tiny-openl3")
    d = stereo.dim // 2
    data = _stereo(24000, 0)
    files = [_write(tmp_path / "lr.wav", data, 16000), _write(tmp_path / "l.wav", data[:, 0], 16000),
             _write(tmp_path / "r.wav", data[:, 1], 16000)]
    both, left, right = _embed_files(files, stereo)[0]
    assert both.shape == (3, 2 * d)  # 1.5 s
    # equal peaks, so the joint gain is each channel's own: bit-identical to the mono files
    np.testing.assert_array_equal(both, np.concatenate([left[:, :d], right[:, :d]], axis=1))
    np.testing.assert_array_equal(left[:, :d], left[:, d:])  # a mono file stays [e, e]
    assert np.abs(both[:, :d] - both[:, d:]).max() > 1e-3  # the channels really differ
    # channels=1 still embeds the mono mix
    mono = get_embedder("tiny-openl3", channels=1)
    mix = Clip(data.mean(axis=1, dtype=np.float32), 16000)
    np.testing.assert_array_equal(_embed_files(files[:1], mono)[0][0], mono.embed_audio([mono.audio_of(mix)])[0])


def test_stereo_peak_is_taken_over_all_channels_and_extra_channels_are_dropped(tmp_path):
    # pyln.normalize.peak on the (samples, channels) array: one gain from the largest sample of any
    # channel; with more than two channels the reference embeds audio[:, 0] and audio[:, 1]
    import soxr

    embedder = get_embedder("tiny-openl3")
    d = embedder.dim // 2
    data = _stereo(20000, 1) * np.array([1.0, 0.5], dtype=np.float32)
    third = np.concatenate([data, 0.9 * np.ones((20000, 1), np.float32)], axis=1)  # the loudest channel
    got2, got3 = _embed_files([_write(tmp_path / "two.wav", data, 16000), _write(tmp_path / "three.wav", third, 16000)],
                              embedder)[0]
    for got, x in ((got2, data), (got3, third)):
        gain = 10 ** (-1 / 20) / np.max(np.abs(x.astype(np.float64)))
        channels = [soxr.resample(gain * x[:, c].astype(np.float64), 16000, 44100, quality="HQ") for c in (0, 1)]
        want = [embedder.embed_audio([ch])[0][:, :d] for ch in channels]
        np.testing.assert_array_equal(got, np.concatenate(want, axis=1))
    with pytest.raises(EmbedderError, match="channels=1"):
        get_embedder("tiny-openl3", channels=1).embed_audio([np.zeros((2, 44100))])


def test_mono_file_is_unchanged_and_keeps_its_cache_key_and_identity(tmp_path):
    import hashlib
    import json

    import soxr

    embedder = get_embedder("tiny-openl3")
    samples = np.random.default_rng(4).normal(0, 0.1, 20000).astype(np.float32)
    path = _write(tmp_path / "m.wav", samples, 16000)
    got = _embed_files([path], embedder)[0][0]
    # the pipeline as it was before stereo files were read per channel, written out
    x = soxr.resample(peak_normalize(samples.astype(np.float64)), 16000, 44100, quality="HQ")
    frames = openl3_frames(resample_kaiser_best(x, 44100, 48000))
    with torch.no_grad():
        e = embedder.model(torch.from_numpy(frames.astype(np.float32))).numpy()
    np.testing.assert_array_equal(got, np.concatenate([e, e], axis=1))
    clip = Clip.from_file(path)
    assert clip.multichannel is None and embedder.cache_key(clip) == clip.sha256
    # the identity (so every existing cache entry's folder) is what it was: weights aside, pinned
    ident = embedder.identity()
    ident.pop("weights_sha256")
    assert hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16] == "dd0473510e2a43aa"


def test_same_mix_different_channels_never_share_a_cache_entry(tmp_path):
    from harness.score.embed.cache import EmbeddingCache

    embedder = get_embedder("tiny-openl3")
    d = embedder.dim // 2
    data = _stereo(20000, 2)
    files = [_write(tmp_path / "lr.wav", data, 16000), _write(tmp_path / "rl.wav", data[:, ::-1], 16000),
             _write(tmp_path / "mix.wav", data.mean(axis=1, dtype=np.float32), 16000)]
    clips = [Clip.from_file(f) for f in files]
    assert len({c.sha256 for c in clips}) == 1  # one mono mix, one content hash
    assert len({embedder.cache_key(c) for c in clips}) == 3
    other = get_embedder("tiny-openl3", channels=1)  # as every embedder that does not read channels
    assert {other.cache_key(c) for c in clips} == {clips[0].sha256} and not other.reads_channels
    cache = EmbeddingCache(tmp_path / "cache")
    # what the code before per-channel embedding cached for lr.wav under the mono hash: [e(mix), e(mix)]
    old = embedder.embed_audio([embedder.audio_of(Clip(clips[0].samples, 16000))])[0]
    cache.put(embedder, clips[0].sha256, old)
    listed = [(c.sha256, c.n_channels) for c in clips]
    first, result = _embed_files(files[:2], embedder, cache, listed)
    assert result.computed[embedder.name] == 2 and result.cached[embedder.name] == 0  # no hit on it
    lr, rl = first
    np.testing.assert_array_equal(rl, np.concatenate([lr[:, d:], lr[:, :d]], axis=1))
    assert np.abs(lr - rl).max() > 1e-3 and np.abs(lr - old).max() > 1e-3
    # mix.wav, listed as mono, is looked up before decoding and hits that entry: it is its embedding
    mono, result = _embed_files(files[2:], embedder, cache, listed[2:])
    assert result.cached[embedder.name] == 1 and result.computed[embedder.name] == 0
    np.testing.assert_array_equal(mono[0], old)
    # again, listed or not: stereo files hit their own entries
    for how in (listed[:2], None, [(clips[0].sha256, None)] * 2):
        again, result = _embed_files(files[:2], embedder, cache, how)
        assert result.cached[embedder.name] == 2 and result.computed[embedder.name] == 0
        np.testing.assert_array_equal(again[0], lr)
        np.testing.assert_array_equal(again[1], rl)


def test_fd_openl3_of_the_protocol_uses_the_channels_of_a_stereo_reference(tmp_path, tiny_audio_path, sweep_writer):
    # score --protocol stable-audio-metrics on a stereo reference folder: FD_openl3 pools
    # [e(left), e(right)] frames of the references, not [e(mix), e(mix)]
    from harness.cli import main
    from harness.generate.run import run_sweep
    from harness.score.metrics.stable_audio import fd_openl3
    from harness.store import RunStore

    run_sweep(sweep_writer(tmp_path / "sweep.toml"), tmp_path / "run", progress=False)
    store = RunStore.read_only(tmp_path / "run")
    samples = [s for s in store.samples() if s["status"] == "ok"]
    store.close()
    (tmp_path / "ref").mkdir()
    refs = [_write(tmp_path / "ref" / f"{pid}.wav", _stereo(32000, k), 16000)
            for k, pid in enumerate(sorted({s["prompt_id"] for s in samples}))]
    code = main(["score", str(tmp_path / "run"), "--reference", str(tmp_path / "ref"),
                 "--protocol", "stable-audio-metrics", "--pair-by", "stem", "--cache-dir", str(tmp_path / "cache"),
                 "--bootstrap", "0", "--no-progress",
                 "--protocol-embedder", "openl3=tiny-openl3", "--protocol-embedder", "passt=tiny-passt",
                 "--protocol-embedder", "clap=tiny-clap"])
    assert code == 0
    store = RunStore.read_only(tmp_path / "run")
    (row,) = [r for r in store.metrics() if r["details"].get("protocol", {}).get("label") == "FD_openl3"]
    store.close()
    openl3 = get_embedder("tiny-openl3", content_type="env", channels=2)
    gen = openl3.embed_audio([openl3.audio_of(Clip.from_file(tmp_path / "run" / s["audio_path"])) for s in samples])
    d = openl3.dim // 2
    per_channel, mixed = [], []
    for path in refs:
        clip = Clip.from_file(path)
        channels = [Clip(clip.multichannel[c], 16000) for c in (0, 1)]  # equal peaks: each its own mono file
        per_channel.append(np.concatenate([openl3.embed_audio([openl3.audio_of(c)])[0][:, :d] for c in channels],
                                          axis=1))
        mixed.append(openl3.embed_audio([openl3.audio_of(Clip(clip.samples, 16000))])[0])
    assert row["value"] == pytest.approx(fd_openl3(gen, per_channel).value, rel=1e-6)
    assert row["value"] != pytest.approx(fd_openl3(gen, mixed).value, rel=1e-3)
