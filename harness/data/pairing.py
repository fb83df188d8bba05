"""Paired reference sets: which reference clip belongs to which prompt.

Metrics such as KL divergence compare each generated clip with the reference clip of its own
caption (audioldm_eval pairs files by equal names). A reference folder (``ReferenceSet``) is
paired with the prompt ids of a run by one rule (``--pair-by``):

* ``stem``: a file pairs with a prompt when its stem (name without extension) equals the
  prompt id, or the id without its prompt set's prefix: ``audiocaps-<youtube_id>`` pairs with
  ``<youtube_id>.wav`` (also ``Y<youtube_id>.wav``, AudioSet's naming), ``musiccaps-<ytid>``
  with ``<ytid>.wav``;
* ``audiocaps:CSV``: as ``stem``, and also by AudioCaps ``audiocap_id``: a file named
  ``<audiocap_id>.wav`` pairs with the prompt of that caption's ``youtube_id`` (read from the
  AudioCaps CSV, e.g. test.csv);
* ``manifest:CSV``: a CSV with columns ``prompt_id,path`` (path relative to the reference
  folder, or absolute inside it).

Nothing is dropped silently: prompts without a reference clip (their samples are left out of
the paired metrics) and reference files paired with no prompt are counted and listed, and
written into the reference report beside the quarantine. A prompt matched by two files is an
error naming both. Unpaired metrics (FAD, KAD) still use every usable file of the folder.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness.data.references import ReferenceSet, ReferenceSetError

__all__ = ["PAIR_BY_FORMS", "Pairing", "pair_reference"]

PAIR_BY_FORMS = "stem, audiocaps:CSV or manifest:CSV"
_SET_PREFIXES = ("audiocaps-", "musiccaps-")


@dataclass
class Pairing:
    """The result of pairing a reference set with prompt ids."""

    rule: str
    matched: dict[str, int]  # prompt id -> index into the reference set's entries
    unmatched_prompts: list[str]
    unmatched_files: list[str]
    notes: list[str] = field(default_factory=list)

    def identity(self, reference: ReferenceSet) -> str:
        """sha256 over the (prompt id, clip content hash) pairs: what paired metrics compared against."""
        lines = sorted(f"{p}\t{reference.entries[i].audio_sha256}" for p, i in self.matched.items())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def to_json(self, reference: ReferenceSet) -> dict[str, Any]:
        """The pairing section of the reference report."""
        return {"rule": self.rule, "n_matched": len(self.matched),
                "matched": {p: reference.entries[i].path for p, i in sorted(self.matched.items())},
                "n_unmatched_prompts": len(self.unmatched_prompts), "unmatched_prompts": self.unmatched_prompts,
                "n_unmatched_files": len(self.unmatched_files), "unmatched_files": self.unmatched_files,
                "notes": self.notes}


def _prompt_keys(prompt_id: str) -> list[str]:
    keys = [prompt_id]
    for prefix in _SET_PREFIXES:
        if prompt_id.startswith(prefix):
            bare = prompt_id[len(prefix):]
            keys += [bare, f"Y{bare}"] if prefix == "audiocaps-" else [bare]
    return keys


def _audiocaps_ids(path: Path) -> dict[str, str]:
    """audiocap_id -> prompt id (audiocaps-<youtube_id>) from an AudioCaps CSV."""
    rows = _read_csv(path, ("audiocap_id", "youtube_id"))
    return {r["audiocap_id"].strip(): f"audiocaps-{r['youtube_id'].strip()}" for r in rows}


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ReferenceSetError(f"pairing file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ReferenceSetError(f"{path} lacks column(s) {', '.join(missing)}; it needs {', '.join(required)}")
        return list(reader)


def pair_reference(reference: ReferenceSet, prompt_ids: Sequence[str], rule: str) -> Pairing:
    """Pair ``reference``'s usable clips with ``prompt_ids`` by ``rule``; see the module docstring."""
    wanted = sorted(set(prompt_ids))
    if rule.startswith("manifest:"):
        return _by_manifest(reference, wanted, Path(rule[len("manifest:"):]).expanduser(), rule)
    if rule != "stem" and not rule.startswith("audiocaps:"):
        raise ReferenceSetError(f"unknown pairing rule {rule!r}; valid: {PAIR_BY_FORMS}")
    by_key: dict[str, str] = {}
    for p in wanted:
        for k in _prompt_keys(p):
            by_key.setdefault(k, p)
    if rule.startswith("audiocaps:"):
        for cap_id, p in _audiocaps_ids(Path(rule[len("audiocaps:"):]).expanduser()).items():
            if p in wanted:
                by_key.setdefault(cap_id, p)
    matched: dict[str, int] = {}
    unmatched_files = []
    for i, e in enumerate(reference.entries):
        prompt = by_key.get(PurePosixPath(e.path).stem)
        if prompt is None:
            unmatched_files.append(e.path)
        elif prompt in matched:
            other = reference.entries[matched[prompt]].path
            raise ReferenceSetError(f"prompt {prompt} matches two reference files, {other} and {e.path}; "
                                    "keep one, or pair with --pair-by manifest:CSV")
        else:
            matched[prompt] = i
    return Pairing(rule, matched, [p for p in wanted if p not in matched], unmatched_files)


def _by_manifest(reference: ReferenceSet, wanted: list[str], path: Path, rule: str) -> Pairing:
    index = {e.path: i for i, e in enumerate(reference.entries)}
    matched: dict[str, int] = {}
    notes = []
    for row in _read_csv(path, ("prompt_id", "path")):
        p, f = row["prompt_id"].strip(), row["path"].strip()
        rel = Path(f)
        if rel.is_absolute():
            try:
                rel = rel.resolve().relative_to(reference.root)
            except ValueError:
                raise ReferenceSetError(f"{path}: {f} is not inside the reference folder {reference.root}") from None
        key = rel.as_posix()
        if key not in index:
            notes.append(f"{path}: {f} is not a usable file of the reference folder (missing or quarantined)")
            continue
        if p in matched and matched[p] != index[key]:
            raise ReferenceSetError(f"{path}: prompt {p} is paired with two files; give one row per prompt")
        if p in wanted:
            matched[p] = index[key]
    used = set(matched.values())
    unmatched_files = [e.path for i, e in enumerate(reference.entries) if i not in used]
    return Pairing(rule, matched, [p for p in wanted if p not in matched], unmatched_files, notes)
