"""Reference sets: a folder of audio -> a manifest of usable clips and a quarantine report.

Every regular file under the folder (recursively, following links; names starting with "."
are ignored and counted) is decoded with soundfile, so any format libsndfile reads works (WAV,
FLAC, OGG/Vorbis, MP3 with libsndfile >= 1.1, AIFF, ...), at any rate and channel count
(channels are averaged to mono). A file is quarantined, with its reason, when it

* cannot be decoded (``unreadable``: not audio, truncated, unsupported format),
* holds no samples (``empty``),
* is shorter than ``min_duration_s`` (``too short``),
* contains NaN or infinite samples (``non-finite``),
* is digital silence, peak below 1e-4 (``silent``; unless ``allow_silent``).

Nothing is skipped silently: the manifest lists what is used (relative path, file sha256,
content sha256 of the decoded mono samples, duration, rate, channels), the quarantine lists
the rest, and both are written as JSON next to the run's scores.

Identity: the sha256 of the sorted content hashes of the used clips. Renaming, moving or
losslessly re-encoding files keeps it; adding, removing or changing any clip (or a different
``min_duration_s`` that changes which clips are used) changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.fileio import atomic_write_text, sha256_file
from harness.audio_checks import SILENT_PEAK
from harness.data.audio import content_sha256, read_mono

__all__ = ["QuarantinedFile", "ReferenceEntry", "ReferenceSet", "ReferenceSetError", "ingest_reference_folder"]

DEFAULT_MIN_DURATION_S = 0.5


class ReferenceSetError(HarnessError, ValueError):
    """A reference set cannot be used; the message names the folder and what to do."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One usable reference clip."""

    path: str  # relative to the set's root, POSIX separators
    file_sha256: str  # of the file's bytes
    audio_sha256: str  # of the decoded mono float32 samples + rate (the embedding cache key)
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


@dataclass(frozen=True)
class QuarantinedFile:
    """A file that is not used, and why."""

    path: str
    reason: str


@dataclass
class ReferenceSet:
    """The manifest and quarantine of one reference folder."""

    root: Path
    entries: list[ReferenceEntry]
    quarantine: list[QuarantinedFile]
    min_duration_s: float
    allow_silent: bool = False
    ignored_hidden: list[str] = field(default_factory=list)

    @property
    def identity(self) -> str:
        """sha256 of the sorted content hashes of the used clips."""
        return hashlib.sha256("\n".join(sorted(e.audio_sha256 for e in self.entries)).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Manifest + quarantine as a JSON-able dict."""
        return {
            "root": str(self.root),
            "identity": self.identity,
            "min_duration_s": self.min_duration_s,
            "allow_silent": self.allow_silent,
            "n_entries": len(self.entries),
            "n_quarantined": len(self.quarantine),
            "total_duration_s": round(sum(e.duration_s for e in self.entries), 6),
            "entries": [asdict(e) for e in self.entries],
            "quarantine": [asdict(q) for q in self.quarantine],
            "ignored_hidden": self.ignored_hidden,
        }

    def write(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``to_json()`` (plus ``extra`` sections, e.g. a pairing) to ``path`` atomically; returns the path."""
        return atomic_write_text(path, json.dumps({**self.to_json(), **(extra or {})}, indent=2) + "\n")


def _check(samples: np.ndarray, rate: int, min_duration_s: float, allow_silent: bool) -> str | None:
    if samples.size == 0:
        return "empty: no samples"
    finite = np.isfinite(samples)
    if not finite.all():
        return f"non-finite: {int(samples.size - np.count_nonzero(finite))} NaN/inf sample(s)"
    duration = samples.size / rate
    if duration < min_duration_s:
        return f"too short: {duration:.3f} s < min {min_duration_s:g} s"
    peak = float(np.max(np.abs(samples)))
    if not allow_silent and peak < SILENT_PEAK:
        return f"silent: peak {peak:.3g} < {SILENT_PEAK:g}"
    return None


def ingest_reference_folder(folder: str | Path, *, min_duration_s: float = DEFAULT_MIN_DURATION_S,
                            allow_silent: bool = False) -> ReferenceSet:
    """Decode and check every file under ``folder``; see the module docstring."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ReferenceSetError(f"reference folder {folder} does not exist or is not a folder")
    if min_duration_s < 0:
        raise ReferenceSetError(f"min duration must be >= 0, got {min_duration_s}")
    entries, quarantine, hidden = [], [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        for d in [d for d in dirnames if d.startswith(".")]:
            hidden.append((rel_dir / d).as_posix() + "/")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if name.startswith("."):
                hidden.append(rel)
                continue
            path = Path(dirpath) / name
            try:
                samples, rate, channels = read_mono(path)
            except Exception as err:  # noqa: BLE001 - every failure is reported in the quarantine
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                quarantine.append(QuarantinedFile(rel, f"unreadable: {type(err).__name__}: {first}"))
                continue
            reason = _check(samples, rate, min_duration_s, allow_silent)
            if reason:
                quarantine.append(QuarantinedFile(rel, reason))
                continue
            entries.append(ReferenceEntry(
                path=rel, file_sha256=sha256_file(path), audio_sha256=content_sha256(samples, rate),
                duration_s=samples.size / rate, sample_rate=rate, channels=channels, frames=int(samples.size),
            ))
    entries.sort(key=lambda e: e.path)
    quarantine.sort(key=lambda q: q.path)
    return ReferenceSet(root, entries, quarantine, float(min_duration_s), allow_silent, sorted(hidden))
