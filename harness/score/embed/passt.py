"""``passt`` and ``tiny-passt``: PaSST AudioSet logits (527 classes) per 10 s window at 32 kHz, as
stable-audio-metrics' ``src/passt_kld.py`` computes them.

stable-audio-metrics loads ``hear21passt.base.get_basic_model(mode="logits")``: the
``passt_s_swa_p16_128_ap476`` network (PaSST-S, Koutini et al. 2021: a DeiT-base distilled ViT,
16x16 patches with stride 10 over a 128-band log-mel, separate frequency and time positional
embeddings) behind hear21passt's ``AugmentMelSTFT`` front end, in eval mode. Per file it loads
mono at 32 kHz (librosa, soxr_hq), peak-normalises to -1 dBFS, cuts 10 s windows every 5 s
(``passt_windows``) and runs each window alone. This module
computes the same:

* front end (eval: no masking, no fmin/fmax jitter): pre-emphasis ``x[n+1] - 0.97 x[n]``;
  ``torch.stft`` n_fft 1024, hop 320, a symmetric 800-point Hann window, centred with reflect
  padding; power; 128 Kaldi mel bands (``torchaudio.compliance.kaldi.get_mel_banks``: triangles
  in ``1127 ln(1 + f/700)`` space from 0 to 15 000 Hz, unnormalised; written out here, equal to
  torchaudio's to float32 round-off) with a zero column for the Nyquist bin; ``log(mel + 1e-5)``;
  ``(x + 4.5) / 5``;
* network: patch embedding (conv 16x16, stride 10), plus the time positional embedding cut to
  the window's length and the frequency one; class and distillation tokens; 12 pre-norm blocks
  (12 heads, MLP 3072, GELU, LayerNorm eps 1e-6); the two token outputs averaged
  (``features``, 768-d) and ``head`` (LayerNorm + Linear) gives the 527 logits (``head_dist`` is
  loaded but, as in hear21passt's forward, unused).

Outputs: the embedding is ``features`` (768-d) per window; beside it ``logits`` (527) per window,
which ``kl_passt`` collapses (mean over windows) and softmaxes. Parameter names equal those of the
published ``passt-s-f128-p16-s10-ap.476-swa.pt``, which loads with strict key checking.

Dependency choice: hear21passt 0.0.26 installs beside our pins but does not import: it needs
torchaudio (for the mel matrix and masking), and the newest torchaudio on the index (2.11.1) does
not load against torch 2.13 (``OSError: Could not load this library: _torchaudio.so``). So the
model is written here with its published names, like ``pann`` and ``vggish``.

``tiny-passt`` is the same computation with a narrow, shallow random transformer, for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from harness.score.embed._torch import TorchEmbedder, local_weights_path
from harness.score.embed.audio import RESAMPLER, Clip, peak_normalize
from harness.score.embed.registry import EmbedderError, register

__all__ = ["PasstEmbedder", "TinyPasstEmbedder", "build_passt", "kaldi_mel_banks", "passt_log_mel", "passt_windows"]

PASST_SAMPLE_RATE = 32000
PASST_WINDOW_S, PASST_OVERLAP_S, PASST_MIN_FRACTION = 10, 5, 0.15

WEIGHTS_FILE = "passt-s-f128-p16-s10-ap.476-swa.pt"
WEIGHTS_URL = "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/" + WEIGHTS_FILE
FRONT_END = {"sample_rate": PASST_SAMPLE_RATE, "n_fft": 1024, "win_length": 800, "hop_length": 320, "n_mels": 128,
             "fmin": 0.0, "fmax": 15000.0, "preemphasis": 0.97, "log_offset": 1e-5, "shift": 4.5, "scale": 5.0,
             "peak_dbfs": -1.0}
FULL = {"embed_dim": 768, "depth": 12, "num_heads": 12, "classes": 527}
GRID = (12, 99)  # (frequency, time) patches of a 128 x 998 input with 16x16 patches, stride 10
_MISSING = (f"passt: weights file {{path}} not found. On a machine with network: wget -O '{{path}}' '{WEIGHTS_URL}' "
            "(the file hear21passt downloads for passt_s_swa_p16_128_ap476), then copy it here; or point "
            "AUDIOLDM2_HARNESS_PASST_WEIGHTS at it")


def passt_windows(samples: np.ndarray) -> list[np.ndarray]:
    """The 10 s analysis windows of a 32 kHz clip, as ``return_probabilities`` cuts them.

    Starts every 5 s over ``range(0, max(step, len - step), step)``; a window shorter than 10 s
    is zero-padded to 10 s when it holds more than 15% of 10 s, and otherwise left short (the
    reference's comment says such windows are discarded, but its code feeds them to PaSST
    unpadded; this follows the code). A 10.24 s clip gives two windows: 0-10 s and 5-10.24 s
    padded.
    """
    x = np.asarray(samples).reshape(-1)
    size = int(PASST_WINDOW_S * PASST_SAMPLE_RATE)
    step = int((PASST_WINDOW_S - PASST_OVERLAP_S) * PASST_SAMPLE_RATE)
    windows = []
    for start in range(0, max(step, x.size - step), step):
        window = x[start:start + size]
        if window.size < size and window.size > int(size * PASST_MIN_FRACTION):
            window = np.pad(window, (0, size - window.size))
        windows.append(window)
    return windows


def kaldi_mel_banks() -> np.ndarray:
    """(128, 513) float32 mel matrix: torchaudio's kaldi ``get_mel_banks(128, 1024, 32000, 0, 15000, ...)``
    (no VTLN warp) with hear21passt's extra zero column for the Nyquist bin."""
    import torch

    f = FRONT_END

    def mel(hz):
        return 1127.0 * torch.log(1.0 + hz / 700.0)

    # float32 tensors as torchaudio builds them, so the matrix matches it bit for bit or nearly
    low = 1127.0 * np.log(1.0 + f["fmin"] / 700.0)
    high = 1127.0 * np.log(1.0 + f["fmax"] / 700.0)
    delta = (high - low) / (f["n_mels"] + 1)
    b = torch.arange(f["n_mels"]).unsqueeze(1)
    left, centre, right = low + b * delta, low + (b + 1.0) * delta, low + (b + 2.0) * delta
    bins = mel((f["sample_rate"] / f["n_fft"]) * torch.arange(f["n_fft"] // 2)).unsqueeze(0)
    up, down = (bins - left) / (centre - left), (right - bins) / (right - centre)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1)).numpy().astype(np.float32)


def passt_log_mel(audio: "torch.Tensor", mel_banks: "torch.Tensor", window: "torch.Tensor") -> "torch.Tensor":
    """(batch, samples) 32 kHz -> (batch, 128, frames) normalised log-mel, AugmentMelSTFT in eval mode."""
    import torch

    f = FRONT_END
    x = audio[:, 1:] - f["preemphasis"] * audio[:, :-1]  # conv1d with [-0.97, 1]
    spec = torch.stft(x, f["n_fft"], hop_length=f["hop_length"], win_length=f["win_length"], window=window,
                      center=True, normalized=False, return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2
    return (torch.log(mel_banks @ power + f["log_offset"]) + f["shift"]) / f["scale"]


def build_passt(embed_dim: int = FULL["embed_dim"], depth: int = FULL["depth"], num_heads: int = FULL["num_heads"],
                classes: int = FULL["classes"]) -> "torch.nn.Module":
    """hear21passt's PaSST (distilled, patch 16, stride 10, 128 x 998 grid) in eval mode, with its names."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
            self.proj = nn.Linear(embed_dim, embed_dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
            attn = ((q @ k.transpose(-2, -1)) * (c // num_heads) ** -0.5).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act = nn.Linear(embed_dim, 4 * embed_dim), nn.GELU()
            self.fc2 = nn.Linear(4 * embed_dim, embed_dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(embed_dim, eps=1e-6), Attention()
            self.norm2, self.mlp = nn.LayerNorm(embed_dim, eps=1e-6), Mlp()

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(1, embed_dim, kernel_size=16, stride=10)

        def forward(self, x):
            return self.proj(x)

    class PaSST(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, embed_dim))
            self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, GRID[0], 1))
            self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, GRID[1]))
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, classes))
            self.head_dist = nn.Linear(embed_dim, classes)  # in the published file; unused by forward
            self.register_buffer("mel_banks", torch.from_numpy(kaldi_mel_banks()), persistent=False)
            self.register_buffer("window", torch.hann_window(FRONT_END["win_length"], periodic=False), persistent=False)

        def forward(self, audio):
            """(batch, samples) at 32 kHz -> (features (batch, dim), logits (batch, classes))."""
            x = self.patch_embed(passt_log_mel(audio, self.mel_banks, self.window).unsqueeze(1))
            x = x + self.time_new_pos_embed[:, :, :, :x.shape[-1]] + self.freq_new_pos_embed
            x = x.flatten(2).transpose(1, 2)
            b = x.shape[0]
            tokens = torch.cat([self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1],
                                self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]], dim=1)
            x = self.norm(self.blocks(torch.cat([tokens, x], dim=1)))
            features = (x[:, 0] + x[:, 1]) / 2
            return features, self.head(features)

    return PaSST().eval()


class _PasstBase(TorchEmbedder):
    """Shared code: peak normalisation, 10 s windows, one forward pass per window."""

    sample_rate = PASST_SAMPLE_RATE
    window_s = 10.0
    hop_s = 5.0
    batch_size = 4

    def output_features(self, model) -> int:
        return model.norm.normalized_shape[0]

    def output_dims(self) -> dict[str, int]:
        """Beside the 768-d features: the AudioSet ``logits`` per window."""
        return {"logits": self.model.head[1].out_features}

    def audio_of(self, clip: Clip) -> np.ndarray:
        """The clip at 32 kHz with the length ``librosa.load(sr=32000)`` gives (passt_kld.py loads it so)."""
        return clip.at_rate_librosa(self.sample_rate)

    def preprocessing(self) -> dict[str, Any]:
        return {**FRONT_END, "length": "librosa.load", "mel": "kaldi get_mel_banks, +zero Nyquist column",
                "window": "hann-symmetric 800 in 1024",
                "windows": "10 s every 5 s, range(0, max(step, n - step), step); padded to 10 s if > 15%",
                "embedding": "(cls + dist) / 2 after the final norm; logits = head(features)",
                "mono": "mean of channels", "resampler": RESAMPLER}

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.embed_audio_outputs(clips)[0]

    def embed_audio_outputs(self, clips: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
        """Per clip: (n_windows, dim) features and {"logits": (n_windows, classes)}."""
        import torch

        features, logits = [], []
        for clip in clips:
            if clip.size == 0:
                raise EmbedderError(f"{self.name}: cannot embed an empty clip")
            samples = peak_normalize(np.asarray(clip, dtype=np.float32).reshape(-1), FRONT_END["peak_dbfs"])
            rows = []
            for window in passt_windows(samples):  # one at a time: a short last window has its own length
                audio = torch.from_numpy(np.asarray(window, dtype=np.float32)[None]).to(self.device)
                with torch.no_grad():
                    rows.append([t.to("cpu").numpy() for t in self.model(audio)])
            features.append(np.concatenate([r[0] for r in rows]).astype(np.float32))
            logits.append(np.concatenate([r[1] for r in rows]).astype(np.float32))
        return features, {"logits": logits}


def default_weights_path() -> Path:
    """$AUDIOLDM2_HARNESS_PASST_WEIGHTS, else <harness cache>/weights/passt-s-f128-p16-s10-ap.476-swa.pt."""
    return local_weights_path("AUDIOLDM2_HARNESS_PASST_WEIGHTS", WEIGHTS_FILE)


@register
class PasstEmbedder(_PasstBase):
    """PaSST-S (passt_s_swa_p16_128_ap476) with its published weights from a local file."""

    name = "passt"
    description = ("PaSST-S AudioSet, 32 kHz, 10 s windows every 5 s: 768-d features + 527 logits per window "
                   "(weights: passt-s-f128-p16-s10-ap.476-swa.pt, local file)")
    version = "1"

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        self._from_file(Path(weights or default_weights_path()), build_passt, device, _MISSING)


@register
class TinyPasstEmbedder(_PasstBase):
    """PaSST's computation with a narrow two-block random transformer (tests only)."""

    name = "tiny-passt"
    description = "random-weight narrow PaSST (tests; logits are meaningless)"
    version = "1"

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self._random(seed, lambda: _spread(build_passt(embed_dim=16, depth=2, num_heads=2, classes=527)), device)


def _spread(model):
    """Random positional embeddings and a scaled head, so a random tiny PaSST's logits vary with its input."""
    import torch

    with torch.no_grad():
        for p in (model.cls_token, model.dist_token, model.new_pos_embed, model.freq_new_pos_embed,
                  model.time_new_pos_embed):
            p.normal_(0, 0.02)
        model.head[1].weight.mul_(10.0)
    return model
