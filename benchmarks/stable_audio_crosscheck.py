"""Cross-check the harness's stable-audio-metrics pieces against the reference code, shared random weights.

stable-audio-metrics is not a package (its repository has no setup file and is not on PyPI), so
nothing of it is vendored or installed: the ``reference`` step below re-implements its driver
``src/openl3_fd.py: extract_embeddings`` (the batched path its examples use, ``batching=4``) and
``calculate_embd_statistics`` / ``calculate_frechet_distance`` from its documented steps, calling
the real libraries it calls: librosa.load, pyloudnorm.normalize.peak, soxr.resample, and for
OpenL3 ``torchopenl3.get_audio_embedding`` (TensorFlow's ``openl3`` could not be installed here,
see RESULTS.md), which resamples with resampy's kaiser_best as openl3 does. Two environments:

    # 1. a throwaway venv with the reference libraries (it sees the shared venv's torch through a .pth)
    python3 -m venv /tmp/samref
    echo /path/to/.venv/lib/python3.11/site-packages > /tmp/samref/lib/python3.11/site-packages/shared.pth
    /tmp/samref/bin/pip install -c constraints.txt torchopenl3==1.0.1 librosa resampy==0.2.2 pyloudnorm 'setuptools<81'
    /tmp/samref/bin/python benchmarks/stable_audio_crosscheck.py reference /tmp/samx

    # 2. the harness's environment: load the reference's random weights, embed the same files
    python benchmarks/stable_audio_crosscheck.py compare /tmp/samx

(``setuptools<81``: resampy 0.2.2 imports ``pkg_resources``, which setuptools 81 dropped; the
shared torch 2.13 requires setuptools>=77, so the older pin ``<70`` no longer resolves.)

Step 1 writes WAV files (16-bit PCM, as AudioLDM 2 writes them: 16 kHz and one 44.1 kHz clip),
a torchopenl3 mel256 network with random weights (batch-norm statistics randomised too) saved
as ``torchopenl3_mel256_env_512.pth.tar``, the per-clip reference embeddings (channels=2, env,
hop 0.5 s, samplingrate 44100: the AudioCaps example's settings) and the reference FD, once on
the full 1024-d rows and once on their first 16 dimensions (the full-width covariances of a few
hundred frames are singular, so there the sqrtm term is ill-conditioned in both codes).
Step 2 embeds the same files with the harness's ``openl3`` embedder and prints the table.

Multi-channel files: a third folder ``ref_stereo`` holds the three mono reference clips again
(the same bytes) and three multi-channel 16-bit files whose channels clearly differ (``STEREO``):
a 44.1 kHz stereo clip, a 48 kHz stereo clip whose left channel peaks about 4x higher than its
right (one gain from the larger peak must scale both), and a 16 kHz three-channel clip whose
largest sample is in the third channel (which the reference peak-normalises over but does not
embed). The reference reads them as the driver does (``librosa.load(sr=None, mono=False)``,
``.T``, ``pyln.normalize.peak`` on the (samples, channels) array, ``soxr.resample`` of that
array, ``audio[:, 0]`` and ``audio[:, 1]``), in batches of 4 that mix mono and multi-channel
files. ``compare`` prints, per file, the max abs difference of the left and right halves of the
rows, how far apart the reference's left and right halves are, and how far the pre-stereo
harness (mono mix, ``[e, e]``) would be; and FD_openl3 of ``eval`` against ``ref_stereo``. The
mono folders and their figures are unchanged (their clips come from their own generator).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

CLIPS = {"eval": [(16000, 10.24), (16000, 3.0), (16000, 0.8)],
         "ref": [(16000, 10.24), (44100, 5.0), (16000, 2.5)]}
# ref_stereo: the mono ref clips again, then these (rate, seconds, per channel (tone Hz, amplitude, noise))
STEREO = {"3_lr_44k.wav": (44100, 4.0, [(330, 0.30, 0.05), (587, 0.35, 0.03)]),
          "4_gain_48k.wav": (48000, 3.0, [(250, 0.55, 0.03), (900, 0.10, 0.02)]),
          "5_three_16k.wav": (16000, 2.5, [(400, 0.20, 0.03), (700, 0.25, 0.05), (150, 0.60, 0.02)])}
SPLITS = (*CLIPS, "ref_stereo")
SETTINGS = {"channels": 2, "samplingrate": 44100, "content_type": "env", "hop": 0.5, "batch": 4}
PROBE_DIMS = 16
STEREO_PROBE = np.r_[0:8, 512:520]  # the first 8 dims of the left and of the right half


def _write_clips(out: Path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    for split, clips in CLIPS.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for i, (sr, seconds) in enumerate(clips):
            t = np.arange(int(sr * seconds)) / sr
            tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * i + (50 if split == "ref" else 0)) * t)
            audio = tone * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + rng.normal(0, 0.05 + 0.02 * i, t.size)
            sf.write(out / split / f"{i}.wav", np.clip(audio, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    (out / "ref_stereo").mkdir(exist_ok=True)
    for file in sorted((out / "ref").glob("*.wav")):
        (out / "ref_stereo" / file.name).write_bytes(file.read_bytes())
    rng = np.random.default_rng(2)  # its own generator: the mono clips above stay as they were
    for name, (sr, seconds, channels) in STEREO.items():
        t = np.arange(int(sr * seconds)) / sr
        audio = np.stack([amp * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * (0.7 + 0.6 * c) * t))
                          + rng.normal(0, noise, t.size) for c, (hz, amp, noise) in enumerate(channels)], axis=1)
        sf.write(out / "ref_stereo" / name, np.clip(audio, -1, 1).astype(np.float32), sr, subtype="PCM_16")


def _frechet(rows_x: np.ndarray, rows_y: np.ndarray) -> float:
    """calculate_embd_statistics + calculate_frechet_distance of openl3_fd.py (pytorch-fid's formula)."""
    from scipy import linalg

    stats = [(np.mean(r, axis=0), np.cov(r, rowvar=False)) for r in (rows_x, rows_y)]
    (mu1, s1), (mu2, s2) = stats
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _reference_embeddings(folder: Path, model) -> list[np.ndarray]:
    """openl3_fd.extract_embeddings (batched, channels=2) with torchopenl3 in place of openl3; one array per file."""
    import librosa
    import pyloudnorm as pyln
    import soxr
    import torchopenl3

    files = sorted(folder.glob("*.wav"))
    per_file = []
    for s in range(0, len(files), SETTINGS["batch"]):
        left, right, rates = [], [], []
        for file in files[s:s + SETTINGS["batch"]]:
            audio, sr = librosa.load(file, sr=None, mono=False)
            audio = pyln.normalize.peak(audio.T, -1.0)
            audio = soxr.resample(audio, sr, SETTINGS["samplingrate"])
            left.append(audio if audio.ndim == 1 else audio[:, 0])
            right.append(audio if audio.ndim == 1 else audio[:, 1])
            rates.append(SETTINGS["samplingrate"])
        kw = {"model": model, "verbose": False, "hop_size": SETTINGS["hop"], "batch_size": SETTINGS["batch"],
              "center": True, "sampler": "resampy"}
        emb_l, _ = torchopenl3.get_audio_embedding(left, rates, **kw)
        emb_r, _ = torchopenl3.get_audio_embedding(right, rates, **kw)
        per_file += [np.concatenate([l.numpy(), r.numpy()], axis=1) for l, r in zip(emb_l, emb_r)]
    return per_file


def reference(out: Path) -> None:
    """Clips, a random torchopenl3 network, reference embeddings and FDs (run where torchopenl3 imports)."""
    import torch
    from embedder_crosscheck import randomise_batch_norms  # a sibling script: benchmarks/ is sys.path[0]
    from torchopenl3.models import PytorchOpenl3

    out.mkdir(parents=True, exist_ok=True)
    _write_clips(out)
    torch.manual_seed(0)
    model = PytorchOpenl3(input_repr="mel256", content_type="env", embedding_size=512).eval()
    randomise_batch_norms(model)
    torch.save(model.state_dict(), out / "torchopenl3_mel256_env_512.pth.tar")
    result, seconds = {}, {}
    for split in SPLITS:
        start = time.perf_counter()
        per_file = _reference_embeddings(out / split, model)
        seconds[split] = time.perf_counter() - start
        np.savez(out / f"ref_{split}.npz", *per_file)
        result[split] = np.concatenate(per_file)
    fd = {"full": _frechet(result["eval"], result["ref"]),
          "probe": _frechet(result["eval"][:, :PROBE_DIMS], result["ref"][:, :PROBE_DIMS]),
          "stereo_full": _frechet(result["eval"], result["ref_stereo"]),
          "stereo_probe": _frechet(result["eval"][:, STEREO_PROBE], result["ref_stereo"][:, STEREO_PROBE])}
    (out / "reference.json").write_text(json.dumps({"fd": fd, "seconds": seconds, "settings": SETTINGS}, indent=1))
    print(f"reference written to {out}: {fd}")


def compare(out: Path) -> None:
    """Embed the same files with the harness and print the cross-check tables."""
    from harness.score.embed.audio import Clip
    from harness.score.embed.openl3 import OpenL3Embedder
    from harness.score.metrics.stable_audio import fd_openl3

    ref = json.loads((out / "reference.json").read_text())
    embedder = OpenL3Embedder(weights=str(out / "torchopenl3_mel256_env_512.pth.tar"), content_type="env", channels=2)
    half = embedder.dim // 2
    ours, theirs, multi = {}, {}, []
    print("| clip | frames | max abs diff | max abs value | min row cosine |")
    print("|---|---|---|---|---|")
    for split in SPLITS:
        files = sorted((out / split).glob("*.wav"))
        start = time.perf_counter()
        clips = [Clip.from_file(f) for f in files]
        ours[split] = [embedder.embed_audio([embedder.audio_of(c)])[0] for c in clips]
        took = time.perf_counter() - start
        loaded = np.load(out / f"ref_{split}.npz")
        theirs[split] = [loaded[f"arr_{i}"] for i in range(len(files))]
        for f, c, a, b in zip(files, clips, ours[split], theirs[split]):
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            shape = "x".join(map(str, a.shape)) if a.shape == b.shape else f"{a.shape} vs {b.shape}"
            print(f"| {split}/{f.name} | {shape} | {np.abs(a - b).max():.3g} | {np.abs(b).max():.3g} | {cos.min():.9f} |")
            if c.n_channels > 1:
                multi.append((f"{split}/{f.name}", c, a, b))
        print(f"<!-- {split}: harness {took:.1f} s, reference {ref['seconds'][split]:.1f} s -->")
    print("\n| multi-channel clip | channels, rate | frames | max abs diff left half | max abs diff right half "
          "| reference: max abs diff of its left and right halves | pre-stereo harness (mono mix): max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name, c, a, b in multi:
        mixed = embedder.embed_audio([c.peak_normalized_at_rate(embedder.sample_rate, -1.0)])[0]  # [e(mix), e(mix)]
        print(f"| {name} | {c.n_channels}, {c.sample_rate} Hz | {b.shape[0]} | {np.abs(a[:, :half] - b[:, :half]).max():.3g} | "
              f"{np.abs(a[:, half:] - b[:, half:]).max():.3g} | {np.abs(b[:, :half] - b[:, half:]).max():.3g} | "
              f"{np.abs(mixed - b).max():.3g} |")
    print("\n| figure | reference | harness | relative difference |\n|---|---|---|---|")
    for name, against, dims, label in (
            ("full", "ref", None, "FD_openl3 (1024-d rows)"),
            ("probe", "ref", slice(0, PROBE_DIMS), f"FD_openl3 on the first {PROBE_DIMS} dims"),
            ("stereo_full", "ref_stereo", None, "FD_openl3 against ref_stereo (1024-d rows)"),
            ("stereo_probe", "ref_stereo", STEREO_PROBE, "FD_openl3 against ref_stereo on dims 0-7 and 512-519")):
        cut = (lambda rows: [r[:, dims] for r in rows]) if dims is not None else (lambda rows: rows)
        got = float(fd_openl3(cut(ours["eval"]), cut(ours[against])))
        want = ref["fd"][name]
        print(f"| {label} | {want:.9g} | {got:.9g} | {abs(got - want) / abs(want):.2e} |")


PASST_CLIPS = {"eval": [(16000, 10.24), (16000, 3.0), (16000, 0.8)], "ref": [(16000, 10.24), (44100, 5.0), (16000, 1.2)]}


def _stub_broken_imports() -> None:
    """hear21passt imports torchaudio and timm; neither imports against torch 2.13 (torchaudio's newest
    binary, 2.11.1, does not load; timm imports torchvision, whose binary does not load either). Give
    hear21passt the pure-python pieces it uses: kaldi.get_mel_banks from torchaudio's own source file,
    the masking transforms (they only act in training mode) and timm's download_cached_file (only
    used for pretrained downloads, which this never does)."""
    import importlib.util
    import site
    import types

    import torch

    root = next(Path(p) for p in site.getsitepackages() if (Path(p) / "torchaudio").is_dir())
    fake = types.ModuleType("torchaudio")
    fake.__path__ = []
    sys.modules["torchaudio"] = fake
    spec = importlib.util.spec_from_file_location("torchaudio.compliance.kaldi", root / "torchaudio/compliance/kaldi.py")
    kaldi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kaldi)
    fake.compliance = types.SimpleNamespace(kaldi=kaldi)
    fake.transforms = types.SimpleNamespace(FrequencyMasking=lambda *a, **k: torch.nn.Identity(),
                                            TimeMasking=lambda *a, **k: torch.nn.Identity())

    def no_download(*args, **kwargs):
        raise RuntimeError("no downloads in the cross-check")

    for name in ("timm", "timm.models", "timm.models._hub"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["timm.models._hub"].download_cached_file = no_download


def reference_passt(out: Path) -> None:
    """passt_kld.py's return_probabilities and KL (re-implemented driver) on hear21passt with random weights."""
    from functools import partial

    import librosa
    import pyloudnorm as pyln
    import soundfile as sf
    import torch
    import torch.nn.functional as F

    _stub_broken_imports()
    from hear21passt.models.passt import get_model
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper

    rng = np.random.default_rng(1)
    for split, clips in PASST_CLIPS.items():
        (out / f"passt_{split}").mkdir(parents=True, exist_ok=True)
        for i, (sr, seconds) in enumerate(clips):
            t = np.arange(int(sr * seconds)) / sr
            audio = 0.3 * np.sin(2 * np.pi * (300 + 150 * i + 40 * (split == "ref")) * t) + rng.normal(0, 0.05, t.size)
            sf.write(out / f"passt_{split}" / f"{i}.wav", np.clip(audio, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    torch.manual_seed(0)
    net = get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=527, fstride=10, tstride=10,
                    input_fdim=128, input_tdim=998)
    with torch.no_grad():  # PaSST's own init sets the heads to zero: randomise them, and strengthen the
        net.head[1].weight.normal_(0, 1.0)  # patch embedding so the logits depend on the input
        net.head[1].bias.normal_(0, 0.5)
        net.head_dist.weight.normal_(0, 1.0)
        net.patch_embed.proj.weight.mul_(20.0)
        net.patch_embed.proj.bias.normal_(0, 0.1)
    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                         htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    model = PasstBasicWrapper(mel=mel, net=net, mode="logits").eval()
    torch.save(net.state_dict(), out / "passt-s-f128-p16-s10-ap.476-swa.pt")
    old_stft = torch.stft
    windows, probs, seconds = {}, {}, {}
    for split in PASST_CLIPS:
        start = time.perf_counter()
        windows[split], probs[split] = [], []
        for file in sorted((out / f"passt_{split}").glob("*.wav")):
            audio, _ = librosa.load(file, sr=32000, mono=True)
            audio = pyln.normalize.peak(audio, -1.0)
            step = int(5 * 32000)
            rows = []
            for i in range(0, max(step, len(audio) - step), step):
                window = audio[i:i + 320000]
                if len(window) < 320000 and len(window) > int(320000 * 0.15):
                    tmp = np.zeros(320000)
                    tmp[:len(window)] = window
                    window = tmp
                torch.stft = partial(old_stft, return_complex=False)  # passt_kld's _patch_passt_stft
                try:
                    with torch.no_grad():
                        rows.append(torch.squeeze(model(torch.from_numpy(window.astype(np.float32)).unsqueeze(0))))
                finally:
                    torch.stft = old_stft
            stacked = torch.stack(rows)
            windows[split].append(stacked.numpy())
            probs[split].append(F.softmax(torch.mean(stacked, dim=0), dim=0))
        seconds[split] = time.perf_counter() - start
        np.savez(out / f"passt_ref_{split}.npz", *windows[split])
    kl = sum(F.kl_div((r + 1e-6).log(), g, reduction="sum", log_target=False)
             for g, r in zip(probs["eval"], probs["ref"])) / len(probs["eval"])
    (out / "passt_reference.json").write_text(json.dumps({"kl": float(kl), "seconds": seconds}, indent=1))
    spread = float(np.std([w.mean(axis=0) for w in windows["eval"] + windows["ref"]], axis=0).mean())
    print(f"passt reference written to {out}: KL {float(kl)}; logit spread across clips {spread:.3g}")


def compare_passt(out: Path) -> None:
    """PaSST logits per window and KL_passt: harness against the reference."""
    from harness.score.embed.audio import Clip
    from harness.score.embed.passt import PasstEmbedder
    from harness.score.metrics.stable_audio import kl_passt

    ref = json.loads((out / "passt_reference.json").read_text())
    embedder = PasstEmbedder(weights=str(out / "passt-s-f128-p16-s10-ap.476-swa.pt"))
    ours = {}
    print("| clip | windows x classes | max abs diff of logits | max abs logit |\n|---|---|---|---|")
    for split in PASST_CLIPS:
        files = sorted((out / f"passt_{split}").glob("*.wav"))
        start = time.perf_counter()
        ours[split] = [embedder.embed_audio_outputs([embedder.audio_of(Clip.from_file(f))])[1]["logits"][0] for f in files]
        took = time.perf_counter() - start
        loaded = np.load(out / f"passt_ref_{split}.npz")
        for i, (f, a) in enumerate(zip(files, ours[split])):
            b = loaded[f"arr_{i}"].reshape(a.shape) if loaded[f"arr_{i}"].size == a.size else loaded[f"arr_{i}"]
            diff = f"{np.abs(a - b).max():.3g}" if a.shape == b.shape else f"shape {a.shape} vs {b.shape}"
            print(f"| passt_{split}/{f.name} | {a.shape[0]}x{a.shape[1]} | {diff} | {np.abs(b).max():.3g} |")
        print(f"<!-- {split}: harness {took:.1f} s, reference {ref['seconds'][split]:.1f} s -->")
    got = kl_passt(ours["eval"], ours["ref"])
    print(f"\n| KL_passt | reference {ref['kl']:.9g} | harness {got:.9g} | relative difference "
          f"{abs(got - ref['kl']) / abs(ref['kl']):.2e} |")


def reference_clap(out: Path) -> None:
    """clap_score.py's audio input (librosa.load at 48 kHz, peak -1 dBFS, int16 round trip) of every clip."""
    import librosa
    import pyloudnorm as pyln

    arrays = {}
    for file in sorted(out.glob("*/*.wav")):
        audio, _ = librosa.load(file, sr=48000, mono=True)
        audio = pyln.normalize.peak(audio, -1.0).reshape(1, -1)
        arrays[f"{file.parent.name}/{file.name}"] = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16) / 32767.0
    np.savez(out / "clap_inputs.npz", **arrays)
    print(f"clap inputs of {len(arrays)} clips written to {out}")


def compare_clap(out: Path) -> None:
    """The harness's CLAP input with peak_dbfs=-1 (the clap embedder's steps before the log-mel)."""
    from harness.score.embed.audio import Clip, peak_normalize
    from harness.score.embed.clap import int16_round_trip

    loaded = np.load(out / "clap_inputs.npz")
    worst, codes = 0.0, 0
    for name in loaded.files:
        clip = Clip.from_file(out / name).at_rate_librosa(48000)
        ours = int16_round_trip(peak_normalize(np.asarray(clip, dtype=np.float32), -1.0))
        theirs = loaded[name][0]
        worst = max(worst, float(np.abs(ours - theirs).max()))
        codes += int(np.count_nonzero(np.round(ours * 32767.0) != np.round(theirs * 32767.0)))
    print(f"| CLAP input (48 kHz, peak -1 dBFS, int16) | {len(loaded.files)} clips | int16 codes differing: {codes} | "
          f"max abs diff {worst:.3g} (float32 storage of the same codes) |")


STEPS = {"reference": reference, "compare": compare, "reference-passt": reference_passt, "compare-passt": compare_passt,
         "reference-clap": reference_clap, "compare-clap": compare_clap}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: stable_audio_crosscheck.py {'|'.join(STEPS)} OUT_DIR")
    STEPS[sys.argv[1]](Path(sys.argv[2]))
