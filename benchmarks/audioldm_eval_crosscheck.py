"""Cross-check ``score --protocol audioldm-eval`` against audioldm_eval 0.0.3 on the same folders.

audioldm_eval pins old libraries and fetches weights and code at run time, so it runs in a
throwaway venv with shared random weights (batch-norm statistics randomised, so they matter):

    # 1. the harness's environment: a tiny run and its folders (generated audio as 16-bit PCM
    #    files named <prompt id>.wav, as AudioLDM writes them; a synthetic reference with the same names)
    python benchmarks/audioldm_eval_crosscheck.py prepare /tmp/aexcheck

    # 2. a throwaway venv with the reference code
    python3 -m venv /tmp/fadref
    /tmp/fadref/bin/pip install torch==2.13.0 numpy scipy librosa resampy soundfile tqdm
    /tmp/fadref/bin/pip install --no-deps torchlibrosa torchvggish==0.2 audioldm_eval==0.0.3 frechet-audio-distance==0.3.4
    /tmp/fadref/bin/python benchmarks/audioldm_eval_crosscheck.py reference /tmp/aexcheck

    # 3. the harness's environment: score the run with the protocol on the reference's weights, compare
    python benchmarks/audioldm_eval_crosscheck.py compare /tmp/aexcheck

Step 2 builds PANN CNN14 (16 kHz) and VGGish with random weights, saves them where
audioldm_eval and the harness read them, and runs ``EvaluationHelper(16000, "cpu").main(gen, ref)``.
What it would fetch or cannot import beside torch 2.13 is replaced: ``torch.hub.load`` returns a
local torchvggish ``VGGish`` (the hub class re-created on the pip package), torchaudio's ``load``
reads with soundfile (same samples for WAV), librosa's ``mel`` and ``pad_center`` get keywords (librosa 0.11),
DataLoader workers are 0, and its LSD/PSNR/SSIM dependencies (ssr_eval, skimage) are stubs:
those figures are not compared. Step 3 prints FD, FAD, KL (softmax, sigmoid) and IS side by side.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

N_PROMPTS = 24
GEN_SECONDS = 1.5  # below audioldm_eval's 2 s padding of PANN input
REF_SECONDS = (1.0, 2.5, 4.0, 10.24)  # cycled over the reference clips


def _prompts(out: Path) -> Path:
    path = out / "prompts.jsonl"
    words = ["dog barking", "rain on a roof", "a car passing", "birds singing", "a bell", "wind", "footsteps",
             "a crowd cheering"]
    path.write_text("".join(json.dumps({"id": f"p{i:02d}", "text": f"{words[i % len(words)]} {i}"}) + "\n"
                            for i in range(N_PROMPTS)))
    return path


def prepare(out: Path) -> None:
    """A tiny run (one cell, one seed per prompt) and the folders audioldm_eval reads."""
    import soundfile as sf

    from harness.data.synthetic import KINDS, synth_clip
    from harness.generate.run import run_sweep
    from harness.store import RunStore

    out.mkdir(parents=True, exist_ok=True)
    sweep = out / "sweep.toml"
    sweep.write_text(f'name = "x"\ncheckpoints = ["tiny-audio"]\nschedulers = ["ddim"]\nsteps = [3]\n'
                     f"audio_lengths_s = [{GEN_SECONDS}]\nseeds = [0]\ndevice = \"cpu\"\nbatch_size = 4\n"
                     f'[prompts]\nset = "{_prompts(out)}"\n')
    run_sweep(str(sweep), out / "run", progress=False)
    store = RunStore.read_only(out / "run")
    samples = sorted(store.samples(), key=lambda s: s["prompt_id"])
    store.close()
    for folder in ("gen", "gen_float", "ref"):
        (out / folder).mkdir(exist_ok=True)
    for i, s in enumerate(samples):
        pid = s["prompt_id"]
        audio, rate = sf.read(out / "run" / s["audio_path"], dtype="float32")
        sf.write(out / "gen" / f"{pid}.wav", audio, rate, subtype="PCM_16")  # as AudioLDM saves its output
        sf.write(out / "gen_float" / f"{pid}.wav", audio, rate, subtype="FLOAT")  # the run's own samples
        ref = synth_clip(KINDS[i % len(KINDS)], np.random.default_rng([7, i]), 16000, REF_SECONDS[i % len(REF_SECONDS)])
        sf.write(out / "ref" / f"{pid}.wav", ref, 16000, subtype="PCM_16")
    print(f"prepared {len(samples)} generated and reference clips in {out}")


def _calibrate(cnn, paths) -> None:
    """Batch-norm statistics from the reference clips (a random CNN14 with default statistics maps
    every input to nearly the same output, so KL and IS would compare constants)."""
    import soundfile as sf
    import torch

    for m in cnn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    cnn.train()
    with torch.no_grad():
        for path in paths:
            audio = torch.from_numpy(sf.read(path, dtype="float32")[0][None])
            cnn(audio, None)
    cnn.eval()


def _randomise_batch_norms(model) -> None:
    """Perturb the statistics and affine terms so that they matter (and differ from 0/1)."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(torch.empty_like(m.running_mean).uniform_(-0.1, 0.1) * m.running_var.sqrt())
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def reference_weights(out: Path):
    """Random CNN14 (as frechet-audio-distance's Cnn14_16k) and VGGish weights, saved where both tools look."""
    import importlib
    import os
    import site

    import torch

    root = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    package = types.ModuleType("frechet_audio_distance")  # its __init__ imports laion_clap and encodec
    package.__path__ = [f"{root}/frechet_audio_distance"]
    sys.modules.setdefault("frechet_audio_distance", package)
    pann = importlib.import_module("frechet_audio_distance.models.pann")
    from torchvggish import torchvggish as tv

    (out / "ckpt").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cnn = pann.Cnn14_16k(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000,
                         classes_num=527).eval()
    _calibrate(cnn, [out / "ref" / n for n in sorted(os.listdir(out / "ref"))])
    _randomise_batch_norms(cnn)
    state = {"model": cnn.state_dict()}
    torch.save(state, out / "ckpt" / "Cnn14_16k_mAP=0.438.pth")  # audioldm_eval: ckpt/ under the cwd
    torch.save(state, out / "ckpt" / "Cnn14_16k_mAP%3D0.438.pth")  # frechet-audio-distance: URL-quoted name
    (out / "ckpt" / "Cnn14_mAP=0.431.pth").write_bytes(b"")  # its download check looks for this one
    torch.manual_seed(1)
    vgg = tv.VGG(tv.make_layers(), postprocess=False).eval()
    with torch.no_grad():  # He gain: default init shrinks activations ~6x in variance per ReLU layer
        for m in vgg.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(6 ** 0.5)
    torch.save(vgg.state_dict(), out / "vggish.pth")
    return vgg.state_dict()


def hub_vggish(state):
    """torchvggish's hub ``VGGish`` (forward(audio, sample_rate)) on the pip package, with ``state``."""
    import torch
    from torchvggish import torchvggish as tv
    from torchvggish import vggish_input

    class VGGish(tv.VGG):
        def __init__(self) -> None:
            super().__init__(tv.make_layers(), postprocess=False)
            self.load_state_dict(state)
            self.device = torch.device("cpu")
            self.preprocess = True

        def forward(self, x, fs=None):
            if self.preprocess:
                x = vggish_input.waveform_to_examples(x, fs).float().to(self.device)
            return tv.VGG.forward(self, x)

    return VGGish().eval()


def _stub_modules() -> None:
    import soundfile as sf
    import torch

    def load(path):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), rate

    def resample(*args, **kwargs):
        raise RuntimeError("the cross-check folders are 16 kHz: no resampling expected")

    torchaudio = types.ModuleType("torchaudio")
    torchaudio.load = load
    torchaudio.functional = types.SimpleNamespace(resample=resample)
    sys.modules["torchaudio"] = torchaudio
    ssr = types.ModuleType("ssr_eval.metrics")
    ssr.AudioMetrics = lambda rate: types.SimpleNamespace(evaluation=lambda a, b, c: {"lsd": 0.0, "ssim": 0.0})
    sys.modules["ssr_eval"], sys.modules["ssr_eval.metrics"] = types.ModuleType("ssr_eval"), ssr
    skm = types.ModuleType("skimage.metrics")
    skm.peak_signal_noise_ratio = lambda *a, **k: 0.0
    skm.structural_similarity = lambda *a, **k: 0.0
    sys.modules["skimage"], sys.modules["skimage.metrics"] = types.ModuleType("skimage"), skm


def reference(out: Path) -> None:
    """Run audioldm_eval's EvaluationHelper on gen/ and ref/ with the shared random weights."""
    import os

    import torch

    state = reference_weights(out)
    torch.hub.load = lambda *args, **kwargs: hub_vggish(state)
    _stub_modules()
    import librosa.filters

    import audioldm_eval.audio.stft as stft

    import librosa.util

    mel, pad = librosa.filters.mel, librosa.util.pad_center  # librosa 0.10+ takes keywords only
    stft.librosa_mel_fn = lambda sr, n_fft, n_mels, fmin, fmax: mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    stft.pad_center = lambda data, size, **kw: pad(data, size=size, **kw)
    import audioldm_eval.eval as ev

    loader = ev.DataLoader
    ev.DataLoader = lambda *a, **k: loader(*a, **{**k, "num_workers": 0})
    os.chdir(out)  # its CNN14 loads ckpt/Cnn14_16k_mAP=0.438.pth from the working directory
    helper = ev.EvaluationHelper(16000, torch.device("cpu"))
    features = helper.get_featuresdict
    saved = {}

    def keep(loader):  # its CNN14 outputs, to separate formula differences from network round-off
        found = features(loader)
        saved[Path(loader.dataset.datalist[0]).parent.name] = found
        return found

    helper.get_featuresdict = keep
    result = helper.main(str(out / "gen"), str(out / "ref"))
    np.savez(out / "audioldm_eval_features.npz",
             **{f"{folder}_{key}": found[key].numpy() for folder, found in saved.items() for key in ("2048", "logits")},
             **{f"{folder}_names": np.array(found["file_path_"]) for folder, found in saved.items()})
    (out / "audioldm_eval.json").write_text(json.dumps(result, indent=1))
    print(f"audioldm_eval figures written to {out / 'audioldm_eval.json'}")


FIGURES = (("FD", "fad", "pann", "frechet_distance"), ("FAD", "fad", "vggish", "frechet_audio_distance"),
           ("KL", "kl_softmax", "pann", "kullback_leibler_divergence_softmax"),
           ("KL_sig", "kl_sigmoid", "pann", "kullback_leibler_divergence_sigmoid"),
           ("IS", "inception_score", "pann", "inception_score_mean"))


def compare(out: Path) -> None:
    """Score the run with the protocol on the reference's weights; print both sets of figures."""
    from harness.score.scoring import score_run

    theirs = json.loads((out / "audioldm_eval.json").read_text())
    result = score_run(out / "run", str(out / "ref"), protocol="audioldm-eval", substitute={"clap": "tiny-clap"},
                       weights={"pann": str(out / "ckpt" / "Cnn14_16k_mAP=0.438.pth"), "vggish": str(out / "vggish.pth")},
                       pair_by="stem", bootstrap=0, cache_dir=out / "cache")
    rows = {(r["metric"], r["embedder"]): r for r in result.rows}
    print("| figure | harness | audioldm_eval 0.0.3 | relative difference |\n|---|---|---|---|")
    for label, metric, embedder, key in FIGURES:
        ours, ref = rows[(metric, embedder)]["value"], theirs[key]
        print(f"| {label} ({metric} on {embedder}) | {ours:.9g} | {ref:.9g} | {abs(ours - ref) / abs(ref):.2g} |")
    is_std = rows[("inception_score", "pann")]["details"]["std"]
    print(f"| IS std | {is_std:.9g} | {theirs['inception_score_std']:.9g} | "
          f"{abs(is_std - theirs['inception_score_std']) / abs(theirs['inception_score_std']):.2g} |")
    _formulas_on_their_features(out, theirs)


def _formulas_on_their_features(out: Path, theirs: dict) -> None:
    """The harness's metric code on audioldm_eval's own CNN14 outputs: differences of formula alone,
    and how far the two networks' outputs are apart (float32 round-off of two implementations)."""
    from harness.score.embed.audio import Clip
    from harness.score.embed.pann import PannEmbedder
    from harness.score.metrics import fad_from_embeddings
    from harness.score.metrics.inception import inception_score
    from harness.score.metrics.kl import kl_divergences

    f = np.load(out / "audioldm_eval_features.npz")
    gen = dict(zip(f["gen_names"], range(len(f["gen_names"]))))
    ref = dict(zip(f["ref_names"], range(len(f["ref_names"]))))
    names = sorted(set(gen) & set(ref))
    g, r = f["gen_logits"][[gen[n] for n in names]], f["ref_logits"][[ref[n] for n in names]]
    ours = {"frechet_distance": fad_from_embeddings(f["gen_2048"], f["ref_2048"]).value,
            "kullback_leibler_divergence_softmax": float(np.mean(kl_divergences(g, r, "softmax"))),
            "kullback_leibler_divergence_sigmoid": float(np.mean(kl_divergences(g, r, "sigmoid"))),
            "inception_score_mean": inception_score(f["gen_logits"]).mean}
    print("\nthe harness's formulas on audioldm_eval's own CNN14 outputs:\n")
    print("| figure | harness formula | audioldm_eval | relative difference |\n|---|---|---|---|")
    for key, value in ours.items():
        print(f"| {key} | {value:.9g} | {theirs[key]:.9g} | {abs(value - theirs[key]) / abs(theirs[key]):.2g} |")
    pann = PannEmbedder(weights=str(out / "ckpt" / "Cnn14_16k_mAP=0.438.pth"), frontend="audioldm-eval")
    emb, extra = pann.embed_audio_outputs([Clip.from_file(out / "gen" / n).samples for n in f["gen_names"]])
    d_emb = np.abs(np.concatenate(emb) - f["gen_2048"]).max() / np.abs(f["gen_2048"]).max()
    d_log = np.abs(np.concatenate(extra["logits"]) - f["gen_logits"]).max() / np.abs(f["gen_logits"]).max()
    print(f"\nCNN14 outputs, harness vs audioldm_eval, generated clips: embedding max |diff| / max |value| "
          f"{d_emb:.2g}, logits {d_log:.2g}")


if __name__ == "__main__":
    {"prepare": prepare, "reference": reference, "compare": compare}[sys.argv[1]](Path(sys.argv[2]).resolve())
