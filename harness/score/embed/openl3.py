"""``openl3`` and ``tiny-openl3``: OpenL3 embeddings as stable-audio-metrics computes them, 512-d
per 1 s frame every 0.5 s.

stable-audio-metrics (Stability-AI, ``src/openl3_fd.py``, as called by its ``examples/audiocaps.py``
and ``examples/musiccaps.py``) loads ``openl3.models.load_audio_embedding_model(input_repr="mel256",
content_type=..., embedding_size=512)`` and per file:

1. reads the file at its own rate and peak-normalises it to -1 dBFS (``pyln.normalize.peak``);
2. resamples it with soxr (HQ) to the "evaluation bandwidth" ``samplingrate = 44100``;
3. hands it to ``openl3.get_audio_embedding(..., hop_size=0.5)``, which resamples to 48 kHz with
   resampy's ``kaiser_best`` filter, pads 0.5 s of zeros in front (``center=True``), zero-pads
   the end to a whole number of hops, and cuts 1 s frames every 0.5 s;
4. with ``channels=2`` (what both examples use) embeds the left and right channels apart and
   concatenates them (1024-d); a mono file is "faked" to stereo, so its row is ``[e, e]``.
   With ``channels=1`` a stereo file is down-mixed (channel mean) and rows are 512-d.

Every frame is one row: the FD statistics pool the frames of all clips (see
``harness.score.metrics.stable_audio``).

Here (option ``content_type``: ``env`` for AudioCaps, ``music`` for MusicCaps; ``channels``: 1 or
2, default 2): ``audio_of`` peak-normalises the decoded clip at its own rate in float64 and
resamples it with soxr HQ to 44.1 kHz (steps 1 and 2, in that order: the order changes the
embeddings by up to 3e-4, because the float32 front end is not exactly gain-invariant);
``embed_audio`` takes those samples, resamples them to 48 kHz with resampy's ``kaiser_best``
algorithm written out in torch (float64) (``resample_kaiser_best``; the filter is recomputed from its
published parameters and equals resampy's table to 2e-16, the output equals resampy's to 5e-16),
frames them as in step 3, and runs the network. With ``channels=2`` a stereo file is embedded
as the reference does (step 4): ``audio_of`` takes the file's channels (``Clip.multichannel``),
peak-normalises them together (one gain from the largest sample of either channel, as
``pyln.normalize.peak`` does on the (samples, channels) array), resamples each channel with soxr
(soxr on that 2-D array is per channel: the same samples) and hands (2, n) to ``embed_audio``,
which embeds each channel exactly as a mono clip and concatenates: ``[e(left), e(right)]``. A
file with more than two channels is treated as the reference treats it: the peak is taken over
every channel and only the first two are embedded (``audio[:, 0]``, ``audio[:, 1]``). A mono
file is unchanged: ``[e, e]``. Such an embedding depends on the channels, not only on the mono
mix the content hash covers, so it is cached under the hash of all channels (``cache_key``;
mono files keep their content hash, so the cache entries of mono files stay valid and the
identity is unchanged). With ``channels=1`` a stereo file is mixed to mono (channel mean) before
the peak normalisation, as the reference's unbatched path (``librosa.load(mono=True)``) does
(its batched path mixes after the normalisation and soxr: the same up to the gain).

The network is torchopenl3's ``PytorchOpenl3`` (mel256, 512-d; a port of the Keras model with
kapre 0.1.4's front end): parameter and buffer names equal those of its published files
``torchopenl3_mel256_{env,music}_512.pth.tar``, which load with strict key checking. Front end,
with torchopenl3's float32 operations (so the output is bit-identical to it on the same input):
keras "same" padding of the 48 000-sample frame (982 zeros each side), the file's windowed DFT
kernels (2048-point periodic Hann) as a conv1d with stride 242 (199 frames), power, the file's
256-band mel matrix (``speclayer.mel_basis``; built here as librosa's ``mel(sr=48000,
n_fft=2048, n_mels=256, htk=True, norm=1)`` for the tiny model), square root,
``10 log10(max(x, 1e-10))`` minus the frame's maximum, floored at -80 dB. Then seven 3x3 conv +
batch-norm + ReLU layers with three 2x2 max-pools, a 3x3 ``audio_embedding_layer`` conv and a
max-pool over the whole (32, 24) map: 512 values per frame. Eval mode.

``tiny-openl3`` is the same network with narrow random layers (seeded), for tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from harness.score.embed._torch import TorchEmbedder, local_weights_path
from harness.score.embed.audio import RESAMPLER, Clip, peak_normalize
from harness.score.embed.registry import EmbedderError, register

__all__ = ["OpenL3Embedder", "TinyOpenL3Embedder", "build_openl3", "openl3_frames", "openl3_mel_basis",
           "resample_kaiser_best"]

CONTENT_TYPES = ("env", "music")
TARGET_SR = 48000
FRONT_END = {"bandwidth_sr": 44100, "target_sr": TARGET_SR, "frame_s": 1.0, "hop_s": 0.5, "center": True,
             "input_repr": "mel256", "n_dft": 2048, "n_hop": 242, "n_mels": 256, "amin": 1e-10,
             "dynamic_range_db": 80.0, "peak_dbfs": -1.0}
FULL_WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)  # conv2d_1..7, audio_embedding_layer
WEIGHTS_URL = "https://github.com/torchopenl3/torchopenl3-models/raw/master/{file}"
_MISSING = ("openl3: weights file {path} not found. On a machine with network: wget -O '{path}' '{url}' "
            "(torchopenl3's published mel256 {content} 512 model), then copy it here; or point "
            "AUDIOLDM2_HARNESS_OPENL3_WEIGHTS at it")

# resampy 0.2.2's kaiser_best filter: 64 zero crossings, 2**9 table entries per crossing, a
# Kaiser window with this beta and this roll-off (resampy/filters.py, data/kaiser_best.npz).
_CHUNK = 65536
_KAISER_BEST = {"num_zeros": 64, "num_table": 512, "beta": 14.769656459379492, "rolloff": 0.9475937167399596}


def weights_file(content_type: str) -> str:
    """torchopenl3's file name for the mel256 512-d model of ``content_type``."""
    return f"torchopenl3_mel256_{content_type}_512.pth.tar"


def _kaiser_best_window() -> tuple[np.ndarray, int]:
    """resampy's kaiser_best half window (32769 taps) and its table precision."""
    import scipy.signal

    f = _KAISER_BEST
    n = f["num_zeros"] * f["num_table"]
    sinc = f["rolloff"] * np.sinc(f["rolloff"] * np.linspace(0, f["num_zeros"], num=n + 1, endpoint=True))
    return scipy.signal.windows.kaiser(2 * n + 1, f["beta"])[n:] * sinc, f["num_table"]


def resample_kaiser_best(x: np.ndarray, sr_orig: int, sr_new: int, device: str = "cpu") -> np.ndarray:
    """Resample 1-D ``x`` as ``resampy.resample(x, sr_orig, sr_new, filter="kaiser_best")`` does (float64).

    resampy's numba loop (resampy/interpn.py) vectorised over output samples: each output sums
    the filter's left wing over past inputs and its right wing over future inputs, with linear
    interpolation inside the filter table; the time register is accumulated sequentially as
    there, so the sample positions are bit-identical. The gathers run in torch (float64) on
    ``device``: on a GPU they cost milliseconds instead of seconds.
    """
    import torch

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    ratio = float(sr_new) / sr_orig
    n_out = int(x.size * ratio)
    if n_out < 1:
        raise EmbedderError(f"openl3: a clip of {x.size} samples is too short to resample "
                            f"from {sr_orig} to {sr_new} Hz")
    win, num_table = _kaiser_best_window()
    if ratio < 1:
        win = win * ratio
    delta = np.zeros_like(win)
    delta[:-1] = np.diff(win)
    scale = min(1.0, ratio)
    step = int(scale * num_table)
    increments = np.full(n_out, 1.0 / ratio)
    increments[0] = 0.0
    time = np.add.accumulate(increments)  # sequential, as the loop's time_register += increment
    n = time.astype(np.int64)
    win_t, delta_t, x_t = (torch.from_numpy(a).to(device) for a in (win, delta, x))
    y = torch.zeros(n_out, dtype=torch.float64, device=device)
    for frac, left in ((scale * (time - n), True), (scale - scale * (time - n), False)):
        index = frac * num_table
        offset = index.astype(np.int64)
        taps = np.minimum(n + 1 if left else x.size - n - 1, (win.size - offset) // step)
        eta_t, offset_t, n_t, taps_t = (torch.from_numpy(a).to(device) for a in (index - offset, offset, n, taps))
        for start in range(0, n_out, _CHUNK):  # (chunk, taps) blocks keep memory bounded
            sl = slice(start, start + _CHUNK)
            i = torch.arange(int(taps[sl].max(initial=0)), device=device)[None]
            live = i < taps_t[sl, None]
            pos = torch.where(live, offset_t[sl, None] + i * step, 0)
            src = torch.where(live, n_t[sl, None] - i if left else n_t[sl, None] + i + 1, 0)
            terms = (win_t[pos] + eta_t[sl, None] * delta_t[pos]) * x_t[src]
            y[sl] += torch.where(live, terms, 0.0).sum(dim=1)
    return y.cpu().numpy()


def openl3_frames(samples_48k: np.ndarray, hop_s: float = 0.5) -> np.ndarray:
    """(n_frames, 48000) frames of a 48 kHz clip, as openl3's ``_preprocess_audio_batch`` cuts them.

    0.5 s of zeros in front (``center=True``), zeros at the end up to a whole number of hops
    (and at least one frame), a 1 s frame every ``hop_s``.
    """
    frame, hop = TARGET_SR, int(hop_s * TARGET_SR)
    x = np.concatenate([np.zeros(frame // 2), np.asarray(samples_48k, dtype=np.float64).reshape(-1)])
    pad = frame - x.size if x.size < frame else -(-(x.size - frame) // hop) * hop - (x.size - frame)
    x = np.pad(x, (0, max(pad, 0)))
    n_frames = 1 + (x.size - frame) // hop
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop][:n_frames]


def openl3_mel_basis() -> np.ndarray:
    """(256, 1025) mel matrix of librosa's ``mel(sr=48000, n_fft=2048, n_mels=256, fmin=0, fmax=24000,
    htk=True, norm=1)``: HTK-mel triangles in Hz, each band scaled to unit sum (empty bands stay 0)."""
    from transformers.audio_utils import mel_filter_bank

    f = FRONT_END
    with warnings.catch_warnings():  # the lowest HTK bands hold no FFT bin at n_fft=2048 (librosa warns too)
        warnings.simplefilter("ignore", UserWarning)
        tri = mel_filter_bank(num_frequency_bins=f["n_dft"] // 2 + 1, num_mel_filters=f["n_mels"], min_frequency=0.0,
                              max_frequency=TARGET_SR / 2, sampling_rate=TARGET_SR, norm=None, mel_scale="htk").T
    sums = tri.sum(axis=1, keepdims=True)
    return tri / np.where(sums > np.finfo(np.float32).tiny, sums, 1.0)


def _dft_kernels(n_dft: int) -> tuple[np.ndarray, np.ndarray]:
    """kapre 0.1.4's windowed DFT kernels, (n_dft // 2 + 1, 1, n_dft) each, as torchopenl3 stores them."""
    t = np.arange(n_dft)
    w = np.arange(n_dft // 2 + 1)[:, None] * 2 * np.pi / n_dft
    window = (0.5 - 0.5 * np.cos(2 * np.pi * t / n_dft)).astype(np.float32)  # periodic Hann
    return ((np.cos(w * t) * window)[:, None].astype(np.float32), (-np.sin(w * t) * window)[:, None].astype(np.float32))


def build_openl3(widths: Sequence[int] = FULL_WIDTHS) -> "torch.nn.Module":
    """torchopenl3's mel256 network (eval mode) with its parameter and buffer names; ``widths``
    are the output channels of conv2d_1..conv2d_7 and audio_embedding_layer."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    f = FRONT_END

    class MelSpec(nn.Module):
        """kapre 0.1.4's Melspectrogram exactly as torchopenl3 computes it (float32 DFT by conv1d)."""

        def __init__(self) -> None:
            super().__init__()
            real, imag = _dft_kernels(f["n_dft"])
            self.register_buffer("dft_real_kernels", torch.from_numpy(real))
            self.register_buffer("dft_imag_kernels", torch.from_numpy(imag))
            self.register_buffer("mel_basis", torch.from_numpy(openl3_mel_basis().astype(np.float32)))

        def forward(self, frames):
            """(batch, 48000) -> (batch, 1, 256, 199) in dB below the frame's maximum."""
            rem = TARGET_SR % f["n_hop"]  # keras "same" padding for a 48000-sample input
            total = max(f["n_dft"] - (rem or f["n_hop"]), 0)
            x = F.pad(frames[:, None], (total // 2, total - total // 2))
            # the same float32 operations as torchopenl3 (an FFT in float64 differs from them by
            # up to 1e-4 in the embeddings: float32 round-off in the quiet bins)
            power = (F.conv1d(x, self.dft_real_kernels, stride=f["n_hop"]) ** 2
                     + F.conv1d(x, self.dft_imag_kernels, stride=f["n_hop"]) ** 2)
            mel = torch.sqrt(torch.matmul(self.mel_basis, power))  # power_melgram = 1.0
            db = 10 * torch.log(torch.clamp(mel, min=f["amin"])) / np.log(10).astype(np.float32)
            db = db - torch.amax(db, dim=(1, 2), keepdim=True)
            return torch.clamp(db, min=-f["dynamic_range_db"])[:, None]

    class PytorchOpenl3(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.speclayer = MelSpec()
            channels = (1, *widths)
            for i in range(8):
                self.add_module(f"batch_normalization_{i + 1}", nn.BatchNorm2d(channels[i], eps=0.001, momentum=0.99))
            for i in range(7):
                self.add_module(f"conv2d_{i + 1}", nn.Conv2d(channels[i], channels[i + 1], 3, padding=1))
            self.audio_embedding_layer = nn.Conv2d(channels[7], channels[8], 3, padding=1)

        def forward(self, frames):
            x = self.batch_normalization_1(self.speclayer(frames))
            for i in range(1, 8):
                x = F.relu(getattr(self, f"batch_normalization_{i + 1}")(getattr(self, f"conv2d_{i}")(x)))
                if i in (2, 4, 6):
                    x = F.max_pool2d(x, 2)
            x = self.audio_embedding_layer(x)
            return F.max_pool2d(x, kernel_size=(32, 24)).flatten(1)  # (32, 24): the whole map

    return PytorchOpenl3().eval()


class _OpenL3Base(TorchEmbedder):
    """Shared embedding code: stable-audio-metrics' per-file steps, then frames through the network."""

    sample_rate = FRONT_END["bandwidth_sr"]
    window_s = FRONT_END["frame_s"]
    hop_s = FRONT_END["hop_s"]
    batch_size = 4  # clips per call; frames go through the network 32 at a time
    pooling = "frames"  # FD statistics pool every frame row of every clip (stable-audio-metrics)
    frames_per_pass = 32

    def _set_options(self, content_type: str, channels: int) -> None:
        if content_type not in CONTENT_TYPES:
            raise EmbedderError(f"{self.name}: unknown content_type {content_type!r}; "
                                f"valid: {', '.join(CONTENT_TYPES)}")
        if channels not in (1, 2):
            raise EmbedderError(f"{self.name}: channels must be 1 or 2; got {channels!r}")
        self.content_type, self.channels = content_type, int(channels)

    def output_features(self, model) -> int:
        return model.audio_embedding_layer.out_channels

    @property
    def dim(self) -> int:
        return self._dim * self.channels

    def preprocessing(self) -> dict[str, Any]:
        return {**FRONT_END, "content_type": self.content_type, "channels": self.channels,
                "peak_normalize": "to -1 dBFS at the file's rate, then soxr (silence left as is)",
                "to_48k": "resampy kaiser_best (torch float64)", "spectrum": "float32 DFT conv1d, periodic hann, keras same",
                "embedding": "max over audio_embedding_layer map",
                # Left unchanged when stereo files began to be embedded per channel (with channels=2):
                # that changed no mono result, stereo files moved to their own cache keys
                # (cache_key), and a new identity would have orphaned every cached mono entry.
                "mono": "mean of channels",
                "stereo": "[e, e] (mono input faked to stereo)" if self.channels == 2 else "none",
                "pooling": self.pooling, "resampler": RESAMPLER}

    @property
    def reads_channels(self) -> bool:
        """With ``channels=2`` a stereo file's left and right channels are embedded apart."""
        return self.channels == 2

    def audio_of(self, clip: Clip) -> np.ndarray:
        """Step 1 before step 2, as the reference: peak-normalised at the file's rate, then soxr to 44.1 kHz;
        (2, n) left and right for a multi-channel file with ``channels=2``, else (n,) mono."""
        if not (self.reads_channels and clip.multichannel is not None):
            return clip.peak_normalized_at_rate(self.sample_rate, FRONT_END["peak_dbfs"])
        import soxr

        # one gain for all channels (the 3rd and later too, though only two are embedded), as the reference
        x = peak_normalize(clip.multichannel.astype(np.float64), FRONT_END["peak_dbfs"])
        return np.stack([soxr.resample(ch, clip.sample_rate, self.sample_rate, quality=RESAMPLER["quality"])
                         for ch in x[:2]])

    def frames(self, clip: np.ndarray) -> np.ndarray:
        """(n_frames, 48000) network inputs of one clip from ``audio_of`` (step 3 of the module docstring)."""
        return openl3_frames(resample_kaiser_best(clip, self.sample_rate, TARGET_SR, self.device), self.hop_s)

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips as ``audio_of`` gives them: (n,) mono, or (2, n) left and right with ``channels=2``."""
        out = []
        for clip in clips:
            clip = np.asarray(clip)
            if clip.size == 0:
                raise EmbedderError(f"{self.name}: cannot embed an empty clip")
            if clip.ndim == 1:
                emb = self._embed_channel(clip)
                out.append(np.concatenate([emb, emb], axis=1) if self.channels == 2 else emb)
            elif clip.ndim == 2 and clip.shape[0] == 2 and self.channels == 2:
                out.append(np.concatenate([self._embed_channel(clip[0]), self._embed_channel(clip[1])], axis=1))
            else:
                raise EmbedderError(f"{self.name}: with channels={self.channels} a clip is (n,) mono"
                                    f"{' or (2, n) left and right' if self.channels == 2 else ''}; got {clip.shape}")
        return out

    def _embed_channel(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, width) rows of one channel at 44.1 kHz (a stereo channel goes the same way as a mono clip)."""
        import torch

        frames = self.frames(samples)
        rows = []
        for s in range(0, frames.shape[0], self.frames_per_pass):
            batch = torch.from_numpy(np.array(frames[s:s + self.frames_per_pass], dtype=np.float32)).to(self.device)
            with torch.no_grad():
                rows.append(self.model(batch).to("cpu").numpy())
        return np.concatenate(rows).astype(np.float32)


def default_weights_path(content_type: str) -> Path:
    """$AUDIOLDM2_HARNESS_OPENL3_WEIGHTS, else <harness cache>/weights/torchopenl3_mel256_<type>_512.pth.tar."""
    return local_weights_path("AUDIOLDM2_HARNESS_OPENL3_WEIGHTS", weights_file(content_type))


@register
class OpenL3Embedder(_OpenL3Base):
    """OpenL3 (mel256, 512-d, env or music) with torchopenl3's published weights from a local file."""

    name = "openl3"
    description = ("OpenL3 mel256 512-d per 1 s frame, hop 0.5 s, as stable-audio-metrics configures it "
                   "(weights: torchopenl3_mel256_<env|music>_512.pth.tar, local file)")
    version = "1"

    def __init__(self, weights: str | None = None, device: str = "cpu", content_type: str = "env",
                 channels: int = 2) -> None:
        self._set_options(content_type, channels)
        path = Path(weights or default_weights_path(content_type))
        missing = _MISSING.format(path="{path}", url=WEIGHTS_URL.format(file=weights_file(content_type)),
                                  content=content_type)
        self._from_file(path, build_openl3, device, missing)


@register
class TinyOpenL3Embedder(_OpenL3Base):
    """OpenL3's structure with narrow random layers (tests only: its distances mean nothing)."""

    name = "tiny-openl3"
    description = "random-weight narrow OpenL3 (tests; embeddings are meaningless)"
    version = "1"

    def __init__(self, seed: int = 0, device: str = "cpu", content_type: str = "env", channels: int = 2) -> None:
        self._set_options(content_type, channels)
        self._random(seed, lambda: build_openl3(widths=(4, 4, 8, 8, 8, 8, 16, 16)), device)
