"""``clap-window`` and ``tiny-clap-window``: CLAP embeddings by the harness's earlier window-average rule.

Not laion_clap's computation (that is ``clap``, ``harness/score/embed/clap.py``): no int16
round trip, no fusion branch, text truncated at the tokenizer's own maximum. Kept so figures
measured with it before can be reproduced; its identity differs from ``clap``'s, so the two
never share cached embeddings and gates refuse to compare them.

Audio is 48 kHz mono. Window rule (fixed, no randomness): with W = the feature extractor's
``max_length_s`` (10 s for the LAION checkpoints),

* a clip of at most W seconds is one window; the feature extractor repeat-pads it to W
  (``padding="repeatpad"``, CLAP's training convention: tile the clip, then zero-pad);
* a longer clip is cut into k = ceil(length / W) windows of exactly W seconds whose starts are
  spread evenly from 0 to length - W (rounded to samples): the first starts at the beginning,
  the last ends at the end, neighbours overlap as little as needed, and nothing is padded.
  A 10.24 s AudioLDM 2 clip gives windows [0, 10] s and [0.24, 10.24] s.

Every window holds at most W seconds, so ``ClapFeatureExtractor`` never takes its random
paths. Unfused models use ``truncation="rand_trunc"`` (inert for inputs <= W) and fused models
``truncation="fusion"`` with ``is_longer`` forced to False for every window, so the fused model
takes its global (whole-window) branch, deterministically. The global numpy RNG state is
restored after the feature extractor runs (it marks a random short item as "longer").

Each window embedding is the L2-normalised projection; the per-clip rows are the windows,
averaged by the scoring stage. Text embeddings are the L2-normalised text projections of the
prompt padded to the batch's longest and truncated at the tokenizer's ``model_max_length``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.score.embed.clap import DEFAULT_CLAP_MODEL, ClapBase, build_tiny_clap, load_clap
from harness.score.embed.registry import EmbedderError, register

__all__ = ["ClapWindowEmbedder", "TinyClapWindowEmbedder", "WindowAverageClap", "clap_windows"]


def clap_windows(samples: np.ndarray, window: int) -> list[np.ndarray]:
    """Cut a clip into windows of at most ``window`` samples by the rule in the module docstring."""
    n = int(samples.shape[0])
    if n <= window:
        return [samples]
    k = math.ceil(n / window)
    starts = np.round(np.linspace(0, n - window, k)).astype(int)
    return [samples[s:s + window] for s in starts]


class WindowAverageClap(ClapBase):
    """The window-average rule above: one row per window of at most ``max_length_s``."""

    def _window_setup(self) -> None:
        self.window_s = float(self.feature_extractor.max_length_s)
        self.hop_s = self.window_s  # nominal: the even spread above may overlap windows slightly
        self._window = int(self.feature_extractor.nb_max_samples)

    def preprocessing(self) -> dict[str, Any]:
        return {
            **self._front_end(),
            "mode": "window-average",
            "truncation": "fusion (global branch, is_longer=False)" if self.fusion else "rand_trunc (inert)",
            "padding": "repeatpad",
            "window_rule": "<= W: one window; else ceil(n/W) windows of W spread evenly from 0 to n-W",
            "embedding": "L2-normalised projection per window",
        }

    def _audio_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        state = np.random.get_state()  # the fusion path draws from numpy's global RNG
        try:
            features = self.feature_extractor(
                [w.astype(np.float64) for w in windows], sampling_rate=self.sample_rate,
                truncation="fusion" if self.fusion else "rand_trunc", padding="repeatpad", return_tensors="np",
            )
        finally:
            np.random.set_state(state)
        return self._audio_forward(np.asarray(features["input_features"]), np.zeros(len(windows), dtype=bool))

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        owners, windows = [], []
        for i, clip in enumerate(clips):
            if clip.size == 0:
                raise EmbedderError(f"{self.name}: cannot embed an empty clip")
            for w in clap_windows(np.asarray(clip, dtype=np.float32), self._window):
                owners.append(i)
                windows.append(w)
        rows = np.concatenate([
            self._audio_batch(windows[s:s + self.batch_size])
            for s in range(0, len(windows), self.batch_size)
        ]) if windows else np.zeros((0, self.dim), np.float32)
        owners_arr = np.asarray(owners)
        return [rows[owners_arr == i] for i in range(len(clips))]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self._text_forward(texts, padding=True, truncation=True)


@register
class ClapWindowEmbedder(WindowAverageClap):
    """CLAP by the window-average rule (not laion_clap's numbers; see ``clap``)."""

    name = "clap-window"
    description = f"CLAP, 10 s windows averaged (the harness's earlier rule, not laion_clap's); default {DEFAULT_CLAP_MODEL}"
    version = "1"

    def __init__(self, model: str = DEFAULT_CLAP_MODEL, revision: str | None = None,
                 device: str = "cpu", batch_size: int = 8) -> None:
        self.model_id, self.revision = str(model), revision
        self._setup(*load_clap(self.model_id, revision), device, batch_size)
        self._window_setup()

@register
class TinyClapWindowEmbedder(WindowAverageClap):
    """The window-average rule on the random-weight tiny ClapModel (tests only)."""

    name = "tiny-clap-window"
    description = "random-weight tiny ClapModel, window-average rule (tests; scores are meaningless)"
    version = "1"

    def __init__(self, seed: int = 0, fusion: bool = False, device: str = "cpu", batch_size: int = 8) -> None:
        self.seed = seed
        self._setup(*build_tiny_clap(seed, fusion, text_positions=None), device, batch_size)
        self._window_setup()

    def source(self) -> dict[str, Any]:
        return {"model": "tiny-clap-window (built in memory)", "seed": self.seed, "fusion": self.fusion}
