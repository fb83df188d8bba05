"""``pann`` and ``tiny-pann``: CNN14 embeddings (PANNs, 16 kHz variant), 2048-d.

The network is PANNs' ``Cnn14_16k`` (Kong et al. 2020), the model frechet-audio-distance uses
for its PANN embeddings: six blocks of two 3x3 conv + batch-norm + ReLU (64 to 2048 channels,
2x2 average pooling after the first five), mean over mel bins, max + mean over time, then
``relu(fc1(.))``: the 2048-d ``embedding``. Parameter names equal those of the published
checkpoint ``Cnn14_16k_mAP=0.438.pth`` (Zenodo record 3987831), which loads with strict key
checking; its fixed STFT kernels are not needed, and its mel filterbank is checked against ours.

Front end (fixed): 16 kHz mono; power STFT with a 512-point periodic Hann window, hop 160,
centred with reflect padding; 64 Slaney-scale, Slaney-normalised mel filters from 50 to
8000 Hz (librosa's default filterbank); ``10 * log10(max(mel, 1e-10))``.

Window rule (fixed): the whole clip is one input and gives one embedding, as in
frechet-audio-distance; no crops, so the same audio always gives the same embedding. Clips
shorter than 0.31 s (the 32 frames the network's five poolings need) are zero-padded to it. The
network runs in eval mode (no dropout, running batch-norm statistics).

Outputs: the 2048-d embedding and, beside it, the 527 AudioSet class logits of the published
head, ``fc_audioset(relu(fc1(.)))`` (audioldm_eval's ``"logits"``; the KL and Inception Score
metrics use them); both are cached.

Front ends (option ``frontend``): ``frechet-audio-distance`` (default, as above) or
``audioldm-eval``, what audioldm_eval 0.0.3's ``WaveDataset`` feeds its CNN14: the clip as a
16-bit PCM file holds it (``pcm16_round_trip``), its mean subtracted, zero-padded to 2 s, and
the STFT computed as torchlibrosa does (a conv1d with its DFT kernels: float32 round-off then
matches audioldm_eval's CNN14 closely; ``torch.stft`` differs by about 1e-6 relative).
(audioldm_eval takes the first channel where the harness averages channels, and resamples with
torchaudio where the harness uses soxr: equal for mono 16 kHz audio, AudioLDM 2's output.)

``tiny-pann`` is the same network with narrow random layers (seeded), for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from harness.score.embed._torch import TorchEmbedder, local_weights_path
from harness.score.embed.audio import RESAMPLER, pcm16_round_trip
from harness.score.embed.registry import EmbedderError, register

__all__ = ["PannEmbedder", "TinyPannEmbedder", "build_cnn14", "pann_log_mel_filters"]

WEIGHTS_FILE = "Cnn14_16k_mAP=0.438.pth"
WEIGHTS_URL = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1"
FULL_WIDTHS = (64, 128, 256, 512, 1024, 2048)
_MISSING = (f"pann: weights file {{path}} not found. Download {WEIGHTS_FILE} (Zenodo record 3987831) on a machine "
            f"with network: wget -O '{{path}}' '{WEIGHTS_URL}', then copy it here; or point "
            "AUDIOLDM2_HARNESS_PANN_WEIGHTS (or --pann-weights) at it")
FRONT_END = {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "fmin": 50.0, "fmax": 8000.0}
MIN_SAMPLES = 31 * FRONT_END["hop_length"]  # 1 + n // hop = 32 centred frames, for five 2x2 poolings
FRONTENDS = ("frechet-audio-distance", "audioldm-eval")
AUDIOLDM_EVAL_MIN_SAMPLES = 32000  # audioldm_eval's pad_short_audio


def pann_log_mel_filters() -> np.ndarray:
    """(257, 64) Slaney mel filterbank of the front end (what librosa.filters.mel gives, transposed)."""
    from transformers.audio_utils import mel_filter_bank

    f = FRONT_END
    return mel_filter_bank(num_frequency_bins=f["n_fft"] // 2 + 1, num_mel_filters=f["n_mels"],
                           min_frequency=f["fmin"], max_frequency=f["fmax"], sampling_rate=f["sample_rate"],
                           norm="slaney", mel_scale="slaney")


def torch_mel_filters() -> "torch.Tensor":
    """The front end's mel filterbank as a float32 tensor (the published file's ``melW``)."""
    import torch

    return torch.from_numpy(pann_log_mel_filters()).float()


def torchlibrosa_dft_kernels() -> tuple[np.ndarray, np.ndarray]:
    """(257, 1, 512) float32 real and imaginary STFT kernels exactly as torchlibrosa builds them
    (DFT matrix by ``np.power``, periodic Hann window), for the conv-STFT front end."""
    import scipy.signal

    n = FRONT_END["n_fft"]
    x, y = np.meshgrid(np.arange(n), np.arange(n))
    w = np.power(np.exp(-2 * np.pi * 1j / n), x * y)[:, : n // 2 + 1] * scipy.signal.get_window("hann", n, fftbins=True)[:, None]
    return np.real(w).T[:, None, :].astype(np.float32), np.imag(w).T[:, None, :].astype(np.float32)


def build_cnn14(widths: Sequence[int] = FULL_WIDTHS, classes: int = 527) -> "torch.nn.Module":
    """A Cnn14_16k network (eval mode) whose layer names match the published checkpoint."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, x, pool):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return F.avg_pool2d(x, kernel_size=pool)

    class Cnn14(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn0 = nn.BatchNorm2d(FRONT_END["n_mels"])
            channels = (1, *widths)
            for i in range(6):
                self.add_module(f"conv_block{i + 1}", ConvBlock(channels[i], channels[i + 1]))
            self.fc1 = nn.Linear(widths[-1], widths[-1])
            self.fc_audioset = nn.Linear(widths[-1], classes)  # AudioSet head: the logits output
            self.register_buffer("mel_filters", torch_mel_filters(), persistent=False)
            self.register_buffer("window", torch.hann_window(FRONT_END["n_fft"], periodic=True), persistent=False)
            self.conv_stft = False  # True: the STFT as torchlibrosa computes it (a conv1d with DFT kernels)

        def power_spectrogram(self, audio):
            """(batch, samples) -> (batch, frames, bins) power, centred with reflect padding."""
            if not self.conv_stft:
                spec = torch.stft(audio, FRONT_END["n_fft"], FRONT_END["hop_length"], window=self.window,
                                  center=True, pad_mode="reflect", return_complex=True)
                return spec.abs().pow(2).transpose(1, 2)
            real, imag = (torch.from_numpy(k).to(audio.device) for k in torchlibrosa_dft_kernels())
            half = FRONT_END["n_fft"] // 2
            x = F.pad(audio[:, None, :], (half, half), mode="reflect")
            re = F.conv1d(x, real, stride=FRONT_END["hop_length"])
            im = F.conv1d(x, imag, stride=FRONT_END["hop_length"])
            return (re ** 2 + im ** 2).transpose(1, 2)

        def log_mel(self, audio):
            """(batch, samples) -> (batch, 1, frames, mels) in dB."""
            power = self.power_spectrogram(audio)
            return (10.0 * torch.log10(torch.clamp(power @ self.mel_filters, min=1e-10)))[:, None]

        def forward(self, audio):
            return self.heads(audio)[0]

        def heads(self, audio):
            """(embedding, AudioSet logits) of a (batch, samples) input."""
            x = self.log_mel(audio).transpose(1, 3)
            x = self.bn0(x).transpose(1, 3)  # batch-norm over mel bins
            for i in range(1, 7):
                x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
            x = torch.mean(x, dim=3)
            x = torch.max(x, dim=2).values + torch.mean(x, dim=2)
            embedding = F.relu(self.fc1(x))
            return embedding, self.fc_audioset(embedding)

    return Cnn14().eval()


class _PannBase(TorchEmbedder):
    """Shared embedding code: one whole-clip forward pass per clip."""

    sample_rate = FRONT_END["sample_rate"]
    window_s = 0.0  # 0: the whole clip is the window (see the module docstring)
    hop_s = 0.0
    batch_size = 1

    frontend = "frechet-audio-distance"

    def _set_frontend(self, frontend: str) -> None:
        if frontend not in FRONTENDS:
            raise EmbedderError(f"{self.name}: unknown frontend {frontend!r}; valid: {', '.join(FRONTENDS)}")
        self.frontend = frontend

    def _setup(self, model, device: str) -> None:
        model.conv_stft = self.frontend == "audioldm-eval"  # bit-for-bit closer to audioldm_eval's torchlibrosa
        super()._setup(model, device)

    def output_features(self, model) -> int:
        return model.fc1.out_features

    def output_dims(self) -> dict[str, int]:
        return {"logits": self.model.fc_audioset.out_features}

    def preprocessing(self) -> dict[str, Any]:
        extra = {} if self.frontend == FRONTENDS[0] else {
            "frontend": self.frontend, "input": "16-bit PCM round trip, mean removed, zero-padded to 2 s",
            "stft": "conv1d with torchlibrosa's DFT kernels"}
        return {**FRONT_END, "window": "hann-periodic", "center": "reflect", "mel_scale": "slaney",
                "mel_norm": "slaney", "db": "10*log10(max(mel, 1e-10))", "window_rule": "whole clip",
                "embedding": "relu(fc1), eval mode", "mono": "mean of channels", "resampler": RESAMPLER, **extra}

    def _input(self, clip: np.ndarray) -> np.ndarray:
        samples = np.asarray(clip, dtype=np.float32).reshape(-1)
        minimum = MIN_SAMPLES  # five 2x2 poolings need 32 frames
        if self.frontend == "audioldm-eval":
            samples = pcm16_round_trip(samples, self.sample_rate)
            samples = samples - samples.mean()  # float32, as torch does it there
            minimum = AUDIOLDM_EVAL_MIN_SAMPLES
        if samples.size < minimum:
            samples = np.pad(samples, (0, minimum - samples.size))
        return samples

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.embed_audio_outputs(clips)[0]

    def embed_audio_outputs(self, clips: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
        import torch

        embeddings, logits = [], []
        for clip in clips:
            if clip.size == 0:
                raise EmbedderError(f"{self.name}: cannot embed an empty clip")
            audio = torch.from_numpy(self._input(clip)[None]).to(self.device)
            with torch.no_grad():
                emb, logit = self.model.heads(audio)
            embeddings.append(emb.to("cpu").numpy().astype(np.float32))
            logits.append(logit.to("cpu").numpy().astype(np.float32))
        return embeddings, {"logits": logits}


def default_weights_path() -> Path:
    """$AUDIOLDM2_HARNESS_PANN_WEIGHTS, else <harness cache>/weights/Cnn14_16k_mAP=0.438.pth."""
    return local_weights_path("AUDIOLDM2_HARNESS_PANN_WEIGHTS", WEIGHTS_FILE)


@register
class PannEmbedder(_PannBase):
    """CNN14 (PANNs, 16 kHz) with the published weights from a local file."""

    name = "pann"
    description = "PANNs CNN14 16 kHz, 2048-d, whole clip (weights: Cnn14_16k_mAP=0.438.pth, local file)"
    version = "1"

    def __init__(self, weights: str | None = None, device: str = "cpu", frontend: str = FRONTENDS[0]) -> None:
        self._set_frontend(frontend)
        self._from_file(Path(weights or default_weights_path()), build_cnn14, device, _MISSING,
                        ignore=("spectrogram_extractor.",), check={"logmel_extractor.melW": torch_mel_filters()})


@register
class TinyPannEmbedder(_PannBase):
    """CNN14's structure with narrow random layers (tests only: its distances mean nothing)."""

    name = "tiny-pann"
    description = "random-weight narrow CNN14 (tests; embeddings are meaningless)"
    version = "2"

    def __init__(self, seed: int = 0, device: str = "cpu", frontend: str = FRONTENDS[0]) -> None:
        self._set_frontend(frontend)
        self._random(seed, lambda: _sensitive(build_cnn14(widths=(4, 8, 8, 16, 16, 32), classes=10)), device)


def _sensitive(model):
    """Batch-norm statistics and head scale that keep a random narrow CNN14 sensitive to its input.

    With default statistics (mean 0, variance 1) the log-mel input (about -3.5 +- 3 dB for
    typical test audio) and twelve bias-free layers shrink every input to nearly the same
    embedding, so tests of KL or IS would compare constants. These values give embeddings and
    logits that differ between noise and tones (logits spread of a few units).
    """
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.fill_(-3.5 if name == "bn0" else 0.0)
                module.running_var.fill_(9.0 if name == "bn0" else 0.25)
        model.fc_audioset.weight.mul_(30.0)
    return model
