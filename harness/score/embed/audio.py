"""Audio as embedders see it: mono float32 samples, a content hash, resampled copies per rate.

* Decoding and content hash: ``harness.data.audio`` (mono float32 by channel mean; sha256 of
  the rate and the sample bytes, independent of path and container). A clip decoded from a
  multi-channel file also keeps its channels (``Clip.multichannel``) for the embedders that read
  them (``openl3`` with ``channels=2``); the others see only the mono mix.
* Resampling: soxr (``RESAMPLER`` quality), computed at most once per target rate per clip and
  shared by every embedder that needs that rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from harness.data.audio import channels_sha256, content_sha256, read_channels, read_mono

__all__ = ["RESAMPLER", "Clip", "content_sha256", "peak_normalize", "read_mono"]

RESAMPLER = {"library": "soxr", "quality": "HQ"}


def peak_normalize(samples: np.ndarray, target_dbfs: float = -1.0) -> np.ndarray:
    """``samples`` scaled so the largest absolute sample is ``target_dbfs`` (pyloudnorm's ``normalize.peak``).

    stable-audio-metrics applies ``pyln.normalize.peak(audio, -1.0)`` to every clip before OpenL3,
    PaSST and CLAP. pyloudnorm divides by the peak unconditionally (a silent clip becomes NaN);
    here a silent clip is returned unchanged.
    """
    x = np.asarray(samples)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    return (np.power(10.0, target_dbfs / 20.0) / peak) * x


@dataclass
class Clip:
    """One decoded clip; ``at_rate`` resamples it (once per rate) for the embedders."""

    samples: np.ndarray  # mono float32 at sample_rate
    sample_rate: int
    sha256: str = ""  # content hash of the mono samples
    multichannel: np.ndarray | None = field(default=None, repr=False)  # (channels, n) float32 of a 2+ channel file
    _resampled: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.samples = np.ascontiguousarray(self.samples, dtype=np.float32).reshape(-1)
        if not self.sha256:
            self.sha256 = content_sha256(self.samples, self.sample_rate)
        if self.multichannel is not None:
            self.multichannel = np.ascontiguousarray(self.multichannel, dtype=np.float32)
            if self.multichannel.ndim != 2 or self.multichannel.shape[1] != self.samples.size:
                raise ValueError(f"multichannel samples of shape {self.multichannel.shape} do not fit "
                                 f"{self.samples.size} mono samples")
            if self.multichannel.shape[0] == 1:
                self.multichannel = None  # one channel is the mono clip itself

    @classmethod
    def from_file(cls, path: str | Path) -> Clip:
        """Decode a file: its mono mix, and its channels when it has more than one."""
        samples, rate, channels = read_channels(path)
        return cls(samples, rate, multichannel=channels)

    @property
    def n_channels(self) -> int:
        """Channel count of the decoded file (1 for a mono clip)."""
        return 1 if self.multichannel is None else int(self.multichannel.shape[0])

    @cached_property
    def channels_sha256(self) -> str:
        """Hash of every channel (``harness.data.audio.channels_sha256``); a mono clip's content hash."""
        if self.multichannel is None:
            return self.sha256
        return channels_sha256(self.multichannel, self.sample_rate)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.samples.size / self.sample_rate

    def at_rate_librosa(self, rate: int) -> np.ndarray:
        """``at_rate`` with the length ``librosa.load(sr=rate)`` gives: ``ceil(n * (rate / sr))`` in
        float64, zero-padded or cut (``librosa.util.fix_length``); one sample longer than soxr's
        output when the product rounds up (e.g. 5 s at 44.1 kHz to 48 kHz gives 240001)."""
        out = self.at_rate(rate)
        if rate == self.sample_rate:
            return out
        n = int(np.ceil(self.samples.size * (float(rate) / self.sample_rate)))
        return out[:n] if out.size >= n else np.pad(out, (0, n - out.size))

    def peak_normalized_at_rate(self, rate: int, target_dbfs: float) -> np.ndarray:
        """Peak-normalised at the clip's own rate (float64), then soxr to ``rate``: stable-audio-metrics'
        OpenL3 input order (``pyln.normalize.peak`` before ``soxr.resample``). Not cached."""
        import soxr

        x = peak_normalize(self.samples.astype(np.float64), target_dbfs)
        # soxr runs even at equal rates, as the reference calls it (it is not the identity there: ~1e-8)
        return soxr.resample(x, self.sample_rate, rate, quality=RESAMPLER["quality"])

    def at_rate(self, rate: int) -> np.ndarray:
        """The samples at ``rate`` (soxr), computed once per rate."""
        if rate == self.sample_rate:
            return self.samples
        if rate not in self._resampled:
            import soxr

            out = soxr.resample(self.samples, self.sample_rate, rate, quality=RESAMPLER["quality"])
            self._resampled[rate] = np.ascontiguousarray(out, dtype=np.float32)
        return self._resampled[rate]


def pcm16_round_trip(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``samples`` as written to a 16-bit PCM WAV by soundfile and read back as int16 / 32768.

    This is what audio saved the way AudioLDM saves it (``soundfile.write``'s default subtype)
    holds, and what audioldm_eval reads (``soundfile.read(dtype="int16") / 32768``); the
    round trip goes through libsndfile itself, so its rounding and clipping are the same.
    """
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    buf.seek(0)
    ints, _ = sf.read(buf, dtype="int16")
    return (ints.astype(np.float64) / 32768.0).astype(np.float32)
