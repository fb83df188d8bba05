"""``clap`` and ``tiny-clap``: transformers ``ClapModel`` audio and text embeddings.

``clap`` loads a converted LAION CLAP checkpoint from a hub id or a local folder (default
``laion/clap-htsat-fused``; deliberately not AudioLDM 2's own CLAP text encoder, whose
embeddings the model was conditioned on). ``tiny-clap`` is a random-weight ClapModel built
offline from the tiny-checkpoint helpers (same sizes as the tiny pipeline's CLAP, a different
seed), for tests.

Audio is 48 kHz mono. Window rule (fixed, no randomness): with W = the feature extractor's
``max_length_s`` (10 s for the LAION checkpoints),

* a clip of at most W seconds is one window; the feature extractor repeat-pads it to W
  (``padding="repeatpad"``, CLAP's training convention: tile the clip, then zero-pad);
* a longer clip is cut into k = ceil(length / W) windows of exactly W seconds whose starts are
  spread evenly from 0 to length - W (rounded to samples): the first starts at the beginning,
  the last ends at the end, neighbours overlap as little as needed, and nothing is padded.
  A 10.24 s AudioLDM 2 clip gives windows [0, 10] s and [0.24, 10.24] s.

Every window holds at most W seconds, so ``ClapFeatureExtractor`` never takes its random
paths: ``rand_trunc`` would crop a random W-second piece of a longer input, and ``fusion``
stacks three random crops, and even for short inputs marks one random item of the batch as
"longer" (changing that item's embedding with its batch neighbours and numpy's global RNG).
Here unfused models use ``truncation="rand_trunc"`` (inert for inputs <= W) and fused models
``truncation="fusion"`` with ``is_longer`` forced to False for every window, which is true for
inputs <= W, so the fused model takes its global (whole-window) branch, deterministically. The
global numpy RNG state is restored after the feature extractor runs.

Each window embedding is the L2-normalised projection (as CLAP's contrastive space); the
per-clip rows are the windows, averaged by the scoring stage. Text embeddings are the
L2-normalised text projections of the tokenised prompt (truncated to the tokenizer's
``model_max_length``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.hub import missing_weights_message, offline, reachable
from harness.score.embed._torch import state_dict_sha256
from harness.score.embed.audio import RESAMPLER
from harness.score.embed.registry import Embedder, EmbedderError, register

__all__ = ["DEFAULT_CLAP_MODEL", "ClapEmbedder", "TinyClapEmbedder", "clap_windows", "state_dict_sha256"]

DEFAULT_CLAP_MODEL = "laion/clap-htsat-fused"
_TINY_SEED_OFFSET = 101  # not the tiny pipeline's own CLAP (offset 1)


def clap_windows(samples: np.ndarray, window: int) -> list[np.ndarray]:
    """Cut a clip into windows of at most ``window`` samples by the rule in the module docstring."""
    n = int(samples.shape[0])
    if n <= window:
        return [samples]
    k = math.ceil(n / window)
    starts = np.round(np.linspace(0, n - window, k)).astype(int)
    return [samples[s:s + window] for s in starts]


def _tokenizer_sha256(tokenizer) -> str:
    """sha256 of what decides the token ids: vocabulary, merges, normalizer, pre-tokenizer,
    post-processor, added tokens and the maximum length (not serialisation details such as
    None vs "" defaults, and not the padding/truncation state that calls leave behind)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        model = spec.get("model") or {}
        spec["model"] = {k: model.get(k) for k in ("type", "vocab", "merges", "unk_token")}
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {"vocab": sorted(tokenizer.get_vocab().items())}
    spec["model_max_length"] = tokenizer.model_max_length
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class _ClapBase(Embedder):
    """Shared embedding code; subclasses build (model, tokenizer, feature extractor)."""

    supports_text = True
    sample_rate = 48000

    def _setup(self, model, tokenizer, feature_extractor, device: str, batch_size: int) -> None:
        if feature_extractor.sampling_rate != self.sample_rate:
            raise EmbedderError(
                f"{self.name}: feature extractor expects {feature_extractor.sampling_rate} Hz; "
                f"this embedder feeds {self.sample_rate} Hz"
            )
        if batch_size < 1:
            raise EmbedderError(f"{self.name}: batch_size must be >= 1")
        self.device = device
        self.batch_size = batch_size
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self.window_s = float(feature_extractor.max_length_s)
        self.hop_s = self.window_s  # nominal: the even spread above may overlap windows slightly
        self._window = int(feature_extractor.nb_max_samples)
        self._weights_sha256 = state_dict_sha256(self.model)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def weights_sha256(self) -> str:
        return self._weights_sha256

    def preprocessing(self) -> dict[str, Any]:
        fe = self.feature_extractor
        return {
            "feature_extractor": {
                key: getattr(fe, key, None)
                for key in ("feature_size", "sampling_rate", "hop_length", "max_length_s",
                            "fft_window_size", "frequency_min", "frequency_max", "top_db",
                            "padding_value")
            },
            "truncation": "fusion (global branch, is_longer=False)" if self.fusion else "rand_trunc (inert)",
            "padding": "repeatpad",
            "window_rule": "<= W: one window; else ceil(n/W) windows of W spread evenly from 0 to n-W",
            "embedding": "L2-normalised projection per window",
            "tokenizer_sha256": _tokenizer_sha256(self.tokenizer),
            "mono": "mean of channels",
            "resampler": RESAMPLER,
        }

    def _audio_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        import torch

        state = np.random.get_state()  # the fusion path draws from numpy's global RNG
        try:
            features = self.feature_extractor(
                [w.astype(np.float64) for w in windows], sampling_rate=self.sample_rate,
                truncation="fusion" if self.fusion else "rand_trunc", padding="repeatpad",
                return_tensors="pt",
            )
        finally:
            np.random.set_state(state)
        inputs = features["input_features"].to(self.device, dtype=torch.float32)
        is_longer = torch.zeros((len(windows), 1), dtype=torch.bool, device=self.device)
        with torch.no_grad():
            out = self.model.get_audio_features(input_features=inputs, is_longer=is_longer)
        return _unit(out)

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
        import torch

        out = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                                    return_tensors="pt").to(self.device)
            with torch.no_grad():
                res = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                   attention_mask=tokens["attention_mask"])
            out.append(_unit(res))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _unit(output) -> np.ndarray:
    """L2-normalised float32 rows from a get_*_features result (tensor or model output)."""
    tensor = getattr(output, "pooler_output", output)  # transformers 5 returns a model output
    arr = tensor.detach().to("cpu").double().numpy()
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def _missing_clap_error(model: str, revision: str | None, err: Exception) -> EmbedderError:
    return EmbedderError(missing_weights_message(
        "CLAP model ", model, revision, err,
        "pass --clap-model FOLDER (a ClapModel saved with save_pretrained, with its tokenizer and "
        "preprocessor_config.json)"))


@register
class ClapEmbedder(_ClapBase):
    """transformers ClapModel from a hub id or local folder (default laion/clap-htsat-fused)."""

    name = "clap"
    description = f"LAION CLAP via transformers ClapModel (default {DEFAULT_CLAP_MODEL}); text + audio"
    version = "1"

    def __init__(self, model: str = DEFAULT_CLAP_MODEL, revision: str | None = None,
                 device: str = "cpu", batch_size: int = 8) -> None:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.model_id, self.revision = str(model), revision

        def load(local_only: bool):
            return tuple(cls.from_pretrained(self.model_id, revision=revision, local_files_only=local_only)
                         for cls in (ClapModel, AutoTokenizer, ClapFeatureExtractor))

        try:  # the cache (or a folder) first: no network round trip when the model is already here
            loaded, tokenizer, fe = load(local_only=True)
        except (OSError, ValueError) as err:
            if offline() or Path(self.model_id).is_dir() or not reachable():
                raise _missing_clap_error(self.model_id, revision, err) from err
            try:
                loaded, tokenizer, fe = load(local_only=False)
            except (OSError, ValueError) as err2:
                raise _missing_clap_error(self.model_id, revision, err2) from err2
        self._setup(loaded, tokenizer, fe, device, batch_size)

    def source(self) -> dict[str, Any]:
        return {"model": self.model_id, "revision": self.revision,
                "commit": getattr(self.model.config, "_commit_hash", None)}


@register
class TinyClapEmbedder(_ClapBase):
    """A random-weight ClapModel built offline (tests only: its scores mean nothing)."""

    name = "tiny-clap"
    description = "random-weight tiny ClapModel built offline (tests; scores are meaningless)"
    version = "1"

    def __init__(self, seed: int = 0, fusion: bool = False, device: str = "cpu",
                 batch_size: int = 8) -> None:
        from transformers import ClapFeatureExtractor, ClapModel

        from harness.checkpoints.tiny import _FEATURE_EXTRACTOR_CONFIG, _clap, _roberta_tokenizer, _seeded

        tokenizer = _roberta_tokenizer()

        def make():
            model = _clap(len(tokenizer))
            if fusion:
                config = model.config
                config.audio_config.enable_fusion = True
                model = ClapModel(config)
            return model

        self.seed = seed
        model = _seeded(seed, _TINY_SEED_OFFSET, make)
        fe = ClapFeatureExtractor(**{**_FEATURE_EXTRACTOR_CONFIG,
                                     "truncation": "fusion" if fusion else "rand_trunc"})
        self._setup(model, tokenizer, fe, device, batch_size)

    def source(self) -> dict[str, Any]:
        return {"model": "tiny-clap (built in memory)", "seed": self.seed, "fusion": self.fusion}
