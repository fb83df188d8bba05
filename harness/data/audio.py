"""Decoding audio files to mono float32, and the content hash of decoded audio.

* Decoding: anything soundfile (libsndfile) reads, any rate, any channel count; channels are
  averaged to mono (in float32). ``read_channels`` also keeps the channels themselves.
* Content hash: sha256 of ``b"<rate>:"`` + the mono float32 little-endian sample bytes. It does
  not depend on the path, the container or the encoding of equal samples, so the same audio
  moved, renamed or re-written losslessly keeps its identity (and its cached embeddings).
* Channels hash (``channels_sha256``): the same over every channel of a multi-channel file, for
  the embedders whose output depends on more than the mono mix (``openl3`` with ``channels=2``
  embeds left and right apart); its preimage starts with ``b"channels="``, never a digit, so it
  cannot coincide with a content hash's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["channels_sha256", "content_sha256", "read_channels", "read_mono"]


def content_sha256(samples: np.ndarray, sample_rate: int) -> str:
    """sha256 of the rate and the mono float32 little-endian sample bytes."""
    data = np.ascontiguousarray(samples, dtype="<f4")
    digest = hashlib.sha256(f"{int(sample_rate)}:".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def channels_sha256(channels: np.ndarray, sample_rate: int) -> str:
    """sha256 of the channel count, the rate and the (channels, n) float32 samples (interleaved, little-endian)."""
    data = np.ascontiguousarray(np.asarray(channels).T, dtype="<f4")
    digest = hashlib.sha256(f"channels={data.shape[1] if data.ndim == 2 else 1};rate={int(sample_rate)}:".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def _decode(path: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and the rate, as libsndfile decodes them."""
    import soundfile as sf

    data, rate = sf.read(path if hasattr(path, "read") else str(path), dtype="float32", always_2d=True)
    return data, int(rate)


def _mix(data: np.ndarray) -> np.ndarray:
    """The mono float32 samples of (frames, channels) ``data``: the channel mean (the one channel of a mono file)."""
    mono = data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def read_channels(path: str | Path | BinaryIO) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Decode ``path``: (mono float32 samples, sample rate, the file's (channels, n) float32 samples; None if mono)."""
    data, rate = _decode(path)
    return _mix(data), rate, (np.ascontiguousarray(data.T) if data.shape[1] > 1 else None)


def read_mono(path: str | Path | BinaryIO) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` (or an open binary file): (mono float32 samples, sample rate, channel count of the file)."""
    data, rate = _decode(path)
    return _mix(data), rate, int(data.shape[1])
