"""Per-sample sanity flags on generated waveforms: non-finite, silent, clipped."""

from __future__ import annotations

import numpy as np

SILENT_PEAK = 1e-4  # below -80 dBFS everywhere: nothing audible was generated
CLIP_LEVEL = 0.999
CLIP_FRACTION = 1e-3  # more than 0.1% of samples at full scale


def audio_flags(audio: np.ndarray) -> list[str]:
    """Return the flags that apply: 'nan_inf', 'silent', 'clipped' (empty list when clean)."""
    if not np.all(np.isfinite(audio)):
        return ["nan_inf"]
    flags = []
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < SILENT_PEAK:
        flags.append("silent")
    if audio.size and np.mean(np.abs(audio) >= CLIP_LEVEL) > CLIP_FRACTION:
        flags.append("clipped")
    return flags
