"""Prompt sets: the text (and, for speech checkpoints, the words to speak) that a run generates from.

A spec passed to ``load_prompt_set`` is one of:

* a built-in name, e.g. ``smoke``: ``<datasets>/prompts/<name>.jsonl``, where ``<datasets>`` is
  ``$AUDIOLDM2_HARNESS_DATASETS`` if set, else the ``datasets/`` folder beside the package;
* ``audiocaps:PATH``: an AudioCaps CSV (audiocap_id,youtube_id,start_time,caption);
* ``musiccaps:PATH`` or ``musiccaps-eval:PATH``: the MusicCaps CSV (the ``-eval`` form keeps
  only rows with is_audioset_eval == True);
* ``ljspeech:PATH`` (or ``ljspeech:PATH?voice=DESCRIPTION``): an LJSpeech ``metadata.csv``
  (``id|text|normalized text``, no header): the normalized text is the transcription and the
  voice description (default ``LJSPEECH_VOICE``) the prompt of every row;
* a path ending ``.jsonl`` (objects with id, text, optional transcription and source) or
  ``.csv`` (columns id,text and optional transcription,source).

All loaders validate the whole file before ``limit`` is applied, and report every problem as a
one-line ``PromptSetError``; nothing is dropped silently. Text is whitespace-normalised (runs of
spaces, tabs and newlines become one space) because MusicCaps captions contain stray CRLFs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

import harness

from harness.errors import HarnessError

DATASETS_ENV = "AUDIOLDM2_HARNESS_DATASETS"
_PROMPT_FIELDS = ("id", "text", "transcription", "source")
_SPEC_FORMS = "audiocaps:PATH, musiccaps:PATH, musiccaps-eval:PATH, ljspeech:PATH[?voice=TEXT], or a .jsonl/.csv path"
# LJSpeech is one female speaker reading non-fiction aloud; a prompt in the style of the speech
# checkpoints' examples ("A female reporter is speaking").
LJSPEECH_VOICE = "A female speaker reads aloud clearly in a quiet room"


class PromptSetError(HarnessError, ValueError):
    """A prompt set could not be loaded; the message names the problem and the fix."""


def _normalise(value: str | None) -> str | None:
    """Collapse whitespace runs to single spaces; None stays None."""
    return None if value is None else " ".join(value.split())


class Prompt(BaseModel):
    """One prompt: caption text, optional words to speak, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    transcription: str | None = None
    source: str | None = None

    @field_validator("id", "text", "transcription", "source", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        """Normalise whitespace so equal captions fingerprint equally."""
        return _normalise(value) if isinstance(value, str) else value

    @field_validator("id", "text")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        """Reject ids and captions that are empty after stripping."""
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("transcription", "source")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        """Treat a blank optional field (an empty CSV cell) as absent."""
        return value or None


def _set_problem(name: str, prompts: tuple[Prompt, ...]) -> str | None:
    """Describe why these prompts cannot form a set, or None if they can."""
    if not prompts:
        return f"prompt set '{name}' is empty; give a file with at least one prompt"
    dupes = sorted(k for k, n in Counter(p.id for p in prompts).items() if n > 1)
    if dupes:
        shown = ", ".join(dupes[:10]) + (f" (+{len(dupes) - 10} more)" if len(dupes) > 10 else "")
        return f"prompt set '{name}' has duplicate ids: {shown}; make every id unique"
    return None


class PromptSet(BaseModel):
    """A named, ordered, non-empty tuple of prompts with unique ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    prompts: tuple[Prompt, ...]

    @model_validator(mode="after")
    def _valid(self) -> PromptSet:
        """Enforce non-empty and unique ids however the set was built."""
        problem = _set_problem(self.name, self.prompts)
        if problem:
            raise ValueError(problem)
        return self

    def __len__(self) -> int:
        """Number of prompts."""
        return len(self.prompts)

    def with_transcription(self) -> PromptSet:
        """Return only the prompts that carry a transcription (for speech checkpoints)."""
        kept = tuple(p for p in self.prompts if p.transcription)
        if not kept:
            raise PromptSetError(
                f"prompt set '{self.name}' has no prompts with a transcription; "
                "a speech checkpoint needs a set with speech prompts (e.g. 'smoke')"
            )
        return PromptSet(name=f"{self.name}[transcription]", prompts=kept)

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of the prompts (name excluded: content is identity)."""
        payload = [p.model_dump() for p in self.prompts]
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- building and checking


def _prompt(where: str, **fields: str | None) -> Prompt:
    """Build a Prompt, checking id and caption first so a failure is a one-line PromptSetError."""
    ident = _normalise(fields.get("id"))
    if not ident:
        raise PromptSetError(f"{where}: empty id; give every prompt a non-empty id")
    if not _normalise(fields.get("text")):
        raise PromptSetError(f"{where} (id '{ident}'): empty caption; fill in its text or remove the row")
    return Prompt(**fields)


def _make_set(name: str, prompts: list[Prompt], limit: int | None) -> PromptSet:
    """Validate the full list, then cut it to ``limit``."""
    problem = _set_problem(name, tuple(prompts))
    if problem:
        raise PromptSetError(problem)
    if limit is not None:
        if limit < 1:
            raise PromptSetError(f"limit must be at least 1, got {limit}; pass None for all prompts")
        prompts = prompts[:limit]
    return PromptSet(name=name, prompts=tuple(prompts))


def _existing_file(path: Path) -> Path:
    """Return ``path`` if it is a file, else raise a PromptSetError that says so."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise PromptSetError(f"prompt file {what}: {path}; check the path in the prompt-set spec")
    return path


def _read_csv(path: Path, required: tuple[str, ...], allowed: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a CSV as strings (ids keep leading zeros and dashes) and check its columns."""
    try:
        # keep_default_na=False: a caption like "NA" or an empty cell must stay a string.
        frame = pd.read_csv(_existing_file(path), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PromptSetError(f"cannot parse CSV {path}: {detail}; check it is UTF-8 CSV with a header") from err
    found = list(frame.columns)
    missing = [c for c in required if c not in found]
    if missing:
        raise PromptSetError(
            f"{path} is missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, found)) or 'none'}); "
            f"check the file matches the spec's format, which needs {', '.join(required)}"
        )
    unknown = [c for c in found if allowed is not None and c not in allowed]
    if unknown:
        raise PromptSetError(
            f"{path} has unknown column(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    return frame


def _row_where(path: Path, index: int) -> str:
    """Name a CSV data row (1-based, header not counted) for error messages."""
    return f"{path} data row {index + 1}"


# ---------------------------------------------------------------- formats


def _load_audiocaps(path: Path) -> tuple[str, list[Prompt]]:
    """AudioCaps: one prompt per clip, the caption with the smallest audiocap_id.

    Prompts are ordered by that smallest audiocap_id, ascending and numeric. Ids are compared as
    integers because the file mixes widths (e.g. 3 and 103549), so string order would be wrong.
    """
    frame = _read_csv(path, ("audiocap_id", "youtube_id", "caption"))
    raw_ids = frame["audiocap_id"].str.strip()
    for index in frame.index[~raw_ids.str.fullmatch(r"\d+")]:
        raise PromptSetError(
            f"{_row_where(path, index)}: audiocap_id '{frame.at[index, 'audiocap_id']}' is not a "
            "whole number; AudioCaps ids must be non-negative integers"
        )
    numeric = raw_ids.astype("int64")
    dupes = sorted(set(numeric[numeric.duplicated()]))
    if dupes:
        shown = ", ".join(map(str, dupes[:10]))
        raise PromptSetError(f"{path} repeats audiocap_id(s) {shown}; each caption row needs its own id")
    # Every row is checked, not just the chosen one, so a damaged file is never half-used.
    rows = [
        _prompt(
            _row_where(path, index),
            id=f"audiocaps-{row.youtube_id}" if row.youtube_id.strip() else "",
            text=row.caption,
            source=f"audiocaps:{audiocap_id}",
        )
        for index, audiocap_id, row in zip(frame.index, numeric, frame.itertuples(index=False))
    ]
    order = numeric.sort_values(kind="stable").index
    chosen: dict[str, Prompt] = {}
    for index in order:
        chosen.setdefault(rows[index].id, rows[index])
    return f"audiocaps:{path.name}", list(chosen.values())


def _musiccaps_loader(eval_only: bool) -> Callable[[Path], tuple[str, list[Prompt]]]:
    """Make a MusicCaps loader; ``eval_only`` keeps rows with is_audioset_eval == True."""

    def load(path: Path) -> tuple[str, list[Prompt]]:
        """MusicCaps: one prompt per row, in file order, id musiccaps-<ytid>."""
        required = ("ytid", "caption") + (("is_audioset_eval",) if eval_only else ())
        frame = _read_csv(path, required)
        keep = pd.Series(True, index=frame.index)
        if eval_only:
            flags = frame["is_audioset_eval"].str.strip().str.lower()
            for index in frame.index[~flags.isin(["true", "false"])]:
                raise PromptSetError(
                    f"{_row_where(path, index)}: is_audioset_eval is "
                    f"'{frame.at[index, 'is_audioset_eval']}'; expected True or False"
                )
            keep = flags == "true"
        prompts = [
            _prompt(
                _row_where(path, index),
                id=f"musiccaps-{row.ytid}" if row.ytid.strip() else "",
                text=row.caption,
                source=f"musiccaps:{row.ytid}",
            )
            for index, row in zip(frame.index, frame.itertuples(index=False))
        ]
        prefix = "musiccaps-eval" if eval_only else "musiccaps"
        return f"{prefix}:{path.name}", [p for p, k in zip(prompts, keep) if k]

    return load


def _load_csv(path: Path) -> tuple[str, list[Prompt]]:
    """Generic CSV: columns id,text and optional transcription,source; file order."""
    frame = _read_csv(path, ("id", "text"), _PROMPT_FIELDS)
    prompts = [
        _prompt(_row_where(path, index), **row.to_dict()) for index, row in frame.iterrows()
    ]
    return path.stem, prompts


def _jsonl_prompt(path: Path, number: int, line: str) -> Prompt:
    """Parse one JSONL line into a Prompt; errors name the line number."""
    where = f"{path} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptSetError(f"{where}: invalid JSON ({err.msg}); write one JSON object per line") from err
    if not isinstance(record, dict):
        raise PromptSetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(_PROMPT_FIELDS))
    if unknown:
        raise PromptSetError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_PROMPT_FIELDS)}")
    for key, value in record.items():
        if value is not None and not isinstance(value, str):
            raise PromptSetError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return _prompt(where, **record)


def _load_jsonl(path: Path) -> tuple[str, list[Prompt]]:
    """JSONL: one object per line (blank lines allowed); file order."""
    try:
        lines = _existing_file(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise PromptSetError(f"cannot read {path}: not UTF-8 text; re-save it as UTF-8") from err
    prompts = [_jsonl_prompt(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    return path.stem, prompts


def _load_ljspeech(path: Path, voice: str = LJSPEECH_VOICE) -> tuple[str, list[Prompt]]:
    """LJSpeech metadata.csv: ``id|text|normalized text`` per line; file order, id ljspeech-<id>."""
    voice = _normalise(voice)
    if not voice:
        raise PromptSetError(f"ljspeech:{path}: empty voice description; write ?voice=TEXT or leave it out")
    try:
        # Not pandas: the text holds unbalanced quotes, which a CSV reader would treat as quoting.
        lines = _existing_file(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise PromptSetError(f"cannot read {path}: not UTF-8 text; re-save it as UTF-8") from err
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        where = f"{path} line {number}"
        if len(fields) != 3:
            raise PromptSetError(f"{where}: {len(fields)} '|'-separated fields, expected 3 (id|text|normalized text)")
        ident, _, normalized = fields
        if not _normalise(normalized):
            raise PromptSetError(f"{where} (id '{ident.strip()}'): empty normalized text; fill it in or remove the line")
        prompts.append(_prompt(where, id=f"ljspeech-{ident.strip()}" if ident.strip() else "", text=voice,
                               transcription=normalized, source=f"ljspeech:{ident.strip()}"))
    return f"ljspeech:{path.parent.name or path.name}", prompts


def _ljspeech_spec(rest: str) -> tuple[Callable[[Path], tuple[str, list[Prompt]]], str]:
    """Split ``PATH?voice=TEXT`` into a loader bound to the voice and the path."""
    path, sep, query = rest.partition("?")
    if not sep:
        return _load_ljspeech, path
    key, eq, voice = query.partition("=")
    if key != "voice" or not eq:
        raise PromptSetError(f"ljspeech:{rest}: unknown option {query!r}; the only option is ?voice=TEXT")
    return (lambda p: _load_ljspeech(p, voice)), path


_PREFIXED: dict[str, Callable[[Path], tuple[str, list[Prompt]]]] = {
    "audiocaps": _load_audiocaps,
    "musiccaps": _musiccaps_loader(eval_only=False),
    "musiccaps-eval": _musiccaps_loader(eval_only=True),
}
_BY_SUFFIX = {".jsonl": _load_jsonl, ".csv": _load_csv}


# ---------------------------------------------------------------- built-ins and dispatch


def _builtin_dir() -> Path:
    """Folder holding the built-in <name>.jsonl files."""
    override = os.environ.get(DATASETS_ENV)
    root = Path(override) if override else Path(harness.__file__).resolve().parents[1] / "datasets"
    return root / "prompts"


def available_prompt_sets() -> list[str]:
    """Names of the built-in prompt sets, sorted."""
    folder = _builtin_dir()
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def _resolve(spec: str) -> tuple[Callable[[Path], tuple[str, list[Prompt]]], Path]:
    """Pick the loader and file for a spec, or explain what forms are accepted."""
    prefix, sep, rest = spec.partition(":")
    if sep and (prefix in _PREFIXED or prefix == "ljspeech"):
        loader, rest = _ljspeech_spec(rest) if prefix == "ljspeech" else (_PREFIXED[prefix], rest)
        if not rest.strip():
            raise PromptSetError(f"prompt-set spec '{spec}' has no path; write {prefix}:PATH")
        return loader, Path(rest).expanduser()
    suffix = Path(spec).suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix], Path(spec).expanduser()
    names = available_prompt_sets()
    if spec in names:
        return _load_jsonl, _builtin_dir() / f"{spec}.jsonl"
    raise PromptSetError(
        f"unknown prompt set '{spec}'; built-in sets: {', '.join(names) or f'none found in {_builtin_dir()}'}"
        f"; or use {_SPEC_FORMS}"
    )


def load_prompt_set(spec: str, *, limit: int | None = None) -> PromptSet:
    """Load a prompt set from a spec (see module docstring); ``limit`` keeps the first N prompts."""
    loader, path = _resolve(spec.strip())
    name, prompts = loader(path)
    return _make_set(name, prompts, limit)
