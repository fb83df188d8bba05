"""Merging run folders: union, idempotence, conflicts (exit 2, nothing merged), environments."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from harness.spec import expand, parse_spec
from harness.environment import fingerprint
from harness.merge import MergeError, merge_runs
from harness.fileio import sha256_file
from harness.store import RunStore, SampleRecord


@pytest.fixture(scope="module")
def cells():
    spec = parse_spec({"name": "t", "checkpoints": ["tiny-audio"], "steps": [2, 3], "prompts": {"set": "smoke"}})
    return expand(spec, "cpu")


@pytest.fixture(scope="module")
def env():
    return fingerprint()


def _folder(path, cells, samples, env, shard=None):
    """A run folder with ``samples``: (cell index, prompt id, seed, audio value or None for failed)."""
    store = RunStore(path)
    store.add_cells(cells, {"batch_size": 1})
    store.set_meta("environment", env)
    if shard:
        store.set_meta("shard", {"shard": shard, "plan": "p", "batch_size": 1})
    for ci, pid, seed, value in samples:
        record = SampleRecord(cells[ci].id, pid, f"text of {pid}", None, seed,
                              status="ok" if value is not None else "failed",
                              error=None if value is not None else "RuntimeError: boom")
        audio = None if value is None else np.full(160, value, np.float32)
        store.write_sample(record, audio, 16000)
    store.close()
    return path


def _dump(path):
    db = sqlite3.connect(path / "run.sqlite")
    out = {t: sorted(map(tuple, db.execute(f"SELECT * FROM {t}")), key=repr)
           for t in ("meta", "cells", "samples", "measurements")}
    db.close()
    files = {str(p.relative_to(path)): sha256_file(p) for p in sorted((path / "audio").rglob("*")) if p.is_file()}
    return out, files


def test_merge_unions_folders_and_is_idempotent(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1), (0, "p1", 1, 0.2)], env, shard="1/2")
    b = _folder(tmp_path / "b", cells, [(1, "p1", 0, 0.3), (0, "p2", 0, None)], env, shard="2/2")
    result = merge_runs(tmp_path / "out", [a, b])
    assert (result.samples_added, result.cells_added, result.files_linked + result.files_copied) == (4, 2, 3)
    assert result.warnings == []
    out = RunStore(tmp_path / "out")
    rows = out.samples()
    assert len(rows) == 4 and sorted(r["status"] for r in rows) == ["failed", "ok", "ok", "ok"]
    for r in rows:
        if r["status"] == "ok":
            assert not r["audio_path"].startswith("/")
            assert sha256_file(tmp_path / "out" / r["audio_path"]) == r["audio_sha256"]
    assert out.get_meta("environment") == env
    assert {v["shard"] for v in out.get_meta("merged_from").values()} == {"1/2", "2/2"}
    out.close()
    first = _dump(tmp_path / "out")
    again = merge_runs(tmp_path / "out", [a, b])
    assert (again.samples_added, again.samples_unchanged, again.cells_added) == (0, 4, 0)
    assert _dump(tmp_path / "out") == first
    assert [p for p in (tmp_path / "out").rglob("*.tmp")] == []


def test_failed_sample_is_replaced_by_an_ok_one_in_either_order(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, None)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 0, 0.5)], env)
    for name, order in [("ab", [a, b]), ("ba", [b, a])]:
        merge_runs(tmp_path / name, order)
        (row,) = RunStore(tmp_path / name).samples()
        assert row["status"] == "ok"
    # and an OUT holding the failure gets the ok row on a later merge
    merge_runs(tmp_path / "later", [a])
    result = merge_runs(tmp_path / "later", [b])
    assert result.samples_replaced == 1
    assert RunStore(tmp_path / "later").samples()[0]["status"] == "ok"


def test_conflicting_audio_is_an_error_naming_the_samples_and_nothing_is_merged(tmp_path, cells, env):
    same = [(0, "p1", s, 0.1 * s) for s in range(3)]
    a = _folder(tmp_path / "a", cells, same + [(0, "p2", s, 0.1) for s in range(8)], env)
    b = _folder(tmp_path / "b", cells, same + [(0, "p2", s, 0.2) for s in range(8)] + [(1, "p3", 0, 0.3)], env)
    with pytest.raises(MergeError) as err:
        merge_runs(tmp_path / "out", [a, b])
    message = str(err.value)
    assert message.startswith("8 samples have different audio")
    assert f"{cells[0].id}/p2/0" in message and "and 3 more" in message and "nothing was merged" in message
    assert not (tmp_path / "out").exists()
    # an existing OUT is left exactly as it was
    merge_runs(tmp_path / "out", [a])
    before = _dump(tmp_path / "out")
    with pytest.raises(MergeError):
        merge_runs(tmp_path / "out", [b])
    assert _dump(tmp_path / "out") == before


def test_cli_merge_conflict_is_exit_2(tmp_path, cells, env, capsys):
    from harness.cli import main

    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 0, 0.2)], env)
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "audioldm2-harness merge: error: 1 samples have different audio" in err
    assert f"{cells[0].id}/p1/0" in err
    assert main(["merge", str(tmp_path / "out"), str(a)]) == 0
    assert "1 samples added" in capsys.readouterr().out


def test_environment_mismatch_needs_allow(tmp_path, cells, env):
    other = {**env, "versions": {**env["versions"], "torch": "0.0.1"}, "git_commit": "deadbeef"}
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 1, 0.1)], other)
    with pytest.raises(MergeError, match=r"different environments .*git commit: .* != deadbeef.*torch: .* != 0\.0\.1"):
        merge_runs(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()
    result = merge_runs(tmp_path / "out", [a, b], allow_env_mismatch=True)
    assert result.samples_added == 2 and "different environments" in result.warnings[0]
    recorded = RunStore(tmp_path / "out").get_meta("merged_from")
    assert {v["environment"]["git commit"] for v in recorded.values()} == {env["git_commit"], "deadbeef"}


def test_device_is_part_of_the_environment(tmp_path, cells, env):
    gpu = {**env, "gpu": "NVIDIA H100", "cuda_available": True}
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 1, 0.1)], gpu)
    with pytest.raises(MergeError, match="device: cpu != NVIDIA H100"):
        merge_runs(tmp_path / "out", [a, b])


def test_corrupt_or_missing_audio_is_refused(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1), (0, "p1", 1, 0.2)], env)
    rows = RunStore(a).samples()
    (a / rows[0]["audio_path"]).write_bytes(b"not the audio")
    (a / rows[1]["audio_path"]).unlink()
    with pytest.raises(MergeError, match="2 audio files cannot be merged.*changed since it was stored.*missing"):
        merge_runs(tmp_path / "out", [a])
    assert not (tmp_path / "out").exists()


def test_copy_mode_and_prompt_text_conflict(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    result = merge_runs(tmp_path / "out", [a], copy=True)
    assert (result.files_copied, result.files_linked) == (1, 0)
    row = RunStore(tmp_path / "out").samples()[0]
    assert (tmp_path / "out" / row["audio_path"]).stat().st_ino != (a / row["audio_path"]).stat().st_ino
    b = _folder(tmp_path / "b", cells, [(0, "p1", 1, 0.1)], env)
    db = sqlite3.connect(b / "run.sqlite")
    db.execute("UPDATE samples SET prompt='another text'")
    db.commit()
    db.close()
    with pytest.raises(MergeError, match="1 prompt ids have different texts in different folders: p1"):
        merge_runs(tmp_path / "out", [b])


def test_missing_shards_are_reported(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env, shard="1/3")
    result = merge_runs(tmp_path / "out", [a])
    assert any("shards 2/3, 3/3 not merged yet" in w for w in result.warnings)


def test_output_cannot_be_an_input(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    with pytest.raises(MergeError, match="cannot also be one of the folders"):
        merge_runs(a, [a])
    with pytest.raises(MergeError, match="not a run folder"):
        merge_runs(tmp_path / "out", [tmp_path / "nothing"])


def test_tables_merge_does_not_know_are_reported_not_merged(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    db = sqlite3.connect(a / "run.sqlite")
    db.execute("CREATE TABLE scores_of_a_shard (x)")
    db.execute("INSERT INTO scores_of_a_shard VALUES (1)")
    db.commit()
    db.close()
    result = merge_runs(tmp_path / "out", [a])
    assert any(w.startswith("not merged: 1 scores_of_a_shard rows") for w in result.warnings)


def test_a_folder_still_being_written_merges_what_it_committed(tmp_path, cells, env):
    live = RunStore(tmp_path / "live")  # its writer keeps the WAL open and un-checkpointed
    live.add_cells(cells, {"batch_size": 1})
    live.set_meta("environment", env)
    live.write_sample(SampleRecord(cells[0].id, "p1", "text of p1", None, 0), np.zeros(160, np.float32), 16000)
    assert (tmp_path / "live" / "run.sqlite-wal").exists()
    try:
        result = merge_runs(tmp_path / "out", [tmp_path / "live"])
        assert result.samples_added == 1
        live.write_sample(SampleRecord(cells[0].id, "p1", "text of p1", None, 1), np.ones(160, np.float32), 16000)
        assert merge_runs(tmp_path / "out", [tmp_path / "live"]).samples_added == 1  # the next one
    finally:
        live.close()


def test_the_same_sample_made_in_another_batch_is_not_a_conflict(tmp_path, cells, env):
    # Batched float32 kernels round differently: the same sample differs by ~5e-7 between batches.
    near = np.float32(0.1) + np.float32(5e-7)
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1), (0, "p1", 1, 0.2)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 0, float(near)), (0, "p2", 0, 0.3)], env)
    assert RunStore(a).samples()[0]["audio_sha256"] != RunStore(b).samples()[0]["audio_sha256"]
    result = merge_runs(tmp_path / "out", [a, b])
    assert result.samples_added == 3
    warning = next(w for w in result.warnings if "different batch" in w)
    assert warning.startswith("1 samples differ in their bits but agree within 1e-05 (largest difference 5e-07)")
    assert f"{cells[0].id}/p1/0 (kept {a}, not {b})" in warning
    kept = RunStore(tmp_path / "out").samples()[0]
    assert kept["audio_sha256"] == RunStore(a).samples()[0]["audio_sha256"]
    assert sha256_file(tmp_path / "out" / kept["audio_path"]) == kept["audio_sha256"]


def test_audio_beyond_the_batch_tolerance_is_still_a_conflict(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    b = _folder(tmp_path / "b", cells, [(0, "p1", 0, 0.1 + 2e-5)], env)
    with pytest.raises(MergeError, match="1 samples have different audio"):
        merge_runs(tmp_path / "out", [a, b])


def test_a_merge_killed_while_creating_its_output_is_finished_by_running_it_again(tmp_path, cells, env,
                                                                                    monkeypatch):
    import harness.store as store_module

    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1), (1, "p1", 0, 0.2)], env)
    merge_runs(tmp_path / "whole", [a])

    def killed(src, dst):
        raise KeyboardInterrupt  # SIGKILL in the first moments: the schema built, not yet in place

    monkeypatch.setattr(store_module, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        merge_runs(tmp_path / "out", [a])
    monkeypatch.undo()
    merge_runs(tmp_path / "out", [a])
    merged, whole = _dump(tmp_path / "out"), _dump(tmp_path / "whole")
    strip = lambda d: {t: [r for r in rows if t != "meta" or r[0] != "merged_from"] for t, rows in d[0].items()}
    assert strip(merged) == strip(whole) and merged[1] == whole[1]


def test_an_output_left_without_tables_is_named_with_the_way_out(tmp_path, cells, env):
    a = _folder(tmp_path / "a", cells, [(0, "p1", 0, 0.1)], env)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.sqlite").write_bytes(b"")  # what an older harness killed early left
    with pytest.raises(MergeError, match=r"out/run.sqlite holds no run.*Delete it"):
        merge_runs(tmp_path / "out", [a])
