"""A synthetic reference set: tones, chirps, noise bursts and click trains, deterministic by seed.

For offline tests and smoke checks of the scoring stage (no real audio is shipped). Clip ``i``
of a set depends only on ``(seed, i)``, so a larger set extends a smaller one. Kinds cycle in
the order of ``kinds``; parameters are drawn per clip:

* ``tone``: a sine of 150-2000 Hz with its 2nd harmonic, 10 ms fades;
* ``chirp``: a logarithmic sweep between two frequencies in 100-6000 Hz (either direction);
* ``noise``: a burst of white noise, one-pole low-passed, with a raised-cosine envelope
  covering 30-80 % of the clip;
* ``clicks``: 3-12 decaying clicks per second at random times.

Peaks are 0.2-0.6 (well above the silence threshold, well below clipping). Files are 32-bit
float WAVs written with scipy (byte-identical for equal samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import chirp, lfilter

__all__ = ["KINDS", "synth_clip", "synthetic_clips", "write_synthetic_reference"]

KINDS = ("tone", "chirp", "noise", "clicks")


def _fade(x: np.ndarray, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    n = min(int(sample_rate * seconds), x.size // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def synth_clip(kind: str, rng: np.random.Generator, sample_rate: int = 16000,
               duration_s: float = 1.0) -> np.ndarray:
    """One float32 clip of ``kind`` with parameters drawn from ``rng``."""
    n = int(round(sample_rate * duration_s))
    t = np.arange(n) / sample_rate
    amp = rng.uniform(0.2, 0.6)
    if kind == "tone":
        f = rng.uniform(150.0, 2000.0)
        x = np.sin(2 * np.pi * f * t) + rng.uniform(0.1, 0.5) * np.sin(4 * np.pi * f * t + rng.uniform(0, np.pi))
    elif kind == "chirp":
        f0, f1 = rng.uniform(100.0, 6000.0, size=2)
        x = chirp(t, f0=f0, t1=max(duration_s, 1e-3), f1=f1, method="logarithmic")
    elif kind == "noise":
        pole = rng.uniform(0.0, 0.95)
        x = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(n))
        length = max(2, int(n * rng.uniform(0.3, 0.8)))
        start = int(rng.integers(0, n - length + 1))
        env = np.zeros(n)
        env[start:start + length] = np.hanning(length)
        x = x * env
    elif kind == "clicks":
        x = np.zeros(n)
        decay = np.exp(-np.arange(int(0.005 * sample_rate) + 1) / (0.001 * sample_rate))
        count = max(1, int(rng.uniform(3, 12) * duration_s))
        for pos in rng.integers(0, n, size=count):
            seg = decay[: n - pos] * rng.choice([-1.0, 1.0])
            x[pos:pos + seg.size] += seg
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}; valid: {', '.join(KINDS)}")
    x = _fade(np.asarray(x, dtype=np.float64), sample_rate)
    peak = float(np.max(np.abs(x)))
    return (x * (amp / peak if peak > 0 else 0.0)).astype(np.float32)


def synthetic_clips(n: int = 16, *, seed: int = 0, sample_rate: int = 16000, duration_s: float = 1.0,
                    kinds: tuple[str, ...] = KINDS) -> list[tuple[str, np.ndarray]]:
    """``n`` (name, clip) pairs; clip i uses ``np.random.default_rng([seed, i])``."""
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        clip = synth_clip(kind, np.random.default_rng([seed, i]), sample_rate, duration_s)
        out.append((f"{kind}_{i:03d}", clip))
    return out


def write_synthetic_reference(folder: str | Path, n: int = 16, *, seed: int = 0, sample_rate: int = 16000,
                              duration_s: float = 1.0, kinds: tuple[str, ...] = KINDS) -> list[Path]:
    """Write ``synthetic_clips(...)`` as ``<folder>/<kind>_<i>.wav``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, clip in synthetic_clips(n, seed=seed, sample_rate=sample_rate, duration_s=duration_s, kinds=kinds):
        path = folder / f"{name}.wav"
        wavfile.write(path, sample_rate, clip)
        paths.append(path)
    return paths
