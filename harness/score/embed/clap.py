"""``clap`` and ``tiny-clap``: CLAP audio and text embeddings exactly as laion_clap 1.1.7 computes them.

The model is transformers' ``ClapModel`` (``clap``: a converted LAION checkpoint from a hub id or
a local folder, default ``laion/clap-htsat-fused``, which holds the weights of laion_clap's
``630k-audioset-fusion-best.pt``; ``tiny-clap``: random weights built offline, for tests). The
computation is that of laion_clap's ``CLAP_Module.get_audio_embedding_from_data`` and
``get_text_embedding`` (``hook.py`` and ``training/data.py: get_audio_features``), with its
random choices made deterministic:

* audio at 48 kHz (soxr HQ, what ``librosa.load(sr=48000)`` uses in laion's file-list path);
* the int16 round trip ``int16_to_float32(float32_to_int16(x))``: clip to [-1, 1], scale by
  32767, truncate to int16, divide by 32767;
* a clip of at most 10 s (``max_length_s`` x rate = 480,000 samples) is repeat-padded to 10 s:
  tiled ``floor(480000 / n)`` times, then zero-padded;
* fused models: the log-mel (HTK mel filters without norm, ``10 log10(max(mel, 1e-10))``) of the
  padded clip, stacked four times, with ``is_longer = False`` (laion's eval branch);
  a longer clip takes the fusion branch: the log-mel of the whole clip, its three chunks of
  ``C = 480000 // 480 + 1 = 1001`` frames starting at one random frame of each third of the
  possible starts (``np.array_split(range(T - C + 1), 3)``), and the whole mel resized to
  (C, 64) (bilinear, ``align_corners=False``; antialiased as current torchvision's ``Resize``
  does by default, or not, as older torchvision and transformers' ``ClapFeatureExtractor`` do:
  ``resize_antialias``), with ``is_longer = True``. A clip of 10 s plus less than one hop has
  ``T == C`` and, as in laion, is its own mel stacked four times, not longer;
* unfused models: the log-mel with Slaney filters (HTSAT's own front end); a longer clip is
  cut to one random 10 s piece (laion's ``rand_trunc``);
* the random choices (the three chunk starts, the crop offset) are drawn, per clip, from
  ``np.random.RandomState(fusion_seed)`` exactly as laion draws them from numpy's global RNG,
  so ``np.random.seed(fusion_seed)`` before a one-clip laion call makes the same choice, and the
  same audio always gives the same embedding whatever its batch neighbours; the global RNG is
  never touched;
* text: RoBERTa tokens padded and truncated to exactly 77 (``padding="max_length"``);
* embeddings: the L2-normalised projections (one row per clip).

The embedder identity records all of this (mode, seed, round trip, antialiasing, 77 tokens),
so embeddings of other modes (``clap-window``, ``harness/score/embed/clap_window.py``) never
share a cache entry and gates refuse to compare figures across modes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.hub import missing_weights_message, offline, reachable
from harness.score.embed._torch import state_dict_sha256
from harness.score.embed.audio import RESAMPLER, peak_normalize
from harness.score.embed.registry import Embedder, EmbedderError, register

__all__ = ["DEFAULT_CLAP_MODEL", "FUSION_SEED", "TEXT_MAX_TOKENS", "ClapBase", "ClapEmbedder", "TinyClapEmbedder",
           "build_tiny_clap", "fusion_chunk_starts", "int16_round_trip", "load_clap", "repeat_pad",
           "state_dict_sha256"]

DEFAULT_CLAP_MODEL = "laion/clap-htsat-fused"
LAION_CLAP_VERSION = "1.1.7"
TEXT_MAX_TOKENS = 77  # laion_clap's CLAP_Module.tokenizer: padding="max_length", max_length=77
FUSION_SEED = 0
_TINY_SEED_OFFSET = 101  # not the tiny pipeline's own CLAP (offset 1)


def int16_round_trip(samples: np.ndarray) -> np.ndarray:
    """laion's ``int16_to_float32(float32_to_int16(x))``: clip at +-1, quantise to int16, back to float32."""
    quantised = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    return (quantised / 32767.0).astype(np.float32)


def repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile a clip ``floor(length / n)`` times, then zero-pad it to ``length`` (laion's ``repeatpad``)."""
    tiled = np.tile(samples, length // samples.shape[0])
    return np.pad(tiled, (0, length - tiled.shape[0]))


def fusion_chunk_starts(total_frames: int, chunk_frames: int, seed: int) -> tuple[int, int, int]:
    """Start frames of the front, middle and back chunks, drawn as laion draws them after ``np.random.seed(seed)``."""
    ranges = np.array_split(list(range(total_frames - chunk_frames + 1)), 3)
    ranges = [r if len(r) else [0] for r in ranges]  # too few starts: laion falls back to 0
    rng = np.random.RandomState(seed)
    return tuple(int(rng.choice(r)) for r in ranges)


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


def load_clap(model: str, revision: str | None) -> tuple[Any, Any, Any]:
    """(ClapModel, tokenizer, ClapFeatureExtractor) from a hub id or a local folder."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    def load(local_only: bool):
        return tuple(cls.from_pretrained(model, revision=revision, local_files_only=local_only)
                     for cls in (ClapModel, AutoTokenizer, ClapFeatureExtractor))

    try:  # the cache (or a folder) first: no network round trip when the model is already here
        return load(local_only=True)
    except (OSError, ValueError) as err:
        if offline() or Path(model).is_dir() or not reachable():  # fail now, not after minutes of retries
            raise _missing_clap_error(model, revision, err) from err
    try:
        return load(local_only=False)
    except (OSError, ValueError) as err:
        raise _missing_clap_error(model, revision, err) from err


def build_tiny_clap(seed: int, fusion: bool, text_positions: int | None = TEXT_MAX_TOKENS + 2) -> tuple[Any, Any, Any]:
    """A random-weight tiny (ClapModel, tokenizer, ClapFeatureExtractor), built offline.

    ``text_positions``: the text model's position table (default: room for laion's 77 tokens,
    as RoBERTa positions start after the padding index; None: the tiny pipeline CLAP's 66).
    """
    from transformers import ClapFeatureExtractor, ClapModel

    from harness.checkpoints.tiny import _FEATURE_EXTRACTOR_CONFIG, _clap, _roberta_tokenizer, _seeded

    tokenizer = _roberta_tokenizer()

    def make():
        model = _clap(len(tokenizer))
        if not fusion and text_positions is None:
            return model
        config = model.config
        config.audio_config.enable_fusion = fusion
        if text_positions is not None:
            config.text_config.max_position_embeddings = text_positions
        return ClapModel(config)

    fe = ClapFeatureExtractor(**{**_FEATURE_EXTRACTOR_CONFIG, "truncation": "fusion" if fusion else "rand_trunc"})
    return _seeded(seed, _TINY_SEED_OFFSET, make), tokenizer, fe


class ClapBase(Embedder):
    """What every CLAP mode shares: the model on a device, its checksums, and the forward passes."""

    supports_text = True
    sample_rate = 48000
    model_id: str
    revision: str | None

    def source(self) -> dict[str, Any]:
        """Where the weights came from (the tiny models override this)."""
        return {"model": self.model_id, "revision": self.revision,
                "commit": getattr(self.model.config, "_commit_hash", None)}

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
        self._weights_sha256 = state_dict_sha256(self.model)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def weights_sha256(self) -> str:
        return self._weights_sha256

    def _front_end(self) -> dict[str, Any]:
        fe = self.feature_extractor
        return {
            "feature_extractor": {
                key: getattr(fe, key, None)
                for key in ("feature_size", "sampling_rate", "hop_length", "max_length_s",
                            "fft_window_size", "frequency_min", "frequency_max", "top_db",
                            "padding_value")
            },
            "tokenizer_sha256": _tokenizer_sha256(self.tokenizer),
            "mono": "mean of channels",
            "resampler": RESAMPLER,
        }

    def _audio_forward(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        """Normalised audio projections of stacked log-mels (batch, channels, frames, mels)."""
        import torch

        inputs = torch.from_numpy(np.ascontiguousarray(features)).to(self.device, dtype=torch.float32)
        longer = torch.from_numpy(is_longer.reshape(-1, 1)).to(self.device)
        with torch.no_grad():
            return _unit(self.model.get_audio_features(input_features=inputs, is_longer=longer))

    def _text_forward(self, texts: Sequence[str], **tokenize: Any) -> np.ndarray:
        """Normalised text projections, in batches, with the given tokenizer settings."""
        import torch

        out = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[s:s + self.batch_size]), return_tensors="pt", **tokenize)
            with torch.no_grad():
                res = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                   attention_mask=tokens["attention_mask"].to(self.device))
            out.append(_unit(res))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class LaionClap(ClapBase):
    """laion_clap 1.1.7's computation (see the module docstring): one embedding per clip."""

    window_s = 0.0  # 0: the whole clip is the input (repeat-padded, or fused when longer)
    hop_s = 0.0

    peak_dbfs: float | None = None

    def _laion_setup(self, fusion_seed: int, resize_antialias: bool, peak_dbfs: float | None = None) -> None:
        fe = self.feature_extractor
        # stable-audio-metrics' clap_score.py peak-normalises each clip (to -1 dBFS) before the
        # int16 round trip; laion_clap itself does not (None)
        self.peak_dbfs = None if peak_dbfs is None else float(peak_dbfs)
        self.fusion_seed = int(fusion_seed)
        self.resize_antialias = bool(resize_antialias)
        self.max_samples = int(fe.nb_max_samples)
        self.chunk_frames = self.max_samples // int(fe.hop_length) + 1
        positions = int(self.model.config.text_config.max_position_embeddings)
        if positions < TEXT_MAX_TOKENS + 2:
            raise EmbedderError(f"{self.name}: the text model has {positions} positions; laion_clap's "
                                f"{TEXT_MAX_TOKENS} tokens need {TEXT_MAX_TOKENS + 2}; use a LAION CLAP checkpoint")

    def preprocessing(self) -> dict[str, Any]:
        long_clips = (f"fusion: whole log-mel resized to {self.chunk_frames} frames (bilinear, antialias="
                      f"{self.resize_antialias}) + 3 chunks from the thirds of the starts, is_longer=True"
                      if self.fusion else "rand_trunc: one 10 s crop")
        peak = {} if self.peak_dbfs is None else {"peak_normalize_dbfs": self.peak_dbfs, "length": "librosa.load"}
        return {
            **self._front_end(),
            **peak,
            "mode": f"laion_clap {LAION_CLAP_VERSION}",
            "int16_round_trip": "clip to [-1, 1], x32767, truncate to int16, /32767",
            "short_clips": "repeatpad to max_length_s" + (", mel stacked x4, is_longer=False" if self.fusion else ""),
            "long_clips": long_clips,
            "mel_filters": "htk, no norm" if self.fusion else "slaney",
            "fusion_seed": self.fusion_seed,
            "resize_antialias": self.resize_antialias if self.fusion else None,
            "text": {"max_tokens": TEXT_MAX_TOKENS, "padding": "max_length", "truncation": True},
            "embedding": "L2-normalised projection, one per clip",
        }

    def audio_of(self, clip: Any) -> np.ndarray:
        """laion mode: the clip at 48 kHz; stable-audio-metrics mode (``peak_dbfs`` set): at the length
        ``librosa.load(sr=48000)`` gives, as its clap_score.py loads it."""
        return clip.at_rate(self.sample_rate) if self.peak_dbfs is None else clip.at_rate_librosa(self.sample_rate)

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """(frames, mels) log-mel as ``ClapFeatureExtractor`` computes it for this model's mode."""
        from transformers.audio_utils import spectrogram, window_function

        fe = self.feature_extractor
        filters = fe.mel_filters if self.fusion else fe.mel_filters_slaney
        return spectrogram(samples.astype(np.float64), window_function(fe.fft_window_size, "hann"),
                           frame_length=fe.fft_window_size, hop_length=fe.hop_length, power=2.0,
                           mel_filters=filters, log_mel="dB").T

    def _resize(self, mel: np.ndarray) -> np.ndarray:
        """The whole mel squeezed to ``chunk_frames`` frames (torchvision ``Resize`` on a tensor)."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None, None]
        out = torch.nn.functional.interpolate(tensor, size=[self.chunk_frames, mel.shape[1]], mode="bilinear",
                                              align_corners=False, antialias=self.resize_antialias)
        return out[0, 0].numpy()

    def audio_input(self, clip: np.ndarray) -> tuple[np.ndarray, bool]:
        """One clip's model input (channels, frames, mels) and its ``is_longer`` flag."""
        samples = np.asarray(clip, dtype=np.float32)
        if self.peak_dbfs is not None:
            samples = peak_normalize(samples, self.peak_dbfs)
        samples = int16_round_trip(samples)
        n, limit = samples.shape[0], self.max_samples
        if n > limit and not self.fusion:
            start = int(np.random.RandomState(self.fusion_seed).randint(0, n - limit + 1))
            return self.log_mel(samples[start:start + limit])[None], False
        if n > limit:
            mel = self.log_mel(samples)
            if mel.shape[0] == self.chunk_frames:  # longer by less than a hop: laion keeps it whole
                return np.stack([mel] * 4), False
            starts = fusion_chunk_starts(mel.shape[0], self.chunk_frames, self.fusion_seed)
            chunks = [mel[s:s + self.chunk_frames] for s in starts]
            return np.stack([self._resize(mel), *chunks]), True
        mel = self.log_mel(repeat_pad(samples, limit))
        return (np.stack([mel] * 4) if self.fusion else mel[None]), False

    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        rows = []
        for s in range(0, len(clips), self.batch_size):
            inputs = []
            for clip in clips[s:s + self.batch_size]:
                if clip.size == 0:
                    raise EmbedderError(f"{self.name}: cannot embed an empty clip")
                inputs.append(self.audio_input(clip))
            features = np.stack([x for x, _ in inputs])
            rows.append(self._audio_forward(features, np.array([longer for _, longer in inputs])))
        flat = np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)
        return [flat[i:i + 1] for i in range(len(clips))]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self._text_forward(texts, padding="max_length", truncation=True, max_length=TEXT_MAX_TOKENS)


@register
class ClapEmbedder(LaionClap):
    """laion_clap 1.1.7's CLAP embeddings from a converted checkpoint (default laion/clap-htsat-fused)."""

    name = "clap"
    description = (f"LAION CLAP as laion_clap {LAION_CLAP_VERSION} computes it (fusion, int16 round trip, "
                   f"77 tokens); transformers ClapModel, default {DEFAULT_CLAP_MODEL}; text + audio")
    version = "2"

    def __init__(self, model: str = DEFAULT_CLAP_MODEL, revision: str | None = None, device: str = "cpu",
                 batch_size: int = 8, fusion_seed: int = FUSION_SEED, resize_antialias: bool = True,
                 peak_dbfs: float | None = None) -> None:
        self.model_id, self.revision = str(model), revision
        self._setup(*load_clap(self.model_id, revision), device, batch_size)
        self._laion_setup(fusion_seed, resize_antialias, peak_dbfs)

@register
class TinyClapEmbedder(LaionClap):
    """``clap``'s computation on a random-weight tiny ClapModel built offline (tests only)."""

    name = "tiny-clap"
    description = "random-weight tiny ClapModel, laion_clap computation (tests; scores are meaningless)"
    version = "2"

    def __init__(self, seed: int = 0, fusion: bool = False, device: str = "cpu", batch_size: int = 8,
                 fusion_seed: int = FUSION_SEED, resize_antialias: bool = True, peak_dbfs: float | None = None) -> None:
        self.seed = seed
        self._setup(*build_tiny_clap(seed, fusion), device, batch_size)
        self._laion_setup(fusion_seed, resize_antialias, peak_dbfs)

    def source(self) -> dict[str, Any]:
        return {"model": "tiny-clap (built in memory)", "seed": self.seed, "fusion": self.fusion}
