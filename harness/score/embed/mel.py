"""``mel``: weight-free log-mel statistics, for smoke checks and CI (no model, no download).

Per clip at 16 kHz: a power spectrogram (periodic Hann window of ``win_length`` samples,
``hop_length`` hop, ``n_fft``-point FFT, no centring), ``n_mels`` triangular HTK-mel filters
between ``fmin`` and ``fmax``, natural log with a floor (``log(max(mel, log_floor))``). The
spectrogram frames are grouped into analysis windows of ``window_s`` with hop ``hop_s``; each
window gives the per-band mean and standard deviation of the log-mel: ``2 * n_mels`` values
(128 by default).

Window rule (fixed): windows start at 0, hop_s, 2 hop_s, ... while they fit; when the last one
ends before the clip does, one more window aligned to the clip's end is added, so every frame
is covered and no window is padded. A clip shorter than one window gives one window over all
its frames; a clip shorter than one STFT frame is zero-padded to one frame.

It is no perceptual model: it tells identical from different sets, and distances grow with
spectral change (noise, level, timbre), which is what smoke checks need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.score.embed.audio import RESAMPLER
from harness.score.embed.registry import Embedder, EmbedderError, register

__all__ = ["MelEmbedder", "frame_windows"]


def frame_windows(n_frames: int, per_window: int, hop: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of the analysis windows by the rule in the module docstring."""
    if n_frames <= per_window:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - per_window + 1, hop))
    if starts[-1] + per_window < n_frames:
        starts.append(n_frames - per_window)
    return [(s, s + per_window) for s in starts]


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, HTK mel scale, peak 1, no area normalisation."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


@register
class MelEmbedder(Embedder):
    """Log-mel mean/std per window; see the module docstring."""

    name = "mel"
    description = "log-mel mean/std per 1 s window (no weights; smoke checks and CI)"
    version = "1"

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 512,
                 win_length: int = 400, hop_length: int = 160, fmin: float = 0.0,
                 fmax: float | None = None, window_s: float = 1.0, hop_s: float = 0.5,
                 log_floor: float = 1e-10, batch_size: int = 64) -> None:
        fmax = sample_rate / 2 if fmax is None else float(fmax)
        if not (0 < win_length <= n_fft and hop_length > 0 and n_mels > 0):
            raise EmbedderError("mel: need 0 < win_length <= n_fft, hop_length > 0, n_mels > 0")
        if not 0 <= fmin < fmax <= sample_rate / 2:
            raise EmbedderError(f"mel: need 0 <= fmin < fmax <= {sample_rate / 2}")
        if not (window_s > 0 and hop_s > 0 and log_floor > 0):
            raise EmbedderError("mel: window_s, hop_s and log_floor must be positive")
        self.sample_rate = int(sample_rate)
        self.n_mels, self.n_fft, self.win_length, self.hop_length = n_mels, n_fft, win_length, hop_length
        self.fmin, self.fmax = float(fmin), fmax
        self.window_s, self.hop_s, self.log_floor = float(window_s), float(hop_s), float(log_floor)
        self.batch_size = batch_size
        self._frames_per_window = max(1, round(self.window_s * self.sample_rate / hop_length))
        self._frames_per_hop = max(1, round(self.hop_s * self.sample_rate / hop_length))
        self._window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)  # periodic Hann
        self._filters = mel_filterbank(self.sample_rate, n_fft, n_mels, self.fmin, self.fmax)

    @property
    def dim(self) -> int:
        return 2 * self.n_mels

    def weights_sha256(self) -> str:
        # No learned weights: the fixed analysis window and filterbank play their part.
        digest = hashlib.sha256(self._window.astype("<f8").tobytes())
        digest.update(self._filters.astype("<f8").tobytes())
        return digest.hexdigest()

    def preprocessing(self) -> dict[str, Any]:
        return {
            "n_mels": self.n_mels, "n_fft": self.n_fft, "win_length": self.win_length,
            "hop_length": self.hop_length, "fmin": self.fmin, "fmax": self.fmax,
            "log_floor": self.log_floor, "mel_scale": "htk", "window": "hann-periodic",
            "window_rule": "hop from 0, plus one end-aligned window; short clips: one window",
            "mono": "mean of channels", "resampler": RESAMPLER,
        }

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, n_mels) log-mel spectrogram of one clip."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size < self.win_length:
            x = np.pad(x, (0, self.win_length - x.size))
        frames = np.lib.stride_tricks.sliding_window_view(x, self.win_length)[:: self.hop_length]
        power = np.abs(np.fft.rfft(frames * self._window, n=self.n_fft, axis=1)) ** 2
        return np.log(np.maximum(power @ self._filters.T, self.log_floor))

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for clip in clips:
            logmel = self.log_mel(clip)
            rows = [
                np.concatenate([logmel[a:b].mean(axis=0), logmel[a:b].std(axis=0)])
                for a, b in frame_windows(logmel.shape[0], self._frames_per_window, self._frames_per_hop)
            ]
            out.append(np.asarray(rows, dtype=np.float32))
        return out
