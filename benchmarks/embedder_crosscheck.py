"""Cross-check the harness's PANN and VGGish against the implementations they re-create.

frechet-audio-distance (its Cnn14_16k, with torchlibrosa's front end) and torchvggish cannot be
installed beside this project (numpy<2 pins), so this runs in two environments:

    # 1. a throwaway venv with the reference code
    python3 -m venv /tmp/fadref
    /tmp/fadref/bin/pip install torch==2.13.0 numpy scipy librosa resampy
    /tmp/fadref/bin/pip install --no-deps torchlibrosa frechet-audio-distance==0.3.4 torchvggish==0.2
    /tmp/fadref/bin/python benchmarks/embedder_crosscheck.py reference /tmp/xcheck

    # 2. the harness's environment: load the reference's random weights, embed the same audio
    python benchmarks/embedder_crosscheck.py compare /tmp/xcheck

Step 1 builds both reference networks with random weights (batch-norm statistics randomised
too, so they matter), saves the state dicts in the published files' layouts and the reference
embeddings of three clips (1 s, 2.56 s / 3 s, 10.24 s). Step 2 loads those files with the
harness embedders (strict key checks; PANN's mel filterbank checked) and prints the largest
differences.
"""

from __future__ import annotations

import importlib
import site
import sys
import types
from pathlib import Path

import numpy as np
import torch

LENGTHS = {"pann": (16000, 40960, 163840), "vggish": (16000, 48000, 163840)}


def _clips(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.1, n).astype(np.float32) for n in LENGTHS[name]]


def randomise_batch_norms(model: torch.nn.Module) -> None:
    """Draw every BatchNorm2d's statistics and affine terms at random, so that they matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def reference(out: Path) -> None:
    """Reference networks, weights files and embeddings (run where the reference code imports)."""
    # frechet_audio_distance/__init__ imports laion_clap and more: load only its models package.
    root = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    package = types.ModuleType("frechet_audio_distance")
    package.__path__ = [f"{root}/frechet_audio_distance"]
    sys.modules["frechet_audio_distance"] = package
    pann = importlib.import_module("frechet_audio_distance.models.pann")
    from torchvggish import torchvggish as tv, vggish_input

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cnn = pann.Cnn14_16k(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000,
                         classes_num=527).eval()
    randomise_batch_norms(cnn)
    torch.save({"model": cnn.state_dict()}, out / "cnn14.pth")
    with torch.no_grad():
        np.save(out / "pann.npy", np.stack([cnn(torch.from_numpy(c[None]), None)["embedding"][0].numpy()
                                            for c in _clips("pann")]))
    torch.manual_seed(1)
    vgg = tv.VGG(tv.make_layers(), postprocess=False).eval()
    vgg.embeddings = torch.nn.Sequential(*list(vgg.embeddings.children())[:-1])  # as frechet-audio-distance
    torch.save(vgg.state_dict(), out / "vggish.pth")
    with torch.no_grad():
        rows = [vgg(vggish_input.waveform_to_examples(c.astype(np.float64), 16000).float()).numpy()
                for c in _clips("vggish")]
    np.savez(out / "vggish.npz", *rows)
    print(f"reference written to {out}")


def compare(out: Path) -> None:
    """Load the reference weights into the harness embedders and compare embeddings."""
    from harness.score.embed.pann import PannEmbedder
    from harness.score.embed.vggish import VggishEmbedder

    pann = PannEmbedder(weights=str(out / "cnn14.pth"))
    ours = np.stack([pann.embed_audio([c])[0][0] for c in _clips("pann")])
    ref = np.load(out / "pann.npy")
    print(f"pann: max abs diff {np.abs(ours - ref).max():.3g} (embedding scale {np.abs(ref).max():.3g})")
    vggish = VggishEmbedder(weights=str(out / "vggish.pth"))
    refs = np.load(out / "vggish.npz")
    for clip, key in zip(_clips("vggish"), refs.files):
        mine, theirs = vggish.embed_audio([clip])[0], refs[key]
        assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
        print(f"vggish, {clip.size / 16000:.2f} s: {mine.shape[0]} examples, max abs diff "
              f"{np.abs(mine - theirs).max():.3g} (embedding scale {np.abs(theirs).max():.3g})")


if __name__ == "__main__":
    {"reference": reference, "compare": compare}[sys.argv[1]](Path(sys.argv[2]))
