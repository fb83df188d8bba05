"""The run folder: ``run.sqlite`` (WAL) for rows, ``audio/`` for lossless waveforms.

Crash safety: audio is written to a temporary name, fsynced and renamed, and only then is its
sample row committed, so a row never points at a partial file and a killed run resumes by
skipping the (cell, prompt, seed) keys that already have a row.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import filelock
import numpy as np
from scipy.io import wavfile

from harness.errors import HarnessError
from harness.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from harness.spec import Cell

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    revision TEXT,
    dtype TEXT NOT NULL,
    device TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    scheduler_type TEXT NOT NULL,
    scheduler_options TEXT NOT NULL,
    steps INTEGER NOT NULL,
    guidance_scale REAL NOT NULL,
    negative_prompt TEXT NOT NULL,
    audio_length_s REAL NOT NULL,
    runtime_options TEXT NOT NULL,
    versions TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    transcription TEXT,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    audio_path TEXT,
    audio_sha256 TEXT,
    sample_rate INTEGER,
    n_samples INTEGER,
    flags TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}',
    batch_size INTEGER,
    conditioning_cached INTEGER,
    created_at REAL NOT NULL,
    PRIMARY KEY (cell_id, prompt_id, seed)
);
CREATE TABLE IF NOT EXISTS measurements (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    batch_size INTEGER NOT NULL,
    kind TEXT NOT NULL,      -- 'latency' (seconds), 'call' (seconds of one timed call), 'memory' (bytes), 'headline'
    stage TEXT NOT NULL,     -- e.g. total, encode, encode/t5, denoise, denoise/step, vae_decode, vocoder
    metric TEXT NOT NULL,    -- median, p90, p99, mean, std, n | call index 0000.. | allocated_peak_bytes, ... | rtf, ...
    value REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (cell_id, batch_size, kind, stage, metric)
);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    metric TEXT NOT NULL,        -- fad, kad, clap_score
    embedder TEXT NOT NULL,      -- registry name, e.g. mel, clap
    embedder_id TEXT NOT NULL,   -- <name>-<hash of weights sha256 + preprocessing>; full identity in details
    reference TEXT NOT NULL,     -- folder:<path>, cell:<id>, or prompts (CLAP score)
    reference_id TEXT NOT NULL,  -- sha256 of the reference's sorted audio content hashes; 'prompts' for CLAP
    value REAL,                  -- NULL when it could not be computed (details.error says why)
    ci_low REAL,
    ci_high REAL,
    confidence REAL,
    n INTEGER NOT NULL,          -- samples scored
    details TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (cell_id, metric, embedder_id, reference_id)
);
"""


class StoreError(HarnessError, RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


@dataclass
class SampleRecord:
    """Everything stored for one generated (or failed) sample."""

    cell_id: str
    prompt_id: str
    prompt: str
    transcription: str | None
    seed: int
    status: str = "ok"
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    conditioning_cached: bool | None = None


def _safe_name(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]
    if safe != text:  # keep distinct ids distinct after sanitising
        safe += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return safe


class RunStore:
    """One run folder; a single writer process at a time."""

    @classmethod
    def read_only(cls, root: str | Path) -> "RunStore":
        """Open for reading without the writer lock: no schema writes, no clean-up of files."""
        store = cls.__new__(cls)
        store.root = Path(root)
        store.db = sqlite3.connect(f"file:{(store.root / 'run.sqlite').resolve()}?mode=ro", uri=True, timeout=30)
        store.db.row_factory = sqlite3.Row
        return store

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "audio").mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / "run.sqlite", timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._check_schema()
        self._remove_partial_files()

    def _check_schema(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(json.loads(row["value"])) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.root} has store schema {row['value']}, this harness writes {SCHEMA_VERSION}; "
                "use a new run folder"
            )

    def _remove_partial_files(self) -> None:
        # Temporary files belong to writes that a crash interrupted; their rows were never committed.
        for tmp in (self.root / "audio").rglob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` in the meta table."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """Read a JSON value from the meta table."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def add_cells(self, cells: Iterable["Cell"], runtime_options: dict[str, Any]) -> None:
        """Insert cells that are not stored yet (a cell's row never changes)."""
        now = time.time()
        rows = [
            (c.id, c.checkpoint, c.revision, c.dtype, c.device, c.scheduler, c.scheduler_type,
             json.dumps(c.scheduler_options, sort_keys=True), c.steps, c.guidance_scale,
             c.negative_prompt, c.audio_length_s,
             json.dumps({**c.runtime.model_dump(), **runtime_options}, sort_keys=True),
             json.dumps(c.versions, sort_keys=True), c.canonical_json(), now)
            for c in cells
        ]
        with self.db:
            # Not INSERT OR IGNORE: that also drops a row breaking NOT NULL (a NaN stored as
            # NULL), leaving samples that point at no cell. Only an existing id is skipped.
            self.db.executemany(
                "INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING", rows
            )

    def done_keys(self, include_failed: bool = True) -> set[tuple[str, str, int]]:
        """(cell_id, prompt_id, seed) of samples already stored."""
        where = "" if include_failed else "WHERE status='ok'"
        rows = self.db.execute(f"SELECT cell_id, prompt_id, seed FROM samples {where}")
        return {(r[0], r[1], r[2]) for r in rows}

    def check_prompts(self, prompts: dict[str, tuple[str, str | None]]) -> None:
        """Refuse to mix samples when a prompt id's text changed since earlier samples."""
        rows = self.db.execute("SELECT DISTINCT prompt_id, prompt, transcription FROM samples")
        changed = [r[0] for r in rows if r[0] in prompts and prompts[r[0]] != (r[1], r[2])]
        if changed:
            raise StoreError(
                f"prompt text changed for ids {', '.join(changed[:5])} since samples were stored in "
                f"{self.root}; give the changed prompts new ids or use a new run folder"
            )

    def audio_path(self, cell_id: str, prompt_id: str, seed: int) -> Path:
        """Relative path of a sample's WAV file inside the run folder."""
        return Path("audio") / cell_id / f"{_safe_name(prompt_id)}__seed{seed}.wav"

    def write_sample(self, record: SampleRecord, audio: np.ndarray | None, sample_rate: int) -> None:
        """Write the audio atomically (if any), then commit the row."""
        rel, digest, n = None, None, None
        if audio is not None:
            rel = self.audio_path(record.cell_id, record.prompt_id, record.seed)
            digest = self._write_audio(self.root / rel, audio, sample_rate)
            n = int(audio.shape[-1])
        with self.db:
            # The cell's sample set changed: scores computed on the old set are stale.
            self.db.execute("DELETE FROM metrics WHERE cell_id=?", (record.cell_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.cell_id, record.prompt_id, record.prompt, record.transcription, record.seed,
                 record.status, record.error, str(rel) if rel else None, digest,
                 sample_rate if rel else None, n, json.dumps(record.flags),
                 json.dumps(record.timings), record.batch_size,
                 None if record.conditioning_cached is None else int(record.conditioning_cached),
                 time.time()),
            )

    @staticmethod
    def _write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> str:
        buffer = io.BytesIO()
        # scipy, not soundfile: libsndfile adds a timestamped PEAK chunk to float WAVs, which
        # would make identical audio hash differently.
        wavfile.write(buffer, sample_rate, np.asarray(audio, dtype=np.float32))
        data = buffer.getvalue()
        atomic_write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    def write_measurements(self, cell_id: str, batch_size: int,
                           rows: Iterable[tuple[str, str, str, float]]) -> None:
        """Replace (kind, stage, metric, value) rows of one cell and batch size."""
        now = time.time()
        with self.db:
            # A rerun replaces the whole set: figures it no longer emits must not linger.
            self.db.execute("DELETE FROM measurements WHERE cell_id=? AND batch_size=?", (cell_id, batch_size))
            self.db.executemany(
                "INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?)",
                [(cell_id, batch_size, kind, stage, metric, float(value), now)
                 for kind, stage, metric, value in rows],
            )

    def measurements(self) -> list[dict[str, Any]]:
        """All measurement rows joined with their cell's settings, as dicts."""
        rows = self.db.execute(
            "SELECT m.*, c.checkpoint, c.scheduler, c.steps, c.dtype, c.audio_length_s, c.runtime_options "
            "FROM measurements m JOIN cells c ON c.id = m.cell_id"
        )
        return [dict(r) for r in rows]

    def samples(self) -> list[dict[str, Any]]:
        """All sample rows joined with their cell's settings, as dicts."""
        rows = self.db.execute(
            "SELECT s.*, c.checkpoint, c.scheduler, c.steps, c.guidance_scale, c.audio_length_s, c.dtype "
            "FROM samples s JOIN cells c ON c.id = s.cell_id ORDER BY s.cell_id, s.prompt_id, s.seed"
        )
        return [dict(r) for r in rows]

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or replace metric rows (keys: the metrics columns but created_at; details a dict
        of finite numbers: NaN/inf would make the column invalid JSON, so they raise)."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r["cell_id"], r["metric"], r["embedder"], r["embedder_id"], r["reference"],
                  r["reference_id"], None if r.get("value") is None else float(r["value"]),
                  None if r.get("ci_low") is None else float(r["ci_low"]),
                  None if r.get("ci_high") is None else float(r["ci_high"]),
                  None if r.get("confidence") is None else float(r["confidence"]), int(r["n"]),
                  json.dumps(r.get("details", {}), sort_keys=True, default=str, allow_nan=False), now)
                 for r in rows],
            )

    def metrics(self, cell_id: str | None = None) -> list[dict[str, Any]]:
        """Metric rows (all, or one cell's) with details parsed, ordered by cell, metric, embedder."""
        where, args = ("WHERE cell_id=?", (cell_id,)) if cell_id else ("", ())
        rows = self.db.execute(
            f"SELECT * FROM metrics {where} ORDER BY cell_id, metric, embedder, reference", args
        )
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    # --- merging run folders (harness/merge.py) -------------------------------------------------

    def table_columns(self, table: str) -> list[str]:
        """Column names of one of the store's tables, in schema order."""
        if table not in ("meta", "cells", "samples", "measurements"):
            raise ValueError(f"unknown table {table!r}")
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def import_rows(self, cells: Iterable[dict[str, Any]], samples: Iterable[dict[str, Any]],
                    measurements: Iterable[dict[str, Any]], meta: dict[str, Any]) -> None:
        """Insert rows read from other run folders, all in ONE transaction.

        Cells are inserted if missing (a cell's row never changes); samples and measurements
        replace rows with the same key (the caller decided which row wins); meta values are
        JSON-encoded. Audio files must already be in place: a row never points at a missing file.
        """
        def insert(table: str, rows: Iterable[dict[str, Any]], verb: str) -> None:
            columns = self.table_columns(table)
            rows = [tuple(r.get(c) for c in columns) for r in rows]
            if rows:
                marks = ",".join("?" * len(columns))
                self.db.executemany(f"{verb} INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)

        with self.db:
            insert("cells", cells, "INSERT OR IGNORE")
            insert("samples", samples, "INSERT OR REPLACE")
            insert("measurements", measurements, "INSERT OR REPLACE")
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in meta.items()])


def acquire_lock(run_dir: Path) -> filelock.BaseFileLock:
    """Take the run folder's writer lock or fail with a message naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(run_dir / "writer.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = (run_dir / "writer.pid").read_text().strip() if (run_dir / "writer.pid").exists() else "?"
        raise StoreError(
            f"another process (pid {holder}) is writing to {run_dir}; wait for it to finish or "
            "use another --run-dir"
        ) from None
    (run_dir / "writer.pid").write_text(str(os.getpid()))
    return lock


@contextmanager
def writer_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's writer lock (see ``acquire_lock``) for the duration."""
    lock = acquire_lock(Path(run_dir))
    try:
        yield
    finally:
        lock.release()


@contextmanager
def open_store(run_dir: str | Path) -> Iterator[RunStore]:
    """The run folder's store (created if needed), held under the writer lock for the duration."""
    with writer_lock(run_dir):
        store = RunStore(run_dir)
        try:
            yield store
        finally:
            store.close()


def require_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a StoreError naming it when it holds no run.sqlite."""
    path = Path(run_dir)
    if not (path / "run.sqlite").is_file():
        raise StoreError(f"{path} is not a run folder (no run.sqlite); pass a folder written by "
                         "`audioldm2-harness run` or `bench`")
    return path


@contextmanager
def read_store(run_dir: str | Path) -> Iterator[RunStore]:
    """An existing run folder's store, read-only and without the writer lock."""
    store = RunStore.read_only(require_run_folder(run_dir))
    try:
        yield store
    finally:
        store.close()
