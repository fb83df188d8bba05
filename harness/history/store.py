"""The history file: every figure of every added run, keyed by cell settings, in one SQLite file.

A run's figures are read through the gate's read-model (``harness.gate.summary.from_runs``), so
the history holds exactly what a gate sees: latency per stage (with the per-call observations),
memory per kind, quality metrics with their CIs (and per-sample CLAP scores), and failed and
flagged fractions. Cells are keyed by their settings without library versions
(``results.config_key``), so a series continues across upgrades; the environment is stored per
run, and a change of it is reported as such.

A run is identified by its content (environment and figures), so adding it again changes nothing.

A quality figure's name in a run (``results.quality_names``) depends on the other rows of its
cell in that run (``#<embedder id>`` only where one run scored with two embedders), so the
history stores what measured it (``embedder_id``, ``reference_id``) and keys a series by that;
``frame`` names each series by its stem, with a suffix only where two series of one cell in the
whole history share a stem.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.results import figure_stem

DEFAULT_FILE = "history.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,          -- sha256 of the run's environment and figures
    source TEXT NOT NULL,              -- the run folder as given to `history add`
    commit_sha TEXT NOT NULL,
    commit_time REAL NOT NULL,         -- unix seconds
    commit_time_source TEXT NOT NULL,  -- 'git' (git show in the repo), 'given' (--commit-time), 'run created'
    run_created REAL,                  -- earliest cell row of the run
    added_at REAL NOT NULL,
    environment TEXT NOT NULL,         -- the run's full environment fingerprint (JSON)
    env_key TEXT NOT NULL              -- device and torch/diffusers/transformers versions (JSON)
);
CREATE TABLE IF NOT EXISTS points (
    run_key TEXT NOT NULL REFERENCES runs(run_key),
    cell_key TEXT NOT NULL,            -- cell settings without versions (results.config_key)
    cell_label TEXT NOT NULL,
    figure TEXT NOT NULL,              -- the gate's figure name, e.g. latency_ms:total:p50, fad:mel
    value REAL NOT NULL,
    better TEXT,                       -- lower | higher
    unit TEXT NOT NULL,
    scale TEXT NOT NULL,               -- ratio (steps are relative) | difference
    n INTEGER,
    ci_low REAL,
    ci_high REAL,
    confidence REAL,
    observations TEXT,                 -- JSON list of raw observations (per-call ms, per-sample scores)
    embedder_id TEXT,                  -- quality figures: the weights and front end that measured them
    reference_id TEXT,                 -- quality figures: what they were measured against
    PRIMARY KEY (run_key, cell_key, figure)
);
"""
# 2: points.embedder_id and points.reference_id (NULL for latency, memory, fractions, and for
# quality points added by a version-1 harness, which did not store them). A version-1 file is
# migrated in place on opening; a file of a newer version is refused rather than misread.
SCHEMA_VERSION = 2
_ADDED_IN_2 = ("embedder_id", "reference_id")
NO_ID = " (no id)"  # suffix of a quality series added before ids were stored, where it shares a stem


class HistoryError(HarnessError, ValueError):
    """A history file or an added run that cannot be used; the message says why and what to do."""


@dataclass
class AddResult:
    """What ``HistoryStore.add`` did with one run folder."""

    source: str
    run_key: str
    commit: str
    commit_time: float
    commit_time_source: str
    points: int
    added: bool  # False: the same run was already in the history (nothing changed)


def history_path(path: str | Path | None) -> Path:
    """The history file: ``path`` itself, or ``history.sqlite`` inside it when it is a folder."""
    folder = str(path or "").endswith(("/", "\\"))  # a folder a CI job has not created yet
    path = Path(path or DEFAULT_FILE)
    return path / DEFAULT_FILE if folder or path.is_dir() else path


class HistoryStore:
    """One SQLite history file (created on first use)."""

    def __init__(self, path: str | Path | None = None, create: bool = True):
        self.path = history_path(path)
        if not create and not self.path.is_file():
            raise HistoryError(f"{self.path}: no history file; add runs first with `audioldm2-harness history add RUN`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise HistoryError(f"{self.path} is not a history file ({err}); pass another --history path") from None
        try:
            self._migrate()
        except HistoryError:
            self.db.close()
            raise

    def _migrate(self) -> None:
        """Bring a version-1 file to this schema in place (new nullable columns); refuse a newer one."""
        if self._schema_state() == (SCHEMA_VERSION, set()):
            return  # up to date: no write lock, so a read-only history still reads
        try:
            # IMMEDIATE, and looked at again under the lock: two CI jobs opening one old file
            # must not both add the columns.
            self.db.execute("BEGIN IMMEDIATE")
            try:
                version, missing = self._schema_state()
                for column in _ADDED_IN_2:
                    if column in missing:
                        self.db.execute(f"ALTER TABLE points ADD COLUMN {column} TEXT")
                if version != SCHEMA_VERSION:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()
        except sqlite3.OperationalError as err:
            raise HistoryError(f"{self.path}: cannot bring the history file to schema {SCHEMA_VERSION} ({err}); "
                               "open it once where it is writable") from None

    def _schema_state(self) -> tuple[int | None, set[str]]:
        """The file's schema version (None: not yet written) and the columns of this schema it lacks."""
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row["value"]) if row is not None else None
        if version is not None and not 1 <= version <= SCHEMA_VERSION:
            raise HistoryError(f"{self.path}: history schema {version}, this harness reads 1 to {SCHEMA_VERSION}; "
                               "use a newer harness or another --history file")
        have = {r["name"] for r in self.db.execute("PRAGMA table_info(points)")}
        return version, set(_ADDED_IN_2) - have

    def close(self) -> None:
        """Close the SQLite connection."""
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, run_dir: str | Path, commit: str | None = None, commit_time: float | str | None = None,
            repo: str | Path | None = None) -> AddResult:
        """Append one run folder's figures; a run already in the history is left as it is."""
        from harness.gate.summary import from_runs
        from harness.results import load_run

        summary = from_runs([run_dir])
        env = summary.environment
        points = [(key, cell.label, name, fig) for key, cell in summary.cells.items()
                  for name, fig in cell.figures.items() if fig.value is not None]
        if not points:
            raise HistoryError(f"{run_dir}: no figures to add; run `audioldm2-harness bench` or `score` on it first")
        run_key = _run_key(env, points)
        existing = self.db.execute("SELECT * FROM runs WHERE run_key=?", (run_key,)).fetchone()
        if existing is not None:
            return AddResult(str(run_dir), run_key, existing["commit_sha"], existing["commit_time"],
                             existing["commit_time_source"], len(points), added=False)
        commit = commit or env.get("git_commit")
        if not commit:
            raise HistoryError(f"{run_dir}: the run records no git commit; pass --commit SHA (and --commit-time)")
        created = min((c["created_at"] for c in load_run(run_dir).cells), default=None)
        when, source = _commit_time(commit, commit_time, repo, created)
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)", (
                run_key, str(run_dir), commit, when, source, created, time.time(),
                json.dumps(env, sort_keys=True), json.dumps(summary.environment_key(), sort_keys=True)))
            # Columns named: a migrated file has the new ones last, as ALTER TABLE put them.
            self.db.executemany(
                "INSERT INTO points (run_key, cell_key, cell_label, figure, value, better, unit, scale, n, ci_low, "
                "ci_high, confidence, observations, embedder_id, reference_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
                    (run_key, key, label, name, fig.value, fig.better, fig.unit, fig.scale, fig.n, fig.ci_low,
                     fig.ci_high, fig.confidence, json.dumps(fig.samples) if fig.samples else None,
                     fig.embedder_id, fig.reference_id)
                    for key, label, name, fig in points])
        return AddResult(str(run_dir), run_key, commit, when, source, len(points), added=True)

    def frame(self) -> pd.DataFrame:
        """One row per (run, cell, figure), in history order (commit time, then run creation).

        ``run_figure`` is the name the run gave the figure; ``stem``, ``embedder_id`` and
        ``reference_id`` say what was measured, and ``figure`` is the series' name over the history."""
        frame = pd.read_sql_query(
            "SELECT p.*, r.commit_sha, r.commit_time, r.commit_time_source, r.run_created, r.source, "
            "r.env_key, r.added_at FROM points p JOIN runs r ON r.run_key = p.run_key "
            "ORDER BY r.commit_time, r.run_created, r.added_at, p.cell_key, p.figure", self.db)
        frame["date"] = pd.to_datetime(frame["commit_time"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M")
        frame = frame.rename(columns={"figure": "run_figure"})
        # A point without an embedder id (latency, memory, a fraction, or a quality point a
        # version-1 harness added) is identified by its name as stored: nothing else is known.
        known = frame["embedder_id"].notna()
        frame["stem"] = frame["run_figure"].where(~known, frame["run_figure"].map(figure_stem))
        frame["figure"] = series_names(frame)
        return frame

    def runs(self) -> list[dict[str, Any]]:
        """Every run row, in history order."""
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY commit_time, run_created, added_at")]


def series_names(frame: pd.DataFrame) -> pd.Series:
    """Each row's series name: its stem, with ``quality_names``' suffixes only where two series of one
    cell in the whole history share the stem, so a name does not depend on one run's neighbours.

    ``frame`` has ``cell_key``, ``run_figure``, ``stem``, ``embedder_id`` and ``reference_id``."""
    names = frame["stem"].copy()
    known = frame["embedder_id"].notna()
    legacy_stems = frame.loc[~known, "run_figure"].map(figure_stem)
    for (cell_key, stem), group in frame[known].groupby(["cell_key", "stem"], sort=False):
        pairs = set(zip(group["embedder_id"], group["reference_id"].fillna("")))
        many_refs, many_ids = len({r for _, r in pairs}) > 1, len({e for e, _ in pairs}) > 1
        # The same shortening as quality_names: the reference's first 12 characters, the id's hash's first 8.
        short = {(e, r): stem + (f"@{r[:12]}" if many_refs else "")
                 + (f"#{e.rsplit('-', 1)[-1][:8]}" if many_ids else "") for e, r in pairs}
        if len(set(short.values())) < len(pairs):  # shortened ids that collide: the full ones never do
            short = {p: f"{stem}@{p[1]}#{p[0]}" for p in pairs}
        keys = zip(group["embedder_id"], group["reference_id"].fillna(""))
        names.loc[group.index] = [short[k] for k in keys]
        # An unidentified quality series of this cell and stem stays apart, and says why.
        clash = ~known & (frame["cell_key"] == cell_key) & (legacy_stems.reindex(frame.index) == stem)
        names.loc[clash] = frame.loc[clash, "run_figure"] + NO_ID
    return names


def _run_key(env: dict[str, Any], points: list) -> str:
    # Unchanged by schema 2: the figures (asdict) always carried embedder_id and reference_id,
    # so a run added before the migration is still recognised and not added a second time.
    payload = {"environment": env, "points": [[k, n, asdict(f)] for k, _, n, f in points]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _commit_time(commit: str, given: float | str | None, repo: str | Path | None,
                 created: float | None) -> tuple[float, str]:
    """Commit time: as given, else ``git show`` in the repository, else the run's creation time."""
    if given is not None:
        return parse_time(given), "given"
    out = _git_time(commit, repo)
    if out is not None:
        return out, "git"
    if repo is not None:
        raise HistoryError(f"commit {commit} is not in the git repository {repo}; pass --commit-time or the right --repo")
    if created is None:
        raise HistoryError("the run has no cells to date it by; pass --commit-time")
    return created, "run created"


def _git_time(commit: str, repo: str | Path | None) -> float | None:
    try:
        out = subprocess.run(["git", "-C", str(repo or "."), "show", "-s", "--format=%ct", commit],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return float(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def parse_time(text: float | str) -> float:
    """Unix seconds from a number or an ISO 8601 date/time (UTC unless it names a zone)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        pass
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise HistoryError(f"commit time {text!r}: give unix seconds or an ISO date such as 2026-11-30T12:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
