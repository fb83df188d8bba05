"""``transcribe``: WER and CER of a run's speech samples, written as metric rows.

Every stored sample that has a transcription (the speech checkpoints' cells) is transcribed
(``harness.score.asr.whisper``) and scored against its transcription
(``harness.score.metrics.wer``). Per cell, two rows land in the run's ``metrics`` table:
metric ``wer`` and ``cer``, embedder = the recogniser's name, embedder_id = its identity key,
reference and reference_id ``transcriptions``. Report and gate read them as ``wer:<model>`` and
``cer:<model>`` (lower is better). ``details`` holds the recogniser identity, edit counts, flag
counts, ``per_sample`` ((prompt id, seed, rate) triples, for paired gate tests) and
``transcripts`` (reference, hypothesis, counts and flags of every sample, worst first).

Transcripts are cached by the audio's content hash and the recogniser's identity key, under
``<cache>/transcripts/<identity_key>/<sha[:2]>/<sha>.json``, like embeddings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.errors import HarnessError
from harness.fileio import atomic_write_text
from harness.score.asr.whisper import DEFAULT_ASR_MODEL, Transcript, WhisperTranscriber
from harness.score.embed.audio import Clip
from harness.score.metrics.wer import WordErrorRate
from harness.store import open_store

__all__ = ["TranscriptCache", "TranscribeResult", "transcribe_run", "REFERENCE"]

REFERENCE = "transcriptions"


class TranscribeError(HarnessError, ValueError):
    """The run cannot be transcribed as asked; the message says why and what to do."""


class TranscriptCache:
    """Content-keyed JSON transcripts; counts hits, misses and writes."""

    def __init__(self, root: str | Path | None = None) -> None:
        from harness.checkpoints._cache import default_cache_dir

        self.root = Path(root) if root is not None else default_cache_dir() / "transcripts"
        self.hits = self.misses = self.writes = 0

    def path(self, identity_key: str, sha: str) -> Path:
        """Where the transcript of audio with content hash ``sha`` lives."""
        return self.root / identity_key / sha[:2] / f"{sha}.json"

    def get(self, identity_key: str, sha: str) -> Transcript | None:
        """The cached transcript, or None (absent or unreadable: recomputed)."""
        try:
            found = Transcript.from_json(json.loads(self.path(identity_key, sha).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            found = None
        self.hits += found is not None
        self.misses += found is None
        return found

    def put(self, identity_key: str, sha: str, transcript: Transcript) -> None:
        """Store atomically."""
        atomic_write_text(self.path(identity_key, sha), json.dumps(transcript.to_json(), sort_keys=True))
        self.writes += 1


@dataclass
class TranscribeResult:
    """What ``transcribe_run`` did: metric rows written, cells skipped (no speech samples), cache counts."""

    rows: list[dict[str, Any]]
    model: str
    transcribed: int = 0
    cached: int = 0
    skipped_cells: list[str] = field(default_factory=list)


def transcribe_run(run_dir: str | Path, model: str = DEFAULT_ASR_MODEL, *, revision: str | None = None,
                   device: str = "auto", batch_size: int = 8, bootstrap: int = 1000, confidence: float = 0.95,
                   seed: int = 0, cache_dir: str | Path | None = None, progress: bool = False,
                   transcriber: WhisperTranscriber | None = None) -> TranscribeResult:
    """Transcribe every speech sample of a run and store per-cell WER/CER rows (see module docstring)."""
    if bootstrap < 0:
        raise TranscribeError(f"--bootstrap must be >= 0 (0: no intervals), got {bootstrap}")
    root = Path(run_dir)
    if not (root / "run.sqlite").is_file():
        raise TranscribeError(f"{run_dir} is not a run folder (no run.sqlite); run a sweep into it first")
    asr = transcriber or WhisperTranscriber(model, revision=revision, device=device, batch_size=batch_size)
    cache = TranscriptCache(cache_dir)
    with open_store(root) as store:
        by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in store.samples():
            by_cell[row["cell_id"]].append(row)
        result = TranscribeResult([], asr.name, skipped_cells=[c for c, rows in by_cell.items() if not _speaks(rows[0])])
        by_cell = {c: [s for s in rows if s["transcription"]] for c, rows in by_cell.items() if _speaks(rows[0])}
        if not by_cell:
            raise TranscribeError(f"{run_dir} has no samples of a speech checkpoint (e.g. tiny-speech, "
                                  "anhnct/audioldm2_ljspeech); transcribe scores those; use score for audio and music")
        total = sum(1 for rows in by_cell.values() for s in rows if s["status"] == "ok")
        bar = tqdm(total=total, desc="transcribing", unit="clip", disable=not progress)
        for cell_id, speech in by_cell.items():
            scored = [s for s in speech if s["status"] == "ok"]
            if not scored:
                result.skipped_cells.append(cell_id)
                continue
            transcripts = _transcripts(root, scored, asr, cache, result, bar.update)
            result.rows += _cell_rows(cell_id, scored, transcripts, len(speech) - len(scored), asr,
                                      bootstrap, confidence, seed)
        bar.close()
        if result.rows:
            store.write_metrics(result.rows)
    return result


def print_transcribed(result: TranscribeResult) -> None:
    """Print the WER/CER rows as a table, then skipped cells and cache use."""
    from harness.console import make_console, metric_table

    console = make_console()
    console.print(metric_table("audioldm2-harness transcribe", ("cell", "metric", "model", "value", "CI", "n",
                                                                "edits / units", "flags"), result.rows, _row_cells))
    if result.skipped_cells:
        console.print(f"{len(result.skipped_cells)} cell(s) without speech samples not scored", highlight=False)
    console.print(f"transcribed {result.transcribed} clip(s), {result.cached} from the cache", highlight=False)


def _row_cells(r: dict[str, Any], value: str, ci: str) -> list[str]:
    d = r["details"]
    flags = ", ".join(f"{k} {v}" for k, v in d["flags"].items() if v) + (f", {d['failed']} failed" if d["failed"] else "")
    return [r["cell_id"], r["metric"], r["embedder"], value, ci, str(r["n"]), f"{d['edits']} / {d['reference_units']}",
            flags.strip(", ")]


def _speaks(sample: dict[str, Any]) -> bool:
    """Whether the sample's checkpoint is a speech one (audio checkpoints store transcriptions too)."""
    from harness.checkpoints.registry import CheckpointError, describe

    try:
        return describe(sample["checkpoint"]).needs_transcription
    except CheckpointError:  # a local folder since moved: its samples say whether words were given
        return bool(sample["transcription"])


def _transcripts(root: Path, samples: list[dict[str, Any]], asr: WhisperTranscriber, cache: TranscriptCache,
                 result: TranscribeResult, progress: Callable[[int], None] | None) -> list[Transcript]:
    clips = [Clip.from_file(root / s["audio_path"]) for s in samples]
    found: list[Transcript | None] = [cache.get(asr.identity_key, c.sha256) for c in clips]
    todo = [i for i, t in enumerate(found) if t is None]
    result.cached += len(clips) - len(todo)
    for start in range(0, len(todo), asr.batch_size):
        batch = todo[start:start + asr.batch_size]
        for i, t in zip(batch, asr.transcribe([clips[i].at_rate(asr.sample_rate) for i in batch])):
            found[i] = t
            cache.put(asr.identity_key, clips[i].sha256, t)
        result.transcribed += len(batch)
        if progress is not None:
            progress(len(batch))
    return found  # type: ignore[return-value]


def _cell_rows(cell_id: str, samples: list[dict[str, Any]], transcripts: list[Transcript], failed: int,
               asr: WhisperTranscriber, bootstrap: int, confidence: float, seed: int) -> list[dict[str, Any]]:
    metric = WordErrorRate(confidence=confidence, n_resamples=bootstrap, seed=seed)
    metric.update([s["prompt_id"] for s in samples], [s["transcription"] for s in samples],
                  [t.text for t in transcripts], [t.flags for t in transcripts])
    rows = []
    errors = metric.samples()
    listing = [
        {"prompt_id": s["prompt_id"], "seed": s["seed"], "audio_path": s["audio_path"],
         "no_speech_prob": t.no_speech_prob, **e.details()}
        for s, t, e in zip(samples, transcripts, errors)
    ]
    for unit in ("wer", "cer"):
        r = metric.compute(unit)
        keep_ci = r.low is not None
        rows.append({
            "cell_id": cell_id, "metric": unit, "embedder": asr.name, "embedder_id": asr.identity_key,
            "reference": REFERENCE, "reference_id": REFERENCE, "value": r.value,
            "ci_low": r.low if keep_ci else None, "ci_high": r.high if keep_ci else None,
            "confidence": confidence if keep_ci else None, "n": r.n,
            "details": {
                "identity": asr.identity(), "failed": failed, "edits": r.edits, "reference_units": r.reference_units,
                "n_prompts": r.n_prompts, "flags": r.flag_counts, "method": r.method,
                **({"error": "no reference words: every transcription normalises to nothing"} if r.value is None else {}),
                "per_sample": [[s["prompt_id"], s["seed"], getattr(e, unit)] for s, e in zip(samples, errors)],
                "transcripts": sorted(listing, key=lambda d: (-d[unit], d["prompt_id"], d["seed"])),
            },
        })
    return rows
