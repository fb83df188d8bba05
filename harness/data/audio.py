"""Decoding audio files to mono float32, and the content hash of decoded audio.

* Decoding: anything soundfile (libsndfile) reads, any rate, any channel count; channels are
  averaged to mono (in float32).
* Content hash: sha256 of ``b"<rate>:"`` + the mono float32 little-endian sample bytes. It does
  not depend on the path, the container or the encoding of equal samples, so the same audio
  moved, renamed or re-written losslessly keeps its identity (and its cached embeddings).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["content_sha256", "read_mono"]


def content_sha256(samples: np.ndarray, sample_rate: int) -> str:
    """sha256 of the rate and the mono float32 little-endian sample bytes."""
    data = np.ascontiguousarray(samples, dtype="<f4")
    digest = hashlib.sha256(f"{int(sample_rate)}:".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def read_mono(path: str | Path | BinaryIO) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` (or an open binary file): (mono float32 samples, sample rate, channel count of the file)."""
    import soundfile as sf

    data, rate = sf.read(path if hasattr(path, "read") else str(path), dtype="float32", always_2d=True)
    channels = int(data.shape[1])
    mono = data[:, 0].copy() if channels == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate), channels
