"""``vggish`` and ``tiny-vggish``: VGGish embeddings, 128-d per 0.96 s example.

The network is VGGish as packaged by torchvggish (the model frechet-audio-distance loads from
the torch hub cache): four conv stages (64, 128, 256x2, 512x2 channels, 3x3, ReLU, 2x2 max
pooling), then 4096-4096-128 fully connected layers. As in frechet-audio-distance the PCA
post-processing is off and the last ReLU is dropped, so the embedding is the raw 128-d output
of the last linear layer. Parameter names equal those of torchvggish's ``vggish-10086976.pth``,
which loads with strict key checking from the torch hub cache (or any path given).

Front end (fixed; VGGish's own ``waveform_to_examples``): 16 kHz mono; frames of 400 samples
(25 ms) every 160 (10 ms), no padding; periodic Hann window; magnitude of a 512-point FFT; 64
HTK-mel bands from 125 to 7500 Hz (triangles in mel space, the DC bin zeroed);
``log(mel + 0.01)``; non-overlapping examples of 96 frames (0.96 s).

Window rule (fixed): examples start every 0.96 s while a whole one fits; the remainder of the
clip is dropped, as VGGish does. A clip too short for one example is zero-padded at its end to
one example (VGGish would return nothing). One embedding row per example.

Pooling (option ``pooling``): ``frames`` (default) pools every 0.96 s example of every clip of
a set into one set of rows before FAD/KAD, as frechet-audio-distance and audioldm_eval do;
``clip-mean`` averages each clip's examples into one row first (the harness's rule before
issue 10; not comparable with those tools). The pooling is part of the identity.

Front ends (option ``frontend``): ``frechet-audio-distance`` (default: the float samples) or
``audioldm-eval``: the clip as a 16-bit PCM file holds it (``pcm16_round_trip``), which is what
audioldm_eval 0.0.3 reads (``soundfile.read(dtype="int16") / 32768``). Note that audioldm_eval
reading a *float* WAV that way gets the raw floats truncated to integers (nearly all zeros):
its VGGish FAD only means something on 16-bit PCM files, which is what AudioLDM writes.

``tiny-vggish`` is the same structure with narrow random layers (seeded), for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from harness.score.embed._torch import TorchEmbedder
from harness.score.embed.audio import RESAMPLER, pcm16_round_trip
from harness.score.embed.registry import EmbedderError, register

__all__ = ["TinyVggishEmbedder", "VggishEmbedder", "build_vggish", "vggish_examples", "vggish_mel_matrix"]

WEIGHTS_FILE = "vggish-10086976.pth"
WEIGHTS_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
FRONT_END = {"sample_rate": 16000, "frame_length": 400, "hop_length": 160, "n_fft": 512, "n_mels": 64,
             "fmin": 125.0, "fmax": 7500.0, "log_offset": 0.01, "example_frames": 96}
FULL_WIDTHS = (64, 128, 256, 512, 4096)
POOLINGS = ("frames", "clip-mean")
FRONTENDS = ("frechet-audio-distance", "audioldm-eval")
_MISSING = (f"vggish: weights file {{path}} not found. On a machine with network: wget -O '{{path}}' '{WEIGHTS_URL}' "
            "(or run torch.hub.load('harritaylor/torchvggish', 'vggish') once), then copy the file here; or pass "
            "--vggish-weights PATH")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """(257, 64) VGGish mel weights: HTK-mel triangles built in mel space, DC bin zeroed."""
    f = FRONT_END
    bins_mel = _hz_to_mel(np.linspace(0.0, f["sample_rate"] / 2, f["n_fft"] // 2 + 1))
    edges = np.linspace(_hz_to_mel(f["fmin"]), _hz_to_mel(f["fmax"]), f["n_mels"] + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def vggish_examples(samples: np.ndarray) -> np.ndarray:
    """(n_examples, 96, 64) log-mel examples of one 16 kHz clip, by the module's window rule."""
    f = FRONT_END
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    need = f["frame_length"] + (f["example_frames"] - 1) * f["hop_length"]
    if x.size < need:
        x = np.pad(x, (0, need - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, f["frame_length"])[:: f["hop_length"]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(f["frame_length"]) / f["frame_length"])
    magnitude = np.abs(np.fft.rfft(frames * window, n=f["n_fft"], axis=1))
    log_mel = np.log(magnitude @ vggish_mel_matrix() + f["log_offset"])
    n = log_mel.shape[0] // f["example_frames"]
    return log_mel[: n * f["example_frames"]].reshape(n, f["example_frames"], f["n_mels"])


def build_vggish(widths: Sequence[int] = FULL_WIDTHS, dim: int = 128) -> "torch.nn.Module":
    """A VGGish network (eval mode, no PCA, no final ReLU) with torchvggish's layer names."""
    from torch import nn

    c1, c2, c3, c4, fc = widths
    layers: list[nn.Module] = []
    cin = 1
    for v in (c1, "M", c2, "M", c3, c3, "M", c4, c4, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v

    class VGGish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(nn.Linear(c4 * 4 * 6, fc), nn.ReLU(True), nn.Linear(fc, fc),
                                            nn.ReLU(True), nn.Linear(fc, dim))

        def forward(self, examples):
            x = self.features(examples)  # (n, c4, 6, 4)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # VGGish's (time, freq, channel) order
            return self.embeddings(x)

    return VGGish().eval()


class _VggishBase(TorchEmbedder):
    """Shared embedding code: examples of every clip, batched through the network."""

    sample_rate = FRONT_END["sample_rate"]
    window_s = 0.96
    hop_s = 0.96
    batch_size = 64  # examples per forward pass

    frontend = FRONTENDS[0]

    def _set_options(self, pooling: str, frontend: str) -> None:
        if pooling not in POOLINGS:
            raise EmbedderError(f"{self.name}: unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if frontend not in FRONTENDS:
            raise EmbedderError(f"{self.name}: unknown frontend {frontend!r}; valid: {', '.join(FRONTENDS)}")
        self.pooling, self.frontend = pooling, frontend

    def output_features(self, model) -> int:
        return model.embeddings[-1].out_features

    def preprocessing(self) -> dict[str, Any]:
        extra = {} if self.frontend == FRONTENDS[0] else {"frontend": self.frontend, "input": "16-bit PCM round trip"}
        return {**FRONT_END, "window": "hann-periodic", "spectrum": "magnitude", "mel_scale": "htk (1127 ln)",
                "log": "log(mel + 0.01)", "window_rule": "0.96 s examples from 0, remainder dropped; "
                "short clips zero-padded to one", "embedding": "raw last linear layer (no PCA, no ReLU)",
                "mono": "mean of channels", "resampler": RESAMPLER, "pooling": self.pooling, **extra}

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        per_clip = []
        for clip in clips:
            if clip.size == 0:
                raise EmbedderError(f"{self.name}: cannot embed an empty clip")
            if self.frontend == "audioldm-eval":
                clip = pcm16_round_trip(clip, self.sample_rate)
            per_clip.append(vggish_examples(clip))
        examples = np.concatenate(per_clip) if per_clip else np.zeros((0, 96, 64))
        rows = []
        for s in range(0, examples.shape[0], self.batch_size):
            batch = torch.from_numpy(examples[s:s + self.batch_size, None].astype(np.float32)).to(self.device)
            with torch.no_grad():
                rows.append(self.model(batch).to("cpu").numpy())
        out = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        bounds = np.cumsum([0] + [e.shape[0] for e in per_clip])
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def default_weights_path() -> Path:
    """torchvggish's file in the torch hub cache: <torch hub dir>/checkpoints/vggish-10086976.pth."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


@register
class VggishEmbedder(_VggishBase):
    """VGGish with torchvggish's weights from the torch hub cache or a local file."""

    name = "vggish"
    description = "VGGish, 128-d per 0.96 s (weights: torchvggish vggish-10086976.pth, torch hub cache)"
    version = "1"

    def __init__(self, weights: str | None = None, device: str = "cpu", pooling: str = POOLINGS[0],
                 frontend: str = FRONTENDS[0]) -> None:
        self._set_options(pooling, frontend)
        self._from_file(Path(weights or default_weights_path()), build_vggish, device, _MISSING, ignore=("pproc.",))


@register
class TinyVggishEmbedder(_VggishBase):
    """VGGish's structure with narrow random layers (tests only: its distances mean nothing)."""

    name = "tiny-vggish"
    description = "random-weight narrow VGGish (tests; embeddings are meaningless)"
    version = "1"

    def __init__(self, seed: int = 0, device: str = "cpu", pooling: str = POOLINGS[0],
                 frontend: str = FRONTENDS[0]) -> None:
        self._set_options(pooling, frontend)
        self._random(seed, lambda: build_vggish(widths=(4, 8, 8, 8, 32), dim=16), device)
