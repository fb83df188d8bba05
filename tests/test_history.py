"""History: the store (idempotent adds, commit dating), change points (against a brute-force
search and series with known steps), environment changes, and the report's outputs."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from harness.history.changepoints import between_run_variance, detect, point_se, segment
from harness.history.report import build_history_report
from harness.history.series import analyse
from harness.history.store import HistoryError, HistoryStore, parse_time

ENV = {"versions": {"torch": "2.13.0", "diffusers": "0.42.1", "transformers": "5.24.0"}, "cpu": "Test CPU",
       "git_commit": None}
DAY = 86400.0
T0 = 1_790_000_000.0


def fake_run(root: Path, name: str, calls_ms: list[float], env: dict | None = None,
             fad: tuple[float, float, float] | dict[str, tuple[float, float, float]] | None = None,
             checkpoint: str = "tiny-audio", batch: int = 1) -> Path:
    """A run folder with one benched cell: the given per-call total latencies and, optionally, a FAD with its
    CI (value, low, high), or one per embedder id (a run scored with several embedders' weights)."""
    from harness.spec import expand, parse_spec
    from harness.store import RunStore

    if checkpoint.startswith("/"):  # a local folder (names may carry markup): it must exist to be a checkpoint
        folder = root / checkpoint.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model_index.json").write_text('{"_class_name": "AudioLDM2Pipeline"}')
        checkpoint = str(folder)
    spec = parse_spec({"name": name, "checkpoints": [checkpoint], "schedulers": ["ddim"], "steps": [3],
                       "audio_lengths_s": [1.0], "seeds": [0], "device": "cpu",
                       "prompts": {"set": "smoke"}})
    cell = expand(spec, "cpu")[0]
    store = RunStore(root / name)
    try:
        store.set_meta("environment", env or ENV)
        store.add_cells([cell], {"batch_size": 1})
        store.write_measurements(cell.id, batch, [("call", "total", f"{i:04d}", ms / 1e3) for i, ms in enumerate(calls_ms)])
        if fad is not None:
            scores = fad if isinstance(fad, dict) else {"mel-1": fad}
            store.write_metrics([{"cell_id": cell.id, "metric": "fad", "embedder": "mel", "embedder_id": emb_id,
                                  "reference": "folder:/ref", "reference_id": "ref1", "value": v[0],
                                  "ci_low": v[1], "ci_high": v[2], "confidence": 0.95, "n": 20}
                                 for emb_id, v in scores.items()])
    finally:
        store.close()
    return root / name


def _calls(rng: np.random.Generator, level_ms: float, n: int = 6, cv: float = 0.02) -> list[float]:
    return list(level_ms * np.exp(rng.normal(0, cv, n)))


# ---- change points ---------------------------------------------------------------------------

def _brute_force(x: np.ndarray, var: np.ndarray, penalty: float, min_size: int) -> list[int]:
    """Every segmentation scored directly: the independent reference for ``segment``."""
    n, best = len(x), (math.inf, [])
    for k in range(n):
        for cuts in itertools.combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            if any(b - a < min_size for a, b in zip(bounds, bounds[1:])):
                continue
            cost = penalty * k
            for a, b in zip(bounds, bounds[1:]):
                w = 1 / var[a:b]
                cost += float(np.sum(w * (x[a:b] - np.sum(w * x[a:b]) / np.sum(w)) ** 2))
            if cost < best[0] - 1e-9:
                best = (cost, list(cuts))
    return best[1]


def test_segmentation_is_the_exact_optimum_of_the_weighted_cost():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(4, 11))
        x = rng.normal(size=n) + np.where(np.arange(n) >= rng.integers(1, n), rng.normal(0, 3), 0.0)
        var = rng.uniform(0.1, 3.0, n)
        min_size, penalty = int(rng.integers(1, 3)), float(rng.uniform(0.3, 8.0))
        assert segment(x, var, penalty, min_size) == _brute_force(x, var, penalty, min_size)


@pytest.mark.parametrize("step", [0.10, -0.15, 0.25])
def test_a_known_step_is_found_at_its_commit_with_a_ci_covering_it(step):
    rng = np.random.default_rng(1)
    values = 400 * np.exp(rng.normal(0, 0.015, 60))
    values[37:] *= 1 + step
    steps, _ = detect(values, np.full(60, 2.0), relative=True)
    assert [s.index for s in steps] == [37]
    assert steps[0].ci_low < step < steps[0].ci_high
    assert steps[0].before == pytest.approx(400, rel=0.02)


def test_pure_noise_gives_no_step():
    rng = np.random.default_rng(2)
    false_steps = 0
    for _ in range(30):
        values = 400 * np.exp(rng.normal(0, 0.03, 80))
        se = 400 * np.abs(rng.normal(0.01, 0.003, 80))
        false_steps += len(detect(values, se, relative=True)[0])
    assert false_steps <= 1  # 2,400 commits of noise


def test_each_points_uncertainty_decides_not_a_threshold():
    # The same values: a 3-unit step is clear when points are known to +/- 0.3, and noise at +/- 5.
    values = np.r_[np.full(10, 10.0), np.full(10, 13.0)] + np.tile([0.2, -0.2], 10)
    assert [s.index for s in detect(values, np.full(20, 0.3), relative=False)[0]] == [10]
    assert detect(values, np.full(20, 5.0), relative=False)[0] == []


def test_a_single_number_series_creeping_by_kib_has_no_step_but_a_jump_is_one():
    creep = 550.0 + 0.05 * np.arange(12)  # MiB: a process growing by 50 KiB a run (seen in the demo)
    assert detect(creep, np.zeros(12), relative=True)[0] == []
    jump = creep * np.where(np.arange(12) >= 6, 1.05, 1.0)
    assert [s.index for s in detect(jump, np.zeros(12), relative=True)[0]] == [6]


def test_step_size_and_ci_match_the_weighted_means_by_hand():
    values = np.array([1.0, 1.2, 0.8, 3.0, 3.2, 2.8])
    se = np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2])
    (step,), tau = detect(values, se, relative=False)
    var = se**2 + tau**2
    w0, w1 = 1 / var[:3], 1 / var[3:]
    diff = np.sum(w1 * values[3:]) / w1.sum() - np.sum(w0 * values[:3]) / w0.sum()
    half = norm.ppf(0.975) * math.sqrt(1 / w0.sum() + 1 / w1.sum())
    assert (step.index, step.size) == (3, pytest.approx(diff))
    assert (step.ci_low, step.ci_high) == (pytest.approx(diff - half), pytest.approx(diff + half))


def test_point_se_from_ci_observations_and_counts():
    assert point_se(1.0, ci_low=0.8, ci_high=1.2, confidence=0.95) == pytest.approx(0.2 / 1.959964)
    obs = [10.0, 12.0, 11.0, 13.0]
    assert point_se(11.5, samples=obs) == pytest.approx(math.sqrt(math.pi / 2) * np.std(obs, ddof=1) / 2)
    assert point_se(0.0, n=99, fraction=True) == pytest.approx(math.sqrt(0.005 * 0.995 / 99))
    assert point_se(5.0) == 0.0


def test_between_run_variance_recovers_a_known_run_to_run_spread():
    rng = np.random.default_rng(3)
    se = np.full(4000, 0.5)
    x = rng.normal(0, 1.0, 4000) + rng.normal(0, se)  # tau = 1 on top of each point's own se
    x[2000:] += 5  # a step moves one difference only
    assert math.sqrt(between_run_variance(x, se)) == pytest.approx(1.0, rel=0.05)


# ---- store -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """12 commits of one cell: latency +20% from commit 7, FAD steady; torch upgrade at commit 10
    (latency -30% there: reported as the environment's doing)."""
    root = tmp_path_factory.mktemp("history")
    rng = np.random.default_rng(4)
    db = root / "h" / "history.sqlite"
    (root / "h").mkdir()
    commits = [f"{i:02d}" + "abcdef0123456789" * 2 + "cafe"[: i % 4] for i in range(12)]
    commits = [c[:40].ljust(40, "0") for c in commits]
    with HistoryStore(root / "h") as store:
        for i, commit in enumerate(commits):
            level = 400 * (1.2 if i >= 7 else 1.0) * (0.7 if i >= 10 else 1.0)
            env = {**ENV, "versions": {**ENV["versions"], "torch": "2.14.0" if i >= 10 else "2.13.0"}}
            fad = 2.0 + rng.normal(0, 0.02)
            run = fake_run(root, f"run{i:02d}", _calls(rng, level), env, (fad, fad - 0.1, fad + 0.1))
            store.add(run, commit=commit, commit_time=T0 + i * DAY)
    return {"root": root, "db": db, "commits": commits}


def test_adding_the_same_run_again_changes_nothing(history, tmp_path):
    before = sqlite3.connect(history["db"]).execute("SELECT COUNT(*) FROM points").fetchone()[0]
    with HistoryStore(history["db"]) as store:
        result = store.add(history["root"] / "run03", commit="f" * 40, commit_time=T0)
        assert not result.added and result.commit == history["commits"][3]
        assert len(store.runs()) == 12
    assert sqlite3.connect(history["db"]).execute("SELECT COUNT(*) FROM points").fetchone()[0] == before == 24


def test_history_holds_the_gates_figures_with_observations_and_cis(history):
    from harness.gate.summary import from_runs

    with HistoryStore(history["db"]) as store:
        frame = store.frame()
    gate = next(iter(from_runs([history["root"] / "run05"]).cells.values())).figures
    row = frame[(frame["commit_sha"] == history["commits"][5])].set_index("figure")
    assert set(row.index) == set(gate)
    assert row.loc["latency_ms:total:p50", "value"] == pytest.approx(gate["latency_ms:total:p50"].value)
    assert json.loads(row.loc["latency_ms:total:p50", "observations"]) == pytest.approx(gate["latency_ms:total:p50"].samples)
    assert row.loc["fad:mel", "ci_high"] == pytest.approx(gate["fad:mel"].ci_high)
    assert list(frame["commit_sha"].drop_duplicates()) == history["commits"]  # history order is commit time


def test_regression_and_environment_change_are_named_by_commit(history):
    with HistoryStore(history["db"]) as store:
        frame, steps = analyse(store.frame())
    latency = sorted((s for s in steps if s.figure == "latency_ms:total:p50"), key=lambda s: s.position)
    assert [(s.commit, s.kind) for s in latency] == [(history["commits"][7], "regression"),
                                                      (history["commits"][10], "environment")]
    assert latency[0].previous_commit == history["commits"][6]
    assert latency[0].ci_low < 0.2 < latency[0].ci_high
    assert latency[1].environment_change == "torch 2.13.0 → 2.14.0"
    assert not [s for s in steps if s.figure == "fad:mel"]
    assert frame["step"].sum() == 2


def test_runs_of_one_commit_are_one_point_and_never_split_by_a_step(tmp_path):
    rng = np.random.default_rng(6)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(8):
            for rerun, level in enumerate([100.0, 130.0] if i == 3 else [100.0]):  # commit 3: a slow rerun
                store.add(fake_run(tmp_path, f"r{i}-{rerun}", _calls(rng, level)), commit=f"{i}" * 40,
                          commit_time=T0 + i * DAY + rerun)
        frame, steps = analyse(store.frame())
    assert len(frame) == 8 and frame["runs"].tolist() == [1, 1, 1, 2, 1, 1, 1, 1]
    pooled = frame.iloc[3]
    assert pooled["value"] == pytest.approx(math.sqrt(100 * 130), rel=0.05)  # geometric mean of the two runs
    assert pooled["se"] / pooled["value"] == pytest.approx(abs(math.log(1.3)) / 2, rel=0.2)  # their spread
    assert steps == []


def test_latency_per_call_of_another_batch_is_another_series_not_a_step(tmp_path):
    rng = np.random.default_rng(8)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(8):  # from commit 4 the bench times calls of 2 samples: twice as long, same speed
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100.0 * (2 if i >= 4 else 1)), batch=2 if i >= 4 else 1),
                      commit=f"{i}" * 40, commit_time=T0 + i * DAY)
        frame, steps = analyse(store.frame())
    assert steps == []
    assert sorted(frame["unit"].unique()) == ["ms per call of 1", "ms per call of 2"]


def test_a_quality_step_is_a_difference_judged_by_the_bootstrap_cis(tmp_path):
    rng = np.random.default_rng(9)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(10):
            fad = (2.0 if i < 6 else 2.5) + rng.normal(0, 0.03)
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100.0), fad=(fad, fad - 0.1, fad + 0.1)),
                      commit=f"{i}" * 40, commit_time=T0 + i * DAY)
        frame, steps = analyse(store.frame())
    (step,) = [s for s in steps if s.figure == "fad:mel"]
    assert (step.position, step.kind, step.relative) == (6, "regression", False)
    assert step.ci_low < 0.5 < step.ci_high and step.size == pytest.approx(0.5, abs=0.06)
    fad = frame[frame["figure"] == "fad:mel"]
    assert fad["se"].to_numpy() == pytest.approx(0.2 / (2 * norm.ppf(0.975)))  # from each point's own CI


# ---- series keyed by what was measured --------------------------------------------------------

PLAIN, PROTOCOL = "mel-929d5ed5aa", "mel-0badc0de77"  # one embedder's weights plainly, and under a protocol


def _fad(value: float) -> tuple[float, float, float]:
    return value, value - 0.1, value + 0.1


def test_a_measurement_named_differently_by_its_runs_is_one_series(tmp_path):
    # From commit 5 every run is also scored under a protocol (other weights, FAD ~4): those runs
    # name the plain score fad:mel#929d5ed5, the earlier ones fad:mel. One measurement, one series.
    rng = np.random.default_rng(10)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(10):
            scores = {PLAIN: _fad(2.0 + rng.normal(0, 0.02))}
            if i >= 5:
                scores[PROTOCOL] = _fad(4.0 + rng.normal(0, 0.02))
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100.0), fad=scores), commit=f"{i}" * 40,
                      commit_time=T0 + i * DAY)
        raw = store.frame()
        frame, steps = analyse(raw)
    assert set(raw["run_figure"]) >= {"fad:mel", "fad:mel#929d5ed5", "fad:mel#0badc0de"}  # as the runs named them
    fad = frame[frame["stem"] == "fad:mel"]
    assert fad.groupby("figure")["position"].apply(list).to_dict() == {
        "fad:mel#929d5ed5": list(range(10)), "fad:mel#0badc0de": list(range(5, 10))}
    assert (fad[fad["figure"] == "fad:mel#929d5ed5"]["embedder_id"] == PLAIN).all()
    assert steps == [] and not frame["step"].any()


def test_another_embedders_weights_under_the_same_name_are_another_series_not_a_step(tmp_path):
    # Every run is scored once, so every run names its score fad:mel; from commit 6 the weights
    # differ (another embedder id) and so does the level: no step, two series.
    rng = np.random.default_rng(11)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(12):
            scores = {PLAIN: _fad(2.0 + rng.normal(0, 0.02))} if i < 6 else {PROTOCOL: _fad(3.0 + rng.normal(0, 0.02))}
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100.0), fad=scores), commit=f"{i}" * 40,
                      commit_time=T0 + i * DAY)
        raw = store.frame()
        frame, steps = analyse(raw)
    assert set(raw.loc[raw["stem"] == "fad:mel", "run_figure"]) == {"fad:mel"}
    fad = frame[frame["stem"] == "fad:mel"]
    assert fad.groupby("figure")["embedder_id"].agg(set).to_dict() == {"fad:mel#929d5ed5": {PLAIN},
                                                                        "fad:mel#0badc0de": {PROTOCOL}}
    assert steps == []
    # Keyed by name, as before schema 2, the change of weights was a +1.0 "regression" at commit 6.
    legacy, legacy_steps = analyse(raw.assign(embedder_id=None, reference_id=None, figure=raw["run_figure"],
                                              stem=raw["run_figure"]))
    assert [(s.figure, s.position) for s in legacy_steps] == [("fad:mel", 6)]


def test_series_names_suffix_only_where_a_cell_holds_two_series_of_a_stem():
    from harness.history.store import series_names

    rows = [  # cell, name in its run, embedder id, reference id
        ("a", "fad:mel", "mel-11111111", "ref-one"),
        ("a", "fad:mel@ref-two", "mel-11111111", "ref-two"),
        ("b", "fad:mel#22222222", "mel-11111111", "ref-one"),  # cell b: one series, so a plain name
        ("c", "kad:mel", "x-abcdefgh1", "r"),
        ("c", "kad:mel", "y-abcdefgh2", "r"),  # short ids collide: the full ids name them
        ("c", "kad:mel", None, None),  # added by a version-1 harness: no ids
        ("c", "latency_ms:total:p50", None, None),
    ]
    frame = pd.DataFrame(rows, columns=["cell_key", "run_figure", "embedder_id", "reference_id"])
    frame["stem"] = [f.split("@")[0].split("#")[0] if e else f for _, f, e, _ in rows]
    assert series_names(frame).tolist() == [
        "fad:mel@ref-one", "fad:mel@ref-two", "fad:mel", "kad:mel@r#x-abcdefgh1", "kad:mel@r#y-abcdefgh2",
        "kad:mel (no id)", "latency_ms:total:p50"]


# Schema 1, as the first history harness wrote it (no embedder or reference id in points).
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (run_key TEXT PRIMARY KEY, source TEXT NOT NULL, commit_sha TEXT NOT NULL,
    commit_time REAL NOT NULL, commit_time_source TEXT NOT NULL, run_created REAL, added_at REAL NOT NULL,
    environment TEXT NOT NULL, env_key TEXT NOT NULL);
CREATE TABLE points (run_key TEXT NOT NULL REFERENCES runs(run_key), cell_key TEXT NOT NULL,
    cell_label TEXT NOT NULL, figure TEXT NOT NULL, value REAL NOT NULL, better TEXT, unit TEXT NOT NULL,
    scale TEXT NOT NULL, n INTEGER, ci_low REAL, ci_high REAL, confidence REAL, observations TEXT,
    PRIMARY KEY (run_key, cell_key, figure));
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_schema_1_history_is_migrated_in_place_and_keeps_its_points(tmp_path):
    from harness.history.store import SCHEMA_VERSION

    rng = np.random.default_rng(12)
    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_1)
    with HistoryStore(tmp_path / "scratch.sqlite") as scratch:  # real rows, written the way version 1 did
        first = scratch.add(fake_run(tmp_path, "r0", _calls(rng, 100.0), fad=_fad(2.0)), commit="0" * 40,
                            commit_time=T0)
        runs = scratch.db.execute("SELECT * FROM runs").fetchall()
        points = scratch.db.execute("SELECT * FROM points").fetchall()
    with old:
        old.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)", [tuple(r) for r in runs])
        old.executemany("INSERT INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [tuple(p)[:13] for p in points])
    old.close()

    with HistoryStore(db) as store:
        columns = [r["name"] for r in store.db.execute("PRAGMA table_info(points)")]
        assert columns[-2:] == ["embedder_id", "reference_id"]
        version = store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert version == str(SCHEMA_VERSION)
        assert not store.add(tmp_path / "r0", commit="f" * 40).added  # the same run_key: still recognised
        for i in range(1, 4):
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100.0), fad=_fad(2.0)), commit=f"{i}" * 40,
                      commit_time=T0 + i * DAY)
    with HistoryStore(db) as store:  # opening it again changes nothing
        frame, _ = analyse(store.frame())
        assert len(store.runs()) == 4
    assert first.points == 2  # total latency and FAD
    fad = frame[frame["stem"].str.startswith("fad:mel")].set_index("position")
    # The version-1 point's weights are unknown: it stays apart rather than being guessed into the series.
    assert fad["figure"].to_dict() == {0: "fad:mel (no id)", 1: "fad:mel", 2: "fad:mel", 3: "fad:mel"}
    assert fad["embedder_id"].isna().tolist() == [True, False, False, False]
    lat = frame[frame["figure"] == "latency_ms:total:p50"]
    assert lat["position"].tolist() == [0, 1, 2, 3]  # latency continues across the migration


def test_a_history_of_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "new.sqlite"
    HistoryStore(db).close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(HistoryError, match="history schema 3, this harness reads 1 to 2"):
        HistoryStore(db)


def test_commit_time_from_git_else_the_run_creation(tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True,
                   env={"GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z", "PATH": "/usr/bin:/bin"})
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    run = fake_run(tmp_path, "r", [100.0, 101.0, 99.0])
    with HistoryStore(tmp_path / "h.sqlite") as store:
        dated = store.add(run, commit=sha, repo=repo)
        assert (dated.commit_time, dated.commit_time_source) == (parse_time("2026-01-02T03:04:05Z"), "git")
    with HistoryStore(tmp_path / "h2.sqlite") as store:
        created = store.add(run, commit="0" * 40, repo=None)
        assert created.commit_time_source == "run created" and abs(created.commit_time - __import__("time").time()) < 600
        with pytest.raises(HistoryError, match="not in the git repository"):
            store.add(fake_run(tmp_path, "r2", [5.0, 6.0]), commit="0" * 40, repo=repo)


def test_history_path_takes_a_file_or_a_folder(tmp_path):
    from harness.history.store import history_path

    assert history_path(tmp_path) == tmp_path / "history.sqlite"
    assert history_path(f"{tmp_path}/new-cache/") == tmp_path / "new-cache" / "history.sqlite"
    assert history_path(tmp_path / "h.db") == tmp_path / "h.db"
    assert history_path(None) == Path("history.sqlite")


def test_bad_inputs_give_one_line_errors(tmp_path):
    run = fake_run(tmp_path, "r", [100.0, 101.0])
    with HistoryStore(tmp_path / "h.sqlite") as store, pytest.raises(HistoryError, match="pass --commit"):
        store.add(run)  # the run recorded no commit
    with pytest.raises(HistoryError, match="no history file"):
        build_history_report(tmp_path / "missing.sqlite", tmp_path / "out")
    with pytest.raises(HistoryError, match="ISO date"):
        parse_time("yesterday")
    (tmp_path / "junk.sqlite").write_text("not sqlite at all, definitely")
    with pytest.raises(HistoryError, match="not a history file"):
        HistoryStore(tmp_path / "junk.sqlite")


# ---- report ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(history, tmp_path_factory):
    """The history's report folder, every format."""
    return build_history_report(history["db"], tmp_path_factory.mktemp("hreport") / "out", last=4)


def test_report_writes_every_format_and_the_summary_names_the_recent_steps(history, report):
    assert {p.name for p in report.files.values()} == {"index.html", "summary.md", "series.csv", "series.parquet"}
    md = report.files["md"].read_text()
    # --last 4: only the torch upgrade at commit 10 is recent; the regression at 7 is older.
    assert f"`{history['commits'][10][:10]}`" in md and "torch 2.13.0 → 2.14.0" in md
    assert history["commits"][7][:10] not in md
    assert len(report.steps) == 2 and len(report.recent_steps) == 1


def test_series_csv_and_parquet_hold_every_point_with_its_se_and_level(report):
    csv, parquet = pd.read_csv(report.files["csv"]), pd.read_parquet(report.files["parquet"])
    assert len(csv) == len(parquet) == 24
    assert np.allclose(csv["value"], parquet["value"]) and (csv["se"] > 0).all()
    lat = parquet[parquet["figure"] == "latency_ms:total:p50"].sort_values("position")
    assert lat["step"].tolist() == [False] * 7 + [True] + [False] * 2 + [True] + [False]
    assert lat["level"].iloc[8] / lat["level"].iloc[0] == pytest.approx(1.2, rel=0.03)


def test_html_is_self_contained_and_escapes_user_text(tmp_path):
    evil = "<img src=x onerror=alert(1)>"  # no slash: the cell label is the checkpoint's last path part
    rng = np.random.default_rng(5)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for i in range(4):
            store.add(fake_run(tmp_path, f"r{i}", _calls(rng, 100), checkpoint=f"/ck/{evil}"),
                      commit=f"{i}" * 40, commit_time=T0 + i)
    page = build_history_report(tmp_path / "h.sqlite", tmp_path / "out", formats="html").files["html"].read_text()
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "src=\"data:image/png;base64," in page and "http://" not in page and "https://" not in page


def test_cli_history_add_and_report(history, tmp_path, capsys):
    from harness.cli import main

    db = tmp_path / "cli.sqlite"
    runs = [str(history["root"] / f"run{i:02d}") for i in range(12)]
    for i, run in enumerate(runs):
        assert main(["history", "add", run, "--history", str(db), "--commit", history["commits"][i],
                     "--commit-time", f"2026-11-{i + 1:02d}T12:00:00Z"]) == 0
    assert main(["history", "add", runs[0], "--history", str(db), "--commit", "x"]) == 0
    assert "already in the history, unchanged" in capsys.readouterr().out
    assert main(["history", "report", "--history", str(db), "--out", str(tmp_path / "rep"), "--format", "md",
                 "--figure", "latency_ms:total"]) == 0
    out = capsys.readouterr().out
    assert "2 step(s)" in out
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "**regression**" in md and history["commits"][7][:10] in md and "fad" not in md
    assert main(["history", "report", "--history", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "x")]) == 2
    assert "no history file" in capsys.readouterr().err
