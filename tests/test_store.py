"""The run store: atomic audio writes, resume keys, prompt consistency, schema."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import soundfile as sf

from harness.spec import expand, parse_spec
from harness.fileio import sha256_file
from harness.store import RunStore, SampleRecord, StoreError


@pytest.fixture
def cell():
    spec = parse_spec({"name": "t", "checkpoints": ["tiny-audio"], "prompts": {"set": "smoke"}})
    return expand(spec, "cpu")[0]


@pytest.fixture
def store(tmp_path, cell):
    s = RunStore(tmp_path / "run")
    s.add_cells([cell], {"batch_size": 1})
    yield s
    s.close()


def _record(cell, prompt_id="p/1 odd", seed=0, **kw):
    return SampleRecord(cell.id, prompt_id, "a prompt", None, seed, **kw)


def test_audio_is_lossless_float_wav_with_hash(store, cell):
    audio = np.random.default_rng(0).uniform(-1, 1, 1600).astype(np.float32)
    store.write_sample(_record(cell), audio, 16000)
    row = store.samples()[0]
    path = store.root / row["audio_path"]
    read, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and np.array_equal(read, audio)
    assert sf.info(path).subtype == "FLOAT"
    assert row["audio_sha256"] == sha256_file(path)
    assert (row["n_samples"], row["status"], row["sample_rate"]) == (1600, "ok", 16000)
    assert "/" not in path.name and path.parent.name == cell.id


def test_same_audio_same_file_bytes(store, cell):
    # No timestamps in the file: identical audio must hash identically across runs.
    audio = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    store.write_sample(_record(cell, seed=0), audio, 16000)
    store.write_sample(_record(cell, seed=1), audio, 16000)
    first, second = store.samples()
    assert first["audio_sha256"] == second["audio_sha256"]


def test_failed_write_leaves_no_row_and_no_partial_file(store, cell, monkeypatch):
    def broken_write(fh, *args, **kwargs):
        fh.write(b"RIFF half a header")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("harness.store.wavfile.write", broken_write)
    with pytest.raises(OSError, match="No space left"):
        store.write_sample(_record(cell), np.zeros(100, np.float32), 16000)
    assert store.samples() == []
    # The WAV is encoded in memory before anything touches the disk: no partial file at all.
    assert [p for p in (store.root / "audio").rglob("*") if p.is_file()] == []
    store.close()


def test_a_new_writer_sweeps_away_temporary_files_of_a_killed_one(store, cell):
    partial = store.root / "audio" / "cell" / ".x.wav.12345.tmp"  # what a SIGKILL mid-write leaves
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"RIFF half a header")
    store.close()
    RunStore(store.root).close()
    assert not partial.exists()


def test_failed_samples_are_rows_with_errors(store, cell):
    store.write_sample(_record(cell, status="failed", error="OutOfMemoryError: CUDA"), None, 16000)
    row = store.samples()[0]
    assert (row["status"], row["error"], row["audio_path"]) == ("failed", "OutOfMemoryError: CUDA", None)
    assert store.done_keys() == {(cell.id, "p/1 odd", 0)}
    assert store.done_keys(include_failed=False) == set()


def test_prompt_text_change_is_refused(store, cell):
    store.write_sample(_record(cell), np.zeros(10, np.float32), 16000)
    store.check_prompts({"p/1 odd": ("a prompt", None), "other": ("x", None)})
    with pytest.raises(StoreError, match="prompt text changed for ids p/1 odd"):
        store.check_prompts({"p/1 odd": ("a different prompt", None)})


def test_wal_mode_and_schema_version(store, tmp_path):
    db = sqlite3.connect(store.root / "run.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema 99"):
        RunStore(store.root)


def test_distinct_ids_get_distinct_files(store, cell):
    paths = {store.audio_path(cell.id, pid, 0) for pid in ["a/b", "a_b", "a b", "a:b"]}
    assert len(paths) == 4


def test_new_sample_makes_the_cells_scores_stale(store, cell):
    store.write_sample(_record(cell, seed=0), np.zeros(10, np.float32), 16000)
    store.write_metrics([{"cell_id": cell.id, "metric": "fad", "embedder": "mel", "embedder_id": "mel-x",
                          "reference": "folder:r", "reference_id": "r", "value": 1.0, "n": 1}])
    assert len(store.metrics()) == 1
    store.write_sample(_record(cell, seed=1), np.zeros(10, np.float32), 16000)
    assert store.metrics() == []  # a FAD over the old sample set must not pass for the new one


def test_read_only_open_leaves_partial_files_alone(store, cell):
    tmp = store.root / "audio" / "x.wav.tmp"
    tmp.write_bytes(b"in progress")
    reader = RunStore.read_only(store.root)
    assert reader.samples() == [] and tmp.exists()
    reader.close()


# --- the database file: created whole, never silently re-created, errors name it ---------------------

@pytest.mark.parametrize("content", [b"", "schemaless"])
def test_an_empty_or_schemaless_database_is_an_error_naming_it(tmp_path, content, capsys):
    from harness.cli import main

    run = tmp_path / "run"
    run.mkdir()
    path = run / "run.sqlite"
    if content == "schemaless":  # e.g. a killed creation by an older harness: tables missing
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x)")
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for open_it in (RunStore, RunStore.read_only):
        with pytest.raises(StoreError, match=rf"{path}.*holds no run.*Delete it"):
            open_it(run)
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    assert str(path) in capsys.readouterr().err
    assert path.read_bytes() == before  # not re-initialised
    assert not (run / "audio").exists() or not any((run / "audio").iterdir())


def test_a_damaged_database_is_an_error_naming_it_and_the_way_out(tmp_path, store, cell):
    store.write_sample(_record(cell), np.zeros(10, np.float32), 16000)
    store.close()
    path = store.root / "run.sqlite"
    path.write_bytes(b"this is not an SQLite file at all" * 200)
    for open_it in (RunStore, RunStore.read_only):
        with pytest.raises(StoreError, match=rf"{path} is damaged and cannot be read as a run database.*restore it from a copy"):
            open_it(store.root)


def test_database_errors_inside_a_reader_name_the_file(store):
    from harness.store import read_store

    store.close()
    with pytest.raises(StoreError, match=rf"{store.root / 'run.sqlite'} is damaged.*malformed"):
        with read_store(store.root):
            raise sqlite3.DatabaseError("database disk image is malformed")


def test_a_creation_killed_half_way_leaves_no_database_and_the_next_open_finishes(tmp_path, monkeypatch):
    import harness.store as store_module

    def killed(src, dst):
        raise KeyboardInterrupt  # stands in for SIGKILL between building the schema and the rename

    monkeypatch.setattr(store_module, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        RunStore(tmp_path / "run")
    assert not (tmp_path / "run" / "run.sqlite").exists()
    assert (tmp_path / "run" / "run.sqlite.creating").exists()  # the half-built one, never opened as the store
    monkeypatch.undo()
    store = RunStore(tmp_path / "run")
    assert store.get_meta("schema_version") == 1 and store.samples() == []
    store.close()
    assert not (tmp_path / "run" / "run.sqlite.creating").exists()


# --- no row dropped silently -----------------------------------------------------------------------------

def test_a_cell_that_cannot_be_stored_is_an_error_not_a_dropped_row(tmp_path, cell):
    store = RunStore(tmp_path / "run")
    nan_cell = cell.model_copy(update={"guidance_scale": float("nan")})  # SQLite stores NaN as NULL
    with pytest.raises(StoreError, match="cannot be stored.*guidance_scale"):
        store.add_cells([nan_cell], {})
    assert store.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0
    store.add_cells([cell], {})
    store.add_cells([cell], {})  # already stored: nothing to do, no error
    assert store.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
    store.close()


def test_a_sample_of_an_unrecorded_cell_is_refused(tmp_path, cell):
    store = RunStore(tmp_path / "run")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.write_sample(_record(cell), None, 16000)
    assert store.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
    store.close()
