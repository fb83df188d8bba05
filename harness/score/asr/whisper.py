"""Whisper transcription through transformers, deterministic: greedy decoding (one beam, no
sampling, no temperature fallback), language fixed to English and task to "transcribe" (for
multilingual checkpoints; English-only ``*.en`` ones take neither), no timestamps.

The model is any hub id or local folder in transformers' Whisper format, default
``openai/whisper-large-v3`` (what TTS papers usually report WER with), or ``tiny-whisper``
(random weights, built locally; for tests). Clips are resampled to 16 kHz with soxr; Whisper
reads at most 30 s, so longer clips are cut there and flagged ``truncated``.

Non-speech: a silent clip (peak below 1e-4, the store's ``silent`` flag) is not transcribed (the
transcript is empty); otherwise Whisper's no-speech probability is computed as openai-whisper
does (softmax of the first decoder position's logits, at the no-speech token), and above
``NO_SPEECH_THRESHOLD`` (openai-whisper's default, 0.6) the clip is flagged ``non_speech``. The
transcript is kept either way, so WER counts whatever the model heard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.score.metrics.wer import SPELLINGS

__all__ = ["DEFAULT_ASR_MODEL", "AsrError", "Transcript", "WhisperTranscriber"]

DEFAULT_ASR_MODEL = "openai/whisper-large-v3"
SAMPLE_RATE = 16000
MAX_SECONDS = 30.0
NO_SPEECH_THRESHOLD = 0.6
SILENT_PEAK = 1e-4
NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")  # v3 name, earlier name
VERSION = "1"  # bump when the transcription procedure changes: cached transcripts are then redone


class AsrError(HarnessError, ValueError):
    """A speech recogniser that cannot be loaded or used; the message says why and what to do."""


@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard in one clip."""

    text: str
    no_speech_prob: float | None  # None: not computed (silent clip, or no no-speech token)
    flags: tuple[str, ...] = ()  # non_speech, truncated

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (for the transcript cache)."""
        return {"text": self.text, "no_speech_prob": self.no_speech_prob, "flags": list(self.flags)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Transcript":
        """Inverse of ``to_json``."""
        return cls(str(data["text"]), data.get("no_speech_prob"), tuple(data.get("flags", ())))


class WhisperTranscriber:
    """A Whisper checkpoint, loaded lazily, that turns 16 kHz mono clips into ``Transcript``s."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: str = DEFAULT_ASR_MODEL, *, revision: str | None = None, device: str = "auto",
                 batch_size: int = 8) -> None:
        self.model_id, self.revision, self.batch_size = model, revision, batch_size
        self.device = _device(device)
        if self.device != "cpu":  # greedy transcripts must not flip on TF32 rounding
            from harness.score.embed._torch import full_float32

            full_float32()

    @property
    def name(self) -> str:
        """Short name for tables and metric rows: ``tiny-whisper``, ``whisper-large-v3``, a folder's name."""
        return self.model_id if self.model_id == "tiny-whisper" else Path(self.model_id.rstrip("/")).name

    @cached_property
    def _loaded(self) -> tuple[Any, Any, Any]:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        source = self._source()
        try:
            model = WhisperForConditionalGeneration.from_pretrained(source, revision=self.revision)
            tokenizer = AutoTokenizer.from_pretrained(source, revision=self.revision)
            features = WhisperFeatureExtractor.from_pretrained(source, revision=self.revision)
        except OSError as err:
            from harness.hub import missing_weights_message

            raise AsrError(missing_weights_message(
                "speech recogniser ", self.model_id, self.revision, err,
                "pass --asr-model with a local Whisper folder (or tiny-whisper for a smoke test)")) from None
        return model.eval().to(self.device), tokenizer, features

    def _source(self) -> str:
        if self.model_id == "tiny-whisper":
            from harness.score.asr.tiny import tiny_whisper_path

            return str(tiny_whisper_path())
        return self.model_id

    def decoding(self) -> dict[str, Any]:
        """The generation settings: what makes transcripts reproducible."""
        model, _, _ = self._loaded
        multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
        return {"num_beams": 1, "do_sample": False, "language": "en" if multilingual else None,
                "task": "transcribe" if multilingual else None, "return_timestamps": False,
                "max_seconds": MAX_SECONDS, "no_speech_threshold": NO_SPEECH_THRESHOLD,
                "silent_peak": SILENT_PEAK, "sample_rate": SAMPLE_RATE, "resampler": "soxr HQ"}

    def identity(self) -> dict[str, Any]:
        """Everything that changes a transcript or its score: model weights, decoding, normaliser."""
        from harness.score.embed._torch import state_dict_sha256

        return {"name": self.name, "version": VERSION, "model": self.model_id, "revision": self.revision,
                "weights_sha256": state_dict_sha256(self._loaded[0]), "decoding": self.decoding(),
                "normaliser": {"class": "transformers EnglishTextNormalizer",
                               "spellings_sha256": hashlib.sha256(SPELLINGS.read_bytes()).hexdigest()}}

    @cached_property
    def identity_key(self) -> str:
        """``<name>-<16 hex digits>`` digest of ``identity()``: the cache folder and metric embedder_id."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcripts of mono float32 clips at 16 kHz, in order."""
        out: list[Transcript | None] = [None] * len(clips)
        todo = []
        for i, clip in enumerate(clips):
            if clip.size == 0 or float(np.max(np.abs(clip))) < SILENT_PEAK:
                out[i] = Transcript("", None, ("non_speech",))
            else:
                todo.append(i)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            for i, t in zip(batch, self._transcribe_batch([clips[i] for i in batch])):
                out[i] = t
        return out  # type: ignore[return-value]

    def _transcribe_batch(self, clips: list[np.ndarray]) -> list[Transcript]:
        import torch

        model, tokenizer, features = self._loaded
        limit = int(MAX_SECONDS * SAMPLE_RATE)
        inputs = features([c[:limit] for c in clips], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        feats = inputs.input_features.to(self.device, model.dtype)
        settings = self.decoding()
        kwargs = {k: settings[k] for k in ("language", "task") if settings[k] is not None}
        with torch.no_grad():
            ids = model.generate(feats, num_beams=1, do_sample=False, return_timestamps=False, **kwargs)
            no_speech = self._no_speech_probs(model, tokenizer, feats)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        result = []
        for clip, text, p in zip(clips, texts, no_speech):
            flags = (("non_speech",) if p is not None and p > NO_SPEECH_THRESHOLD else ()) + \
                (("truncated",) if clip.size > limit else ())
            result.append(Transcript(text.strip(), p, flags))
        return result

    @staticmethod
    def _no_speech_probs(model, tokenizer, feats) -> list[float | None]:
        import torch

        token = next((t for t in NO_SPEECH_TOKENS if t in tokenizer.get_vocab()), None)
        if token is None:
            return [None] * feats.shape[0]
        start = torch.full((feats.shape[0], 1), model.generation_config.decoder_start_token_id, device=feats.device)
        logits = model(input_features=feats, decoder_input_ids=start).logits[:, 0].float()
        return torch.softmax(logits, dim=-1)[:, tokenizer.convert_tokens_to_ids(token)].cpu().tolist()


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
