"""Merge run folders (typically the shards of one sweep) into one run folder.

``audioldm2-harness merge OUT SHARD_DIR [SHARD_DIR ...]`` copies cells, samples, measurements
and meta into OUT and places the audio files at the same relative paths (hard links where the
file system allows, else copies; ``--copy`` always copies). Shards are only read (read-only
SQLite connections, one snapshot each), so merging a shard that is still running is safe: it
takes what that shard has committed so far.

* Scores (the metrics table) are not merged; score the merged folder.
* Conflicts are errors, exit 2, and nothing is merged: the same sample key with different
  audio (see below), the same prompt id with a different text, or folders recorded in different
  environments (versions, git commit, device; ``--allow-env-mismatch`` merges anyway and records
  every folder's environment under the ``merged_from`` meta key).
* The same key with a different audio hash is decoded from both folders: samples that agree
  within ``BATCH_TOLERANCE`` are the same sample made in a different batch (see there), not a
  conflict; the copy already chosen (OUT's, else the first folder's) is kept and a warning says so.
* The same key stored as ``ok`` in one folder and ``failed`` in another keeps the ``ok`` row;
  identical rows are skipped; what OUT already holds wins over the folders, so merging twice
  gives the same result (idempotent) and merging shards one by one as they finish works.
* Crash safety as in ``store.py``: every file is verified against its recorded hash before
  anything is written, files are placed (temporary name, then rename) before the rows, and all
  rows are committed in one transaction. A crash before that commit leaves at most unreferenced
  files, which the next merge reuses or replaces.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile

from harness.environment import environment_differences, environment_key
from harness.fileio import replace, sha256_file
from harness.store import (DATABASE, SCHEMA_VERSION, RunStore, StoreError, database_error, file_problem,
                           inside_run, writer_lock)

SHOW = 5  # conflicts named in an error message; the rest are counted
# Scores (the metrics table) are not merged: a shard's FAD covers only its part of a cell, so
# score the merged folder instead.
MERGED_TABLES = ("meta", "cells", "samples", "measurements")
# A sample does not depend on its batch neighbours in exact arithmetic, but batched float32
# kernels round differently: the same sample made in batches of different make-up differed by
# up to 5.6e-7 (issue 17). 1e-5 (about -100 dBFS) leaves 18x headroom and stays far below any
# real difference (another seed or setting changes samples by ~1e-1).
BATCH_TOLERANCE = 1e-5


class MergeError(StoreError):
    """Folders that cannot be merged; nothing was written. The message names what conflicts."""


@dataclass
class MergeResult:
    """What a merge did."""

    out: Path
    sources: list[Path]
    cells_added: int = 0
    samples_added: int = 0
    samples_replaced: int = 0  # a failed row replaced by an ok one
    samples_unchanged: int = 0
    measurements_added: int = 0
    files_linked: int = 0
    files_copied: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Folder:
    root: Path
    meta: dict[str, Any]
    cells: dict[str, dict[str, Any]]
    samples: dict[tuple[str, str, int], dict[str, Any]]
    measurements: dict[tuple, dict[str, Any]]
    unmerged: dict[str, int] = field(default_factory=dict)  # other tables' row counts (e.g. metrics)


def _read_folder(root: Path) -> _Folder:
    path = root / "run.sqlite"
    if not path.is_file():
        raise MergeError(f"{root} is not a run folder (no run.sqlite)")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as err:
        raise MergeError(str(database_error(path, err))) from None
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN")  # one consistent snapshot of a folder that may still be written
        meta = {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT key, value FROM meta")}
        version = meta.get("schema_version")
        if version is None or int(version) != SCHEMA_VERSION:
            raise MergeError(f"{root} has store schema {version}, this harness reads {SCHEMA_VERSION}")
        cells = {r["id"]: dict(r) for r in db.execute("SELECT * FROM cells")}
        samples = {(r["cell_id"], r["prompt_id"], r["seed"]): dict(r)
                   for r in db.execute("SELECT * FROM samples ORDER BY cell_id, prompt_id, seed")}
        measurements = {(r["cell_id"], r["batch_size"], r["kind"], r["stage"], r["metric"]): dict(r)
                        for r in db.execute("SELECT * FROM measurements")}
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        unmerged = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables
                    if t not in MERGED_TABLES}
        db.rollback()
    except sqlite3.Error as err:
        raise MergeError(str(database_error(path, err))) from None
    finally:
        db.close()
    return _Folder(root, meta, cells, samples, measurements, {t: n for t, n in unmerged.items() if n})


def merge_environment_key(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merged samples must come from one environment: every recorded version, the git commit and
    the device kind (CPU models may differ: shards of one sweep often run on mixed machines)."""
    return environment_key(env, packages=None, commit=True, cpu_model=False) if env else None


def _describe_env_difference(named: list[tuple[str, dict[str, Any]]]) -> str:
    first_name, first = named[0]
    return "; ".join(f"{first_name} vs {name}: {', '.join(environment_differences(first, key))}"
                     for name, key in named[1:] if key != first)


def _key_text(key: tuple) -> str:
    return "/".join(str(k) for k in key)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOW])
    return shown + (f" and {len(items) - SHOW} more" if len(items) > SHOW else "")


def _source_file(root: Path, row: dict[str, Any]) -> Path:
    try:
        return inside_run(root, row["audio_path"])
    except StoreError as err:
        raise MergeError(f"{err}; nothing was merged") from None


def _audio_difference(a: Path, a_sha: str, b: Path, b_sha: str) -> float | None:
    """Largest absolute sample difference of two stored WAVs; None when either file is missing or
    changed, or their rates or lengths differ (then they are simply different audio)."""
    if file_problem(a, a_sha) or file_problem(b, b_sha):
        return None
    (rate_a, x_a), (rate_b, x_b) = wavfile.read(a), wavfile.read(b)
    if rate_a != rate_b or x_a.shape != x_b.shape:
        return None
    return float(np.max(np.abs(x_a.astype(np.float64) - x_b), initial=0.0))


def merge_runs(out: str | Path, sources: list[str | Path], *, allow_env_mismatch: bool = False,
               copy: bool = False) -> MergeResult:
    """Merge ``sources`` into the run folder ``out`` (created if needed); see the module docstring."""

    out = Path(out)
    roots: list[Path] = []
    for src in map(Path, sources):
        if src.resolve() == out.resolve():
            raise MergeError(f"the output folder {out} cannot also be one of the folders to merge")
        if src.resolve() not in [r.resolve() for r in roots]:
            roots.append(src)
    if not roots:
        raise MergeError("nothing to merge: give at least one run folder")
    folders = [_read_folder(r) for r in roots]
    created = not out.exists()
    try:
        with writer_lock(out):
            existing = _read_folder(out) if (out / "run.sqlite").exists() else None
            result, rows = _plan(out, existing, folders, allow_env_mismatch)
            with closing(RunStore(out)) as store:
                _place_files(out, rows["samples_from"], copy, result)
                store.import_rows(rows["cells"], rows["samples"], rows["measurements"], rows["meta"])
    except MergeError:
        if created:
            _remove_new_folder(out)
        raise
    return result


def _remove_new_folder(out: Path) -> None:
    """Remove an output folder this merge created, when it refused to merge (nothing in it)."""
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}.creating", "writer.pid", "writer.lock"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "audio", ignore_errors=True)
    try:
        out.rmdir()
    except OSError:
        pass


def _plan(out: Path, existing: _Folder | None, folders: list[_Folder], allow_env_mismatch: bool):
    """Decide every row; raise MergeError on any conflict before anything is written."""
    result = MergeResult(out, [f.root for f in folders])
    everyone = ([existing] if existing and existing.samples else []) + folders

    # environments
    named = [(str(f.root), merge_environment_key(f.meta.get("environment"))) for f in everyone]
    named = [(n, s) for n, s in named if s is not None]
    mismatch = any(s != named[0][1] for _, s in named[1:])
    if mismatch and not allow_env_mismatch:
        raise MergeError(
            "the folders were recorded in different environments (" + _describe_env_difference(named)
            + "); their samples may not be comparable. Pass --allow-env-mismatch to merge anyway; nothing was merged"
        )
    if mismatch:
        result.warnings.append("merged folders from different environments: " + _describe_env_difference(named))

    # samples: existing rows first (they win), then the folders in the order given
    chosen: dict[tuple, tuple[dict[str, Any], _Folder | None]] = {}
    if existing:
        chosen = {k: (row, None) for k, row in existing.samples.items()}
    prompt_text: dict[str, tuple[tuple, str]] = {}
    for key, (row, _) in chosen.items():
        prompt_text.setdefault(row["prompt_id"], ((row["prompt"], row["transcription"]), str(out)))
    hash_conflicts, prompt_conflicts, rebatched = [], [], []
    for folder in folders:
        for key, row in folder.samples.items():
            text, first_where = prompt_text.setdefault(row["prompt_id"],
                                                       ((row["prompt"], row["transcription"]), str(folder.root)))
            if text != (row["prompt"], row["transcription"]):
                prompt_conflicts.append(f"{row['prompt_id']} ({first_where} vs {folder.root})")
            if key not in chosen:
                chosen[key] = (row, folder)
                continue
            prev, prev_folder = chosen[key]
            if prev["status"] == "ok" and row["status"] == "ok":
                if prev["audio_sha256"] != row["audio_sha256"]:
                    where = prev_folder.root if prev_folder else out
                    diff = _audio_difference(_source_file(where, prev), prev["audio_sha256"],
                                             _source_file(folder.root, row), row["audio_sha256"])
                    if diff is not None and diff <= BATCH_TOLERANCE:
                        rebatched.append((f"{_key_text(key)} (kept {where}, not {folder.root})", diff))
                    else:
                        hash_conflicts.append(f"{_key_text(key)} ({where} vs {folder.root})")
            elif prev["status"] == "failed" and row["status"] == "ok":
                chosen[key] = (row, folder)
    if hash_conflicts:
        raise MergeError(
            f"{len(hash_conflicts)} samples have different audio in different folders (same cell/prompt/seed, "
            f"different sha256): {_listing(hash_conflicts)}; nothing was merged"
        )
    if rebatched:
        result.warnings.append(
            f"{len(rebatched)} samples differ in their bits but agree within {BATCH_TOLERANCE:g} (largest difference "
            f"{max(d for _, d in rebatched):.2g}): the same sample made in a different batch, not a conflict; "
            f"kept the copy already chosen: {_listing([k for k, _ in rebatched])}")
    if prompt_conflicts:
        unique = list(dict.fromkeys(prompt_conflicts))
        raise MergeError(f"{len(unique)} prompt ids have different texts in different folders: "
                         f"{_listing(unique)}; nothing was merged")

    # which sample rows to write, and where their audio comes from
    samples, samples_from = [], []
    for key in sorted(chosen):
        row, folder = chosen[key]
        if folder is None:
            result.samples_unchanged += 1
            continue
        before = existing.samples.get(key) if existing else None
        if before is None:
            result.samples_added += 1
        else:
            result.samples_replaced += 1
        samples.append(row)
        if row["status"] == "ok" and row["audio_path"]:
            samples_from.append((folder, row))
    _verify_sources(samples_from)

    # cells every written sample needs, and any other cells the folders record
    have = set(existing.cells) if existing else set()
    cells = {}
    for folder in folders:
        for cid, row in folder.cells.items():
            if cid not in have and cid not in cells:
                cells[cid] = row
    missing = sorted({r["cell_id"] for r in samples} - have - set(cells))
    if missing:
        raise MergeError(f"samples refer to cells no folder records: {_listing(missing)}; nothing was merged")
    result.cells_added = len(cells)

    # measurements: OUT's and then the first folder's win; differing values are reported
    measurements, differing = {}, []
    held = dict(existing.measurements) if existing else {}
    for folder in folders:
        for key, row in folder.measurements.items():
            prev = held.get(key) or measurements.get(key)
            if prev is None:
                measurements[key] = row
            elif prev["value"] != row["value"]:
                differing.append(_key_text(key))
    if differing:
        result.warnings.append(f"{len(differing)} measurements differ between folders; kept the first "
                               f"folder's values: {_listing(differing)}")
    result.measurements_added = len(measurements)

    skipped = {}
    for folder in folders:
        for table, n in folder.unmerged.items():
            skipped[table] = skipped.get(table, 0) + n
    if skipped:
        result.warnings.append("not merged: " + ", ".join(f"{n} {t} rows" for t, n in sorted(skipped.items()))
                               + " (a shard's scores cover only its part of a cell; score the merged folder)")
    meta = _merged_meta(existing, folders, result)
    return result, {"cells": list(cells.values()), "samples": samples, "samples_from": samples_from,
                    "measurements": list(measurements.values()), "meta": meta}


def _verify_sources(samples_from: list[tuple[_Folder, dict[str, Any]]]) -> None:
    bad = []
    from tqdm.auto import tqdm

    # Hashing and linking thousands of files takes a while: a bar on terminals, for large merges.
    for folder, row in tqdm(samples_from, desc="merging audio", unit="file", leave=False,
                            disable=None if len(samples_from) >= 200 else True):
        problem = file_problem(_source_file(folder.root, row), row["audio_sha256"])
        if problem:
            bad.append(f"{_key_text((row['cell_id'], row['prompt_id'], row['seed']))} ({problem})")
    if bad:
        raise MergeError(f"{len(bad)} audio files cannot be merged: {_listing(bad)}; nothing was merged")


def _merged_meta(existing: _Folder | None, folders: list[_Folder], result: MergeResult) -> dict[str, Any]:
    special = {"schema_version", "environment", "shard", "merged_from"}
    held = dict(existing.meta) if existing else {}
    meta: dict[str, Any] = {}
    differing = []
    for folder in folders:
        for key, value in folder.meta.items():
            if key in special:
                continue
            current = held.get(key, meta.get(key))
            if key not in held and key not in meta:
                meta[key] = value
            elif current != value:
                differing.append(key)
    if differing:
        result.warnings.append(f"meta values differ between folders, kept the first: "
                               f"{_listing(sorted(set(differing)))}")
    if "environment" not in held:
        env = next((f.meta["environment"] for f in folders if f.meta.get("environment")), None)
        if env is not None:
            meta["environment"] = env
    merged_from = dict(held.get("merged_from") or {})
    for folder in folders:
        shard = folder.meta.get("shard") or {}
        merged_from[str(folder.root.resolve())] = {
            "shard": shard.get("shard"), "plan": shard.get("plan"), "samples": len(folder.samples),
            "environment": merge_environment_key(folder.meta.get("environment")),
        }
    meta["merged_from"] = merged_from
    result.warnings.extend(_coverage_warnings(merged_from))
    return meta


def _coverage_warnings(merged_from: dict[str, dict[str, Any]]) -> list[str]:
    """Missing shards (all shards of one plan share its fingerprint and N)."""
    by_plan: dict[tuple, set[int]] = {}
    for info in merged_from.values():
        if info.get("shard"):
            index, count = map(int, info["shard"].split("/"))
            by_plan.setdefault((info.get("plan"), count), set()).add(index)
    warnings = []
    if len(by_plan) > 1:
        warnings.append("the shards come from different plans (sweep, batch size, versions or N differ); "
                        "the merged run may have gaps")
    for (_, count), present in by_plan.items():
        missing = sorted(set(range(1, count + 1)) - present)
        if missing:
            warnings.append(f"shards {', '.join(f'{i}/{count}' for i in missing)} not merged yet: the run is incomplete")
    return warnings


def _place_files(out: Path, samples_from: list[tuple[_Folder, dict[str, Any]]], copy: bool,
                 result: MergeResult) -> None:
    """Put every new sample's audio at its relative path in ``out`` (atomically), before any row."""
    for folder, row in samples_from:
        src = _source_file(folder.root, row)
        dst = out / src.relative_to(folder.root)
        if dst.is_file() and sha256_file(dst) == row["audio_sha256"]:
            continue  # already there (an earlier, interrupted merge, or the same file)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.unlink(missing_ok=True)
        linked = False
        if not copy:
            try:
                os.link(src, tmp)
                linked = True
            except OSError:
                linked = False
        if not linked:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            if sha256_file(tmp) != row["audio_sha256"]:
                tmp.unlink(missing_ok=True)
                raise MergeError(f"copy of {src} does not match its recorded sha256; nothing was merged")
        replace(tmp, dst)
        result.files_linked += linked
        result.files_copied += not linked
