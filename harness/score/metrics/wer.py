"""Word and character error rates of speech samples: transcript (hypothesis) against the
sample's transcription (reference), both through Whisper's English text normaliser first.

Edit counts come from jiwer's alignment (substitutions, deletions, insertions, hits). A cell's
figure is corpus-level, as jiwer and ASR papers compute it: total edits over total reference
words (characters for CER), not a mean of per-sample rates; its bootstrap CI resamples prompts
(all seeds of a prompt move together). CER counts characters of the normalised text, spaces
included (jiwer's default).

Edge cases are defined, flagged and never dropped:

* ``empty_hypothesis``: nothing was transcribed; every reference word is a deletion (WER 1).
* ``empty_reference``: the transcription normalises to nothing (e.g. "..."); the sample's rate is
  0 if the hypothesis is empty too and 1 otherwise, and its inserted words still count in the
  cell's numerator (nothing in its denominator).
* ``non_speech``: the transcriber judged the audio not to be speech (silent audio, or Whisper's
  no-speech probability above its threshold; see ``harness.score.asr``). The transcript is
  scored as it is: a cell of noise gets the high WER it deserves, and the flag says why.
* ``truncated``: the clip was longer than the recogniser reads (Whisper: 30 s) and was cut.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.score.metrics.bootstrap import set_metric_ci

__all__ = ["SampleErrors", "ErrorRateResult", "WordErrorRate", "english_normalizer",
           "normalise", "sample_errors"]

SPELLINGS = Path(__file__).resolve().parents[1] / "asr" / "english_spellings.json"
FLAGS = ("empty_hypothesis", "empty_reference", "non_speech", "truncated")


@functools.lru_cache(maxsize=1)
def english_normalizer():
    """transformers' copy of Whisper's EnglishTextNormalizer with the British-to-American mapping.

    The mapping is the file the Whisper checkpoints ship (``normalizer.json``), vendored so that
    it works offline (see harness/score/asr/NOTICE.md).
    """
    # Imported here: transformers takes seconds to import and the metric module must stay light.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(json.loads(SPELLINGS.read_text(encoding="utf-8")))


def normalise(text: str) -> str:
    """Whisper's English normalisation: lower case, numbers and spellings standardised, no punctuation."""
    return english_normalizer()(text)


@dataclass(frozen=True)
class SampleErrors:
    """One sample's normalised texts, edit counts (words and characters) and flags."""

    reference: str
    hypothesis: str
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    char_edits: int
    reference_chars: int
    flags: tuple[str, ...] = ()

    @property
    def word_edits(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_words(self) -> int:
        """Words in the normalised reference."""
        return self.substitutions + self.deletions + self.hits

    @property
    def wer(self) -> float:
        """The sample's word error rate (see the module docstring for an empty reference)."""
        return _rate(self.word_edits, self.reference_words)

    @property
    def cer(self) -> float:
        """The sample's character error rate."""
        return _rate(self.char_edits, self.reference_chars)

    def details(self) -> dict:
        """JSON-able row for metric details: texts, counts, rates, flags."""
        return {**asdict(self), "flags": list(self.flags), "wer": self.wer, "cer": self.cer}


def _rate(edits: int, total: int) -> float:
    if total == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / total


def sample_errors(reference: str, hypothesis: str, flags: Sequence[str] = ()) -> SampleErrors:
    """Normalise both texts and count word and character edits with jiwer."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    found = list(flags)
    if not ref:
        found.append("empty_reference")
    if not hyp:
        found.append("empty_hypothesis")
    if ref and hyp:
        words = jiwer.process_words(ref, hyp)
        s, d, i, h = words.substitutions, words.deletions, words.insertions, words.hits
        chars = jiwer.process_characters(ref, hyp)
        char_edits = chars.substitutions + chars.deletions + chars.insertions
    else:  # jiwer's alignment of an empty side is trivial: all deletions or all insertions
        s, h = 0, 0
        d, i = len(ref.split()), len(hyp.split())
        char_edits = len(ref) + len(hyp)
    return SampleErrors(ref, hyp, s, d, i, h, char_edits, len(ref),
                        tuple(sorted(set(f for f in found if f in FLAGS))))


@dataclass(frozen=True)
class ErrorRateResult:
    """A cell's corpus-level rate with its bootstrap CI over prompts."""

    value: float | None  # None when no sample has a non-empty reference
    low: float | None
    high: float | None
    n: int  # samples
    n_prompts: int
    edits: int
    reference_units: int  # words (WER) or characters (CER)
    flag_counts: dict[str, int] = field(default_factory=dict)
    method: str = ""
    confidence: float = 0.95


class WordErrorRate:
    """Streaming WER and CER: ``update(prompt_ids, references, hypotheses, flags)``, then
    ``compute("wer")`` / ``compute("cer")``; ``samples()`` gives the per-sample rows."""

    def __init__(self, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> None:
        self.confidence, self.n_resamples, self.seed = confidence, n_resamples, seed
        self.reset()

    def reset(self) -> None:
        """Forget all samples."""
        self._prompts: list[str] = []
        self._samples: list[SampleErrors] = []

    def update(self, prompt_ids: Sequence[str], references: Sequence[str], hypotheses: Sequence[str],
               flags: Sequence[Sequence[str]] | None = None) -> None:
        """Add samples: the prompt each came from (the resampling unit), its reference and transcript."""
        if not len(prompt_ids) == len(references) == len(hypotheses):
            raise ValueError(f"prompt_ids, references and hypotheses differ in length: "
                             f"{len(prompt_ids)}, {len(references)}, {len(hypotheses)}")
        flags = flags if flags is not None else [()] * len(prompt_ids)
        for pid, ref, hyp, fl in zip(prompt_ids, references, hypotheses, flags):
            self._prompts.append(str(pid))
            self._samples.append(sample_errors(ref, hyp, fl))

    def samples(self) -> list[SampleErrors]:
        """Per-sample errors, in update order."""
        return list(self._samples)

    def compute(self, unit: str = "wer") -> ErrorRateResult:
        """Corpus-level ``wer`` or ``cer`` with a percentile bootstrap CI over prompts (none if ``n_resamples`` is 0)."""
        if unit not in ("wer", "cer"):
            raise ValueError(f"unit must be 'wer' or 'cer', got {unit!r}")
        if not self._samples:
            raise ValueError("WordErrorRate.compute() called before any update()")
        per_prompt = self._per_prompt(unit)
        edits, total = (int(v) for v in per_prompt.sum(axis=0))
        counts = {f: sum(f in s.flags for s in self._samples) for f in FLAGS}
        base = dict(n=len(self._samples), n_prompts=len(per_prompt), edits=edits, reference_units=total,
                    flag_counts=counts, confidence=self.confidence)
        if total == 0:
            return ErrorRateResult(None, None, None, method="undefined (no reference words)", **base)
        value = edits / total
        if self.n_resamples == 0:
            return ErrorRateResult(value, None, None, method="none (no resamples asked for)", **base)
        if len(per_prompt) < 2 or np.all(per_prompt[:, 1] == 0):
            return ErrorRateResult(value, None, None, method="none (fewer than 2 prompts)", **base)
        ci = set_metric_ci(per_prompt, per_prompt, _corpus_rate, confidence=self.confidence,
                           n_resamples=self.n_resamples, method="percentile", seed=self.seed)
        return ErrorRateResult(value, ci.low, ci.high, method=f"bootstrap over prompts ({ci.method})", **base)

    def _per_prompt(self, unit: str) -> np.ndarray:
        """(n_prompts, 2) float array: edits and reference units summed over each prompt's samples."""
        rows: dict[str, list[int]] = {}
        for pid, s in zip(self._prompts, self._samples):
            edits, total = (s.word_edits, s.reference_words) if unit == "wer" else (s.char_edits, s.reference_chars)
            row = rows.setdefault(pid, [0, 0])
            row[0] += edits
            row[1] += total
        return np.asarray(list(rows.values()), dtype=np.float64)


def _corpus_rate(x: np.ndarray, _y: np.ndarray) -> float:
    # A resample can draw only empty-reference prompts: no words, rate of its edits alone.
    total = x[:, 1].sum()
    return float(x[:, 0].sum() / total) if total else float(x[:, 0].sum() > 0)
