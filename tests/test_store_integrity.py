"""Stored paths stay inside the run folder; stored audio is checked against its sha256 by every
reader (score, compare, report, merge), ``verify`` checks a folder, ``run`` regenerates damaged samples."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import numpy as np
import pytest

from harness.cli import main
from harness.environment import fingerprint
from harness.spec import expand, parse_spec
from harness.store import RunStore, SampleRecord, StoreError, file_problem, inside_run
import harness.store as store_module

SECRET = "not for the report"


@pytest.fixture(scope="module")
def cells():
    spec = parse_spec({"name": "t", "checkpoints": ["tiny-audio"], "steps": [2, 3], "prompts": {"set": "smoke"}})
    return expand(spec, "cpu")


def _run_folder(path, cells, n=3):
    """Two cells, ``n`` ok samples each (distinct noise), written through the store."""
    store = RunStore(path)
    store.add_cells(cells, {})
    store.set_meta("environment", fingerprint())
    rng = np.random.default_rng(0)
    for cell in cells:
        for i in range(n):
            store.write_sample(SampleRecord(cell.id, f"p{i}", f"prompt {i}", None, 0),
                               rng.uniform(-0.5, 0.5, 1600).astype(np.float32), 16000)
    store.close()
    return path


def _set(run, sql, *args):
    db = sqlite3.connect(run / "run.sqlite")
    with db:
        db.execute(sql, args)
    db.close()


def _rows(run):
    db = sqlite3.connect(run / "run.sqlite")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM samples ORDER BY cell_id, prompt_id, seed")]
    db.close()
    return rows


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


# --- 1: paths read from a store lie inside the run folder ---------------------------------------

@pytest.mark.parametrize("rel", ["/etc/passwd", "../secret.txt", "audio/../../secret.txt", "audio/a\x00b.wav",
                                 "", "run.sqlite", "C:\\Windows\\win.ini", "\\\\server\\share\\x.wav"])
def test_paths_outside_the_audio_folder_are_refused(tmp_path, rel):
    (tmp_path / "audio").mkdir()
    with pytest.raises(StoreError, match="outside the run folder's audio/ folder"):
        inside_run(tmp_path, rel)


def test_symlinks_may_not_lead_out_of_the_run_folder(tmp_path, secret_file):
    audio = tmp_path / "run" / "audio" / "c"
    audio.mkdir(parents=True)
    (audio / "out.wav").symlink_to(secret_file)
    (audio / "real.wav").write_bytes(b"x")
    (audio / "in.wav").symlink_to(audio / "real.wav")
    (audio / "loop.wav").symlink_to(audio / "loop.wav")
    assert inside_run(tmp_path / "run", "audio/c/in.wav") == audio / "in.wav"
    for name in ("out.wav", "loop.wav"):
        with pytest.raises(StoreError, match="outside"):
            inside_run(tmp_path / "run", f"audio/c/{name}")


def test_report_refuses_a_row_naming_a_file_outside_the_run(tmp_path, cells, secret_file, capsys):
    run = _run_folder(tmp_path / "run", cells)
    digest = hashlib.sha256(secret_file.read_bytes()).hexdigest()
    _set(run, "UPDATE samples SET audio_path=?, audio_sha256=? WHERE prompt_id='p0'", str(secret_file), digest)
    out = tmp_path / "report"
    code = main(["report", str(run), "--out", str(out), "--format", "html"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(secret_file) in err and "outside the run folder" in err
    copied = [p for p in out.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert copied == []


@pytest.mark.parametrize("command", ["score", "compare"])
def test_score_and_compare_refuse_a_row_naming_a_file_outside_the_run(tmp_path, cells, secret_file, capsys,
                                                                       command):
    run = _run_folder(tmp_path / "run", cells)
    _set(run, "UPDATE samples SET audio_path=? WHERE prompt_id='p1'", "audio/../../secret.txt")
    a, b = cells[0].id, cells[1].id
    argv = (["score", str(run), "--reference", f"cell:{a}", "--bootstrap", "0", "--no-progress"]
            if command == "score" else ["compare", str(run), a, b, "--reference", f"cell:{a}", "--permutations", "9"])
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "audio/../../secret.txt" in err and "outside the run folder" in err and len(err.strip().splitlines()) == 1


def test_merge_refuses_a_row_naming_a_file_outside_the_run(tmp_path, cells, secret_file, capsys):
    run = _run_folder(tmp_path / "run", cells)
    _set(run, "UPDATE samples SET audio_path=? WHERE prompt_id='p1'", str(secret_file))
    assert main(["merge", str(tmp_path / "out"), str(run)]) == 2
    assert "outside the run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- 2: one file per (cell, prompt id, seed) ---------------------------------------------------------

def test_a_raw_id_equal_to_another_ids_sanitised_name_gets_its_own_file(tmp_path, cells):
    store = RunStore(tmp_path / "run")
    store.add_cells(cells[:1], {})
    old_name = "a_b-" + hashlib.sha256(b"a/b").hexdigest()[:8]  # what the old naming made of "a/b"
    ids = ["a/b", old_name, "a_b", "A_b", "con", "x" * 300, "x" * 301]
    for i, pid in enumerate(ids):
        store.write_sample(SampleRecord(cells[0].id, pid, pid, None, 0), np.full(160, i / 10, np.float32), 16000)
    rows = store.samples()
    paths = [r["audio_path"] for r in rows]
    assert len(rows) == len(ids) and len({p.lower() for p in paths}) == len(ids)  # distinct, even ignoring case
    assert all(file_problem(store.root / r["audio_path"], r["audio_sha256"]) is None for r in rows)
    assert all(len(os.path.basename(p)) < 100 for p in paths)
    store.close()


# --- 3: stored audio is checked against its sha256 ---------------------------------------------------

def _damage(run):
    """Delete p0's file and flip 100 bytes of p1's (first cell); returns their paths."""
    rows = [r for r in _rows(run) if r["cell_id"] == _rows(run)[0]["cell_id"]]
    gone, changed = run / rows[0]["audio_path"], run / rows[1]["audio_path"]
    gone.unlink()
    data = bytearray(changed.read_bytes())
    for i in range(200, 300):
        data[i] ^= 0xFF
    changed.write_bytes(bytes(data))
    return gone, changed


def test_score_refuses_missing_or_changed_audio_naming_them(tmp_path, cells, capsys):
    run = _run_folder(tmp_path / "run", cells)
    gone, changed = _damage(run)
    code = main(["score", str(run), "--reference", f"cell:{cells[1].id}", "--bootstrap", "0", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "2 stored audio file(s) are missing or changed" in err and str(gone) in err and str(changed) in err
    assert "verify" in err
    db = sqlite3.connect(run / "run.sqlite")
    assert db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0  # nothing scored
    db.close()


def test_report_does_not_serve_changed_audio(tmp_path, cells, capsys):
    run = _run_folder(tmp_path / "run", cells, n=1)
    row = _rows(run)[0]
    path = run / row["audio_path"]
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"
    path.write_bytes(bytes(data))
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--format", "html", "--listen", "1"]) == 0
    err = capsys.readouterr().err
    assert "audio not served" in err and str(path) in err and "changed since it was stored" in err
    assert not (out / "audio" / f"{row['audio_sha256']}.wav").exists()
    served = list((out / "audio").glob("*.wav"))
    assert len(served) == 1 and hashlib.sha256(served[0].read_bytes()).hexdigest() == served[0].stem
    assert "changed since it was stored" in (out / "index.html").read_text()


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path, cells, monkeypatch):
    run = _run_folder(tmp_path / "run", cells, n=1)
    row = _rows(run)[0]
    path = run / row["audio_path"]
    os.utime(path, ns=(10**18, 10**18))  # written a while ago
    calls = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: calls.append(p) or real(p))
    assert file_problem(path, row["audio_sha256"]) is None
    assert file_problem(path, row["audio_sha256"]) is None
    assert len(calls) == 1
    store_module._VERDICTS.flush()
    monkeypatch.setattr(store_module._VERDICTS, "memory", set())  # a later process: only the cache file
    assert file_problem(path, row["audio_sha256"]) is None
    assert len(calls) == 1
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # same size, new content and mtime
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    assert "changed" in file_problem(path, row["audio_sha256"])
    assert len(calls) == 2


def test_a_file_changed_moments_ago_is_hashed_every_time(tmp_path, cells, monkeypatch):
    # Coarse mtime clocks: a same-size rewrite within the same tick would keep the mtime.
    run = _run_folder(tmp_path / "run", cells, n=1)
    row = _rows(run)[0]
    calls = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(2):
        assert file_problem(run / row["audio_path"], row["audio_sha256"]) is None
    assert len(calls) == 2


def test_a_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert file_problem(fifo, "0" * 64) == f"{fifo} is not a regular file"


def test_verify_names_every_problem_and_exits_1(tmp_path, cells, capsys):
    run = _run_folder(tmp_path / "run", cells)
    assert main(["verify", str(run), "--no-progress"]) == 0
    assert "6 audio files checked: all intact" in capsys.readouterr().out
    gone, changed = _damage(run)
    _set(run, "UPDATE samples SET audio_path='/etc/passwd' WHERE prompt_id='p2' AND cell_id=?", cells[1].id)
    (run / "audio" / "stray.wav").write_bytes(b"left by a killed merge")
    assert main(["verify", str(run), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"{gone} is missing" in out and f"{changed} changed since it was stored" in out
    assert "'/etc/passwd' lies outside" in out and "3 problem(s)" in out
    assert "2 audio file(s) no sample row names" in out  # the stray file and p2's own


def test_verify_of_a_folder_that_is_no_run_is_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--no-progress"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_run_regenerates_missing_or_changed_samples_after_saying_so(make_sweep, tmp_path, capsys):
    from harness.generate.run import run_sweep

    config = make_sweep()
    first = run_sweep(config, tmp_path / "run", progress=False)
    assert first.report.done == 4
    before = {(r["cell_id"], r["prompt_id"], r["seed"]): r["audio_sha256"] for r in _rows(tmp_path / "run")}
    gone, changed = _damage(tmp_path / "run")
    capsys.readouterr()
    again = run_sweep(config, tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "2 stored sample(s) have a missing or changed audio file and will be generated again" in err
    assert str(gone) in err and str(changed) in err
    assert (again.skipped, again.report.done, len(again.damaged)) == (2, 2, 2)
    after = {(r["cell_id"], r["prompt_id"], r["seed"]): r["audio_sha256"] for r in _rows(tmp_path / "run")}
    assert after == before  # regenerated bit for bit
    assert main(["verify", str(tmp_path / "run"), "--no-progress"]) == 0


def test_report_serves_the_bytes_it_checked(tmp_path, cells, monkeypatch):
    # A file changed between the check and the copy: the copy is checked again, never served changed.
    from harness.report.build import build_report

    run = _run_folder(tmp_path / "run", cells, n=1)
    row = _rows(run)[0]
    path = run / row["audio_path"]
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    monkeypatch.setattr("harness.report.build.file_problem", lambda *a: None)  # the check ran before the change
    result = build_report([run], tmp_path / "report", formats="html", listen=1)
    assert any(f"{path} changed while it was read" in w for w in result.warnings)
    assert not (tmp_path / "report" / "audio" / f"{row['audio_sha256']}.wav").exists()


def test_any_stored_path_is_refused_or_resolves_inside_the_audio_folder(tmp_path, secret_file):
    # Seeded mutations of stored paths: every accepted one must lie inside run/audio after
    # following symlinks; everything else is one StoreError.
    run = tmp_path / "run"
    (run / "audio" / "c").mkdir(parents=True)
    (run / "audio" / "c" / "up").symlink_to(tmp_path)
    (run / "audio" / "c" / "x.wav").write_bytes(b"x")
    parts = ["audio", "c", "x.wav", "up", "..", ".", "", "/", "\\", "\x00", "C:", "~", "secret.txt", "run.sqlite"]
    rng = np.random.default_rng(0)
    audio = (run / "audio").resolve()
    accepted = refused = 0
    for _ in range(500):
        rel = "/".join(rng.choice(parts, size=rng.integers(1, 6)))
        try:
            path = inside_run(run, rel)
        except StoreError as err:
            refused += 1
            assert "outside the run folder" in str(err) and "\n" not in str(err)
            continue
        accepted += 1
        assert path.resolve().is_relative_to(audio), rel
    assert accepted > 20 and refused > 20


def test_old_verdicts_are_pruned_and_a_cache_from_before_pruning_starts_afresh(tmp_path, monkeypatch):
    import sqlite3
    import time

    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    path = tmp_path / "cache" / store_module.VERDICTS_FILE
    old_schema = sqlite3.connect(path)  # the table as it was before verdicts carried a time
    old_schema.execute("CREATE TABLE verified (path TEXT, size INTEGER, mtime_ns INTEGER, inode INTEGER, "
                       "sha256 TEXT, PRIMARY KEY (path, size, mtime_ns, inode, sha256)) WITHOUT ROWID")
    old_schema.execute("INSERT INTO verified VALUES ('/x', 1, 1, 1, 'a')")
    old_schema.commit()
    old_schema.close()
    fresh, stale = ("/fresh.wav", 10, 1, 2, "f"), ("/stale.wav", 10, 1, 3, "s")
    verdicts = store_module._Verdicts()
    assert not verdicts.known(("/x", 1, 1, 1, "a"))  # the old table was dropped, not misread
    verdicts.add(fresh)
    verdicts.add(stale)
    verdicts.flush()
    with verdicts.db:
        verdicts.db.execute("UPDATE verified SET added_s = ? WHERE path = '/stale.wav'",
                            (time.time() - store_module.VERDICT_MAX_AGE_S - 60,))
    later = store_module._Verdicts()  # a later process opens the file and prunes it
    assert later.known(fresh) and not later.known(stale)
    assert later.db.execute("SELECT COUNT(*) FROM verified").fetchone()[0] == 1
