"""The run folder: ``run.sqlite`` (WAL) for rows, ``audio/`` for lossless waveforms.

Crash safety: audio is written to a temporary name, fsynced and renamed, and only then is its
sample row committed, so a row never points at a partial file and a killed run resumes by
skipping the (cell, prompt, seed) keys that already have a row.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import filelock
import numpy as np
from scipy.io import wavfile

from harness.errors import HarnessError
from harness.fileio import atomic_write_bytes, replace, sha256_file

if TYPE_CHECKING:
    from harness.spec import Cell

SCHEMA_VERSION = 1

DATABASE = "run.sqlite"

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
    max_new_tokens INTEGER,      -- GPT-2 tokens per prompt; NULL: the language model config's default
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
    """A file-name form of a prompt id, unique per id by construction.

    The sanitised text is for people; the suffix (sha256 of the raw id) is what keeps two ids
    apart: ``a/b`` and ``a_b`` (or ``A`` and ``a`` on a case-insensitive file system) never share
    a file, and no id can spell out another id's name.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60].strip(".") or "_"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def database_error(path: Path, err: sqlite3.Error) -> StoreError:
    """A StoreError that names the database file and the way out."""
    text = str(err)
    if "no such table" in text or "no such column" in text:
        return StoreError(
            f"{path} holds no run (empty, or missing the store's tables: {err}); it was not written by a "
            "complete `run`, `bench` or `merge`. Delete it (with its -wal/-shm files) to start this folder "
            "afresh, or restore it from a copy")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path} is in use by another process ({err}); wait for it to finish and try again")
    if type(err) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text:
        return StoreError(f"{path} is damaged and cannot be read as a run database ({err}); restore it from "
                          "a copy, or move the run folder away and rerun the sweep into a new one")
    return StoreError(f"{path}: {type(err).__name__}: {err}")


def _create_database(path: Path) -> None:
    """Create ``path`` with the whole schema at once: built under a temporary name, then renamed,
    so a killed ``run`` or ``merge`` leaves either no database or a complete one."""
    tmp = path.with_name(path.name + ".creating")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm"),
                     tmp.with_name(tmp.name + "-journal")):
        leftover.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses WAL
        db.executescript(f"BEGIN;\n{SCHEMA}\nINSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');\n"
                         "COMMIT;")
    finally:
        db.close()  # the last connection checkpoints and removes the -wal file
    replace(tmp, path)


class RunStore:
    """One run folder; a single writer process at a time."""

    @classmethod
    def read_only(cls, root: str | Path) -> "RunStore":
        """Open for reading without the writer lock: no schema writes, no clean-up of files."""
        store = cls.__new__(cls)
        store.root = Path(root)
        path = store.root / DATABASE
        try:
            store.db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as err:
            raise database_error(path, err) from None
        store.db.row_factory = sqlite3.Row
        store._check_schema()
        return store

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / DATABASE
        if not path.exists():  # a new folder; an existing file is never re-initialised
            _create_database(path)
        try:
            # The sample writer thread commits rows while the generating thread runs; they never use
            # the connection at the same time (the writer is drained before anything else touches it).
            self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        except sqlite3.Error as err:
            raise database_error(path, err) from None
        self.db.row_factory = sqlite3.Row
        self._check_schema()  # before any write: a file that is not a run stays as it was
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")  # a sample or measurement row needs its cell's row
        self._add_missing_columns()
        (self.root / "audio").mkdir(exist_ok=True)
        self._remove_partial_files()

    def _check_schema(self) -> None:
        path = self.root / DATABASE
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            self.db.execute("SELECT 1 FROM samples LIMIT 1").fetchall()
        except sqlite3.Error as err:
            self.db.close()
            raise database_error(path, err) from None
        if row is None:
            self.db.close()
            raise StoreError(f"{path} has no store schema version (not written by this harness, or damaged); "
                             "restore it from a copy, or use a new run folder")
        if int(json.loads(row["value"])) != SCHEMA_VERSION:
            self.db.close()
            raise StoreError(
                f"{self.root} has store schema {row['value']}, this harness writes {SCHEMA_VERSION}; "
                "use a new run folder"
            )

    def _add_missing_columns(self) -> None:
        # Folders written before cells.max_new_tokens existed: the column is added (NULL for their
        # cells, which ran at the language model config's default).
        if "max_new_tokens" not in self.table_columns("cells"):
            with self.db:
                self.db.execute("ALTER TABLE cells ADD COLUMN max_new_tokens INTEGER")

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
        cells, now = list(cells), time.time()
        rows = [
            (c.id, c.checkpoint, c.revision, c.dtype, c.device, c.scheduler, c.scheduler_type,
             json.dumps(c.scheduler_options, sort_keys=True), c.steps, c.guidance_scale,
             c.negative_prompt, c.audio_length_s, c.max_new_tokens,
             json.dumps({**c.runtime.model_dump(), **runtime_options}, sort_keys=True),
             json.dumps(c.versions, sort_keys=True), c.canonical_json(), now)
            for c in cells
        ]
        columns = ("id, checkpoint, revision, dtype, device, scheduler, scheduler_type, scheduler_options, steps, "
                   "guidance_scale, negative_prompt, audio_length_s, max_new_tokens, runtime_options, versions, "
                   "spec, created_at")
        with self.db:
            # Named columns: a migrated folder has max_new_tokens last (see _add_missing_columns).
            self._insert_cells(rows, [c.id for c in cells], f"({columns})")

    def _insert_cells(self, rows: list[tuple], ids: list[str], columns: str = "") -> None:
        """Insert cell rows that are not stored yet; a row that cannot be stored is an error, never
        skipped (``INSERT OR IGNORE`` would also drop rows breaking NOT NULL, e.g. a NaN setting)."""
        if not rows:
            return
        marks = ",".join("?" * len(rows[0]))
        try:
            self.db.executemany(f"INSERT INTO cells {columns} VALUES ({marks}) ON CONFLICT(id) DO NOTHING", rows)
        except sqlite3.IntegrityError as err:
            raise StoreError(f"a cell cannot be stored in {self.root / DATABASE} ({err}); its settings are "
                             "incomplete or not finite: fix the sweep file") from None
        stored = {r[0] for r in self.db.execute("SELECT id FROM cells")}  # hundreds of rows at most
        lost = [i for i in ids if i not in stored]
        if lost:
            raise StoreError(f"{len(lost)} cell(s) were not stored in {self.root / DATABASE} (e.g. {lost[0]}); "
                             "fix the sweep file")

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

    def resolve(self, rel: str | None) -> Path:
        """The file a stored audio path names, refused unless inside this run folder (``inside_run``)."""
        return inside_run(self.root, rel)

    def drop_damaged_samples(self, cell_ids: Iterable[str]) -> list[tuple[dict[str, Any], str]]:
        """Delete the rows of ``ok`` samples (of ``cell_ids``) whose audio file is missing, changed
        or outside the run folder, so a resume generates them again; returns (row, problem)."""
        wanted = set(cell_ids)
        rows = [dict(r) for r in self.db.execute("SELECT * FROM samples WHERE status='ok'")
                if r["cell_id"] in wanted]
        bad = audio_problems(self.root, rows, refuse_outside=False)
        with self.db:
            for row, _ in bad:
                self.db.execute("DELETE FROM samples WHERE cell_id=? AND prompt_id=? AND seed=?",
                                (row["cell_id"], row["prompt_id"], row["seed"]))
                # The cell's sample set changed: scores computed on the old set are stale.
                self.db.execute("DELETE FROM metrics WHERE cell_id=?", (row["cell_id"],))
        return bad

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

        cells = list(cells)
        columns = self.table_columns("cells")
        with self.db:
            self._insert_cells([tuple(c.get(k) for k in columns) for c in cells], [c["id"] for c in cells],
                               f"({','.join(columns)})")
            insert("samples", samples, "INSERT OR REPLACE")
            insert("measurements", measurements, "INSERT OR REPLACE")
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in meta.items()])


# --- reading stored audio safely: inside the run folder, and unchanged since it was stored -------

VERDICTS_FILE = "verified-audio.sqlite"  # in the harness cache folder
_RECENT_NS = 2_000_000_000  # files changed this recently are hashed every time (coarse mtime clocks)
VERDICT_MAX_AGE_S = 30 * 86400  # verdicts older than this are dropped (their files hashed once more)


class _Verdicts:
    """Files whose sha256 matched, by (real path, size, mtime_ns, inode, sha256): in memory, and
    in ``<harness cache>/verified-audio.sqlite`` so that later commands (``run`` resuming,
    ``score``, ``report``) skip hashing files that did not change. Only a cache: when it cannot
    be opened or written, files are simply hashed again. Each process that opens the file drops
    verdicts older than ``VERDICT_MAX_AGE_S``, so runs deleted long ago do not grow it forever."""

    def __init__(self) -> None:
        self.memory: set[tuple] = set()
        self.pending: list[tuple] = []
        self.db: sqlite3.Connection | None = None
        self.opened = False

    def _open(self) -> sqlite3.Connection | None:
        if not self.opened:
            self.opened = True
            from harness.checkpoints._cache import default_cache_dir

            try:
                root = default_cache_dir()
                root.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(root / VERDICTS_FILE, timeout=5, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a lost verdict only costs a hash
                columns = [row[1] for row in db.execute("PRAGMA table_info(verified)")]
                if columns and "added_s" not in columns:  # a cache from before pruning: start afresh
                    db.execute("DROP TABLE verified")
                db.execute("CREATE TABLE IF NOT EXISTS verified (path TEXT, size INTEGER, mtime_ns INTEGER, "
                           "inode INTEGER, sha256 TEXT, added_s REAL, "
                           "PRIMARY KEY (path, size, mtime_ns, inode, sha256)) WITHOUT ROWID")
                with db:
                    db.execute("DELETE FROM verified WHERE added_s < ?", (time.time() - VERDICT_MAX_AGE_S,))
                self.db = db
            except (OSError, sqlite3.Error):
                self.db = None
        return self.db

    def known(self, key: tuple) -> bool:
        """Whether this (path, size, mtime, inode, sha256) matched before, here or in an earlier process."""
        if key in self.memory:
            return True
        db = self._open()
        try:
            hit = db is not None and db.execute(
                "SELECT 1 FROM verified WHERE path=? AND size=? AND mtime_ns=? AND inode=? AND sha256=?",
                key).fetchone() is not None
        except sqlite3.Error:
            hit = False
        if hit:
            self.memory.add(key)
        return hit

    def add(self, key: tuple) -> None:
        """Remember a match (written to disk in batches)."""
        self.memory.add(key)
        self.pending.append(key)
        if len(self.pending) >= 256:
            self.flush()

    def flush(self) -> None:
        """Write the pending verdicts to the cache file."""
        pending, self.pending = self.pending, []
        db = self._open() if pending else None
        if db is not None:
            try:
                with db:
                    now = time.time()
                    db.executemany("INSERT OR IGNORE INTO verified VALUES (?,?,?,?,?,?)",
                                   [(*key, now) for key in pending])
            except sqlite3.Error:
                pass


_VERDICTS = _Verdicts()
atexit.register(_VERDICTS.flush)


def inside_run(root: str | Path, rel: str | None) -> Path:
    """The file a stored audio path names, or a StoreError unless it lies inside ``root/audio``
    (absolute paths, ``..``, NUL bytes and symlinks leading out are refused: a run folder from
    someone else must not make a command read, copy or publish other files)."""
    return _inside(Path(root), rel, (Path(root) / "audio").resolve())[0]


def _inside(root: Path, rel: str | None, audio_real: Path) -> tuple[Path, Path]:
    """(path, its real path) of a stored audio path; ``audio_real`` is ``root/audio`` resolved."""
    text = "" if rel is None else str(rel)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    ok = bool(text) and "\x00" not in text and not PurePosixPath(text).is_absolute() \
        and not PureWindowsPath(text).anchor and ".." not in parts and parts[:1] == ("audio",)
    path = real = root.joinpath(*parts) if ok else root
    if ok:
        try:  # symlinks followed: a link inside audio/ may not lead out of it
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:  # reported as missing by the caller
            real = Path(os.path.realpath(path))
        except OSError:  # a symlink loop
            ok = False
        ok = ok and real.is_relative_to(audio_real)
    if not ok:
        raise StoreError(f"{root / DATABASE} names the audio file {text!r}, which is outside the run folder's "
                         "audio/ folder; refusing to read it (regenerate the run with `audioldm2-harness run` "
                         "if the folder came from elsewhere)")
    return path, real


def file_problem(path: Path, sha256: str | None, real: Path | None = None) -> str | None:
    """Why ``path`` cannot be trusted as the audio stored with ``sha256`` (missing, not a regular
    file, changed), or None. A match is remembered by size, mtime and inode (``_Verdicts``), so
    reading an unchanged file again, in this process or a later one, costs a ``stat``, not a hash."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    key = (str(real or os.path.realpath(path)), st.st_size, st.st_mtime_ns, st.st_ino, sha256)
    if _VERDICTS.known(key):
        return None
    try:
        actual = sha256_file(path)
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"
    if actual != sha256:
        return f"{path} changed since it was stored (sha256 {actual[:12]}, recorded {str(sha256)[:12]})"
    if time.time_ns() - st.st_mtime_ns > _RECENT_NS:  # else a same-size change may keep the mtime
        _VERDICTS.add(key)
    return None


def sample_key(row: dict[str, Any]) -> str:
    """A sample's key as people read it: ``<cell id[:12]>/<prompt id>/seed <n>``."""
    return f"{row['cell_id'][:12]}/{row['prompt_id']!r}/seed {row['seed']}"


def audio_problems(root: str | Path, rows: Iterable[dict[str, Any]], *,
                   refuse_outside: bool = True) -> list[tuple[dict[str, Any], str]]:
    """(row, problem) for every ``ok`` sample row whose audio file is missing or changed; a path
    outside the run folder raises (see ``inside_run``), or with ``refuse_outside=False`` is one
    more problem."""
    out, root = [], Path(root)
    audio_real = (root / "audio").resolve()
    for row in rows:
        if row["status"] != "ok":
            continue
        if not row["audio_path"] or not row["audio_sha256"]:
            out.append((row, "no audio file recorded for an ok sample"))
            continue
        try:
            path, real = _inside(root, row["audio_path"], audio_real)
        except StoreError:
            if refuse_outside:
                raise
            out.append((row, f"audio path {row['audio_path']!r} lies outside the run folder's audio/ folder"))
            continue
        problem = file_problem(path, row["audio_sha256"], real)
        if problem:
            out.append((row, problem))
    _VERDICTS.flush()
    return out


def require_intact_audio(root: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Raise a StoreError naming the samples when any ok row's audio is missing or changed."""
    bad = audio_problems(root, rows)
    if bad:
        shown = "; ".join(f"{sample_key(r)}: {p}" for r, p in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise StoreError(
            f"{len(bad)} stored audio file(s) are missing or changed: {shown}{more}. "
            f"`audioldm2-harness verify {root}` lists them; rerunning the sweep into this folder "
            "(`audioldm2-harness run SWEEP --run-dir ...`) regenerates them")


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
        with _closing_naming_the_file(RunStore(run_dir)) as store:
            yield store


def require_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a StoreError naming it when it holds no run.sqlite."""
    path = Path(run_dir)
    if not (path / DATABASE).is_file():
        raise StoreError(f"{path} is not a run folder (no run.sqlite); pass a folder written by "
                         "`audioldm2-harness run` or `bench`")
    return path


@contextmanager
def read_store(run_dir: str | Path) -> Iterator[RunStore]:
    """An existing run folder's store, read-only and without the writer lock."""
    with _closing_naming_the_file(RunStore.read_only(require_run_folder(run_dir))) as store:
        yield store


@contextmanager
def _closing_naming_the_file(store: RunStore) -> Iterator[RunStore]:
    """Close ``store`` at the end; a database error inside names the file and the way out."""
    try:
        yield store
    except sqlite3.IntegrityError:
        raise  # a constraint the code broke, not a damaged file
    except sqlite3.DatabaseError as err:
        raise database_error(store.root / DATABASE, err) from err
    finally:
        store.close()
