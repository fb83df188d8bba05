"""Fault injection: repeated SIGKILLs, a full disk, failing cells, and shards + merge.

``HARNESS_KILL_ROUNDS`` sets how many times the kill test SIGKILLs a ``python -m harness run``
subprocess (default 3, to keep the suite fast); ``HARNESS_KILL_SEED`` seeds the kill points.
By hand, with the figures printed:

    HARNESS_KILL_ROUNDS=20 python -m pytest tests/test_fault_tolerance.py -k sigkill -s
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.plan.shard import Shard
from harness.generate.run import run_sweep
from harness.fileio import sha256_file
from harness.store import RunStore

KILL_ROUNDS = int(os.environ.get("HARNESS_KILL_ROUNDS", "3"))
KILL_SEED = int(os.environ.get("HARNESS_KILL_SEED", "0"))


def _hashes(run_dir: Path) -> dict[tuple, str]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    try:
        rows = db.execute("SELECT cell_id, prompt_id, seed, audio_sha256 FROM samples WHERE status='ok'")
        return {(c, p, s): h for c, p, s, h in rows}
    finally:
        db.close()


def _count(run_dir: Path) -> int:
    try:
        return len(_hashes(run_dir))
    except sqlite3.Error:
        return 0


def _audit(run_dir: Path) -> dict:
    """Rows vs files: duplicates, orphans, temporaries, rows whose file is missing or differs."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT cell_id, prompt_id, seed, audio_path, audio_sha256 FROM samples").fetchall()
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    files = {str(p.relative_to(run_dir)) for p in (run_dir / "audio").rglob("*") if p.is_file()}
    referenced = {r[3] for r in rows if r[3]}
    return {
        "rows": len(rows),
        "duplicated": len(rows) - len({r[:3] for r in rows}),
        "orphan_files": sorted(f for f in files - referenced if not f.endswith(".tmp")),
        "tmp_files": sorted(f for f in files if f.endswith(".tmp")),
        "bad_files": [r[3] for r in rows if r[3] and (r[3] not in files
                                                      or sha256_file(run_dir / r[3]) != r[4])],
        "integrity": integrity,
    }


# The harness CLI with its write path traced and slowed down: it logs "tmp" once a sample's
# temporary file is complete, "renamed" once it has its final name, "committed" once its row is
# in, and pauses after the first two, so random kills often land inside those windows.
_TRACED_RUN = """
import os, sys, time
import harness.fileio as fileio
import harness.store as store
trace = open(os.environ["HARNESS_KILL_TRACE"], "a", buffering=1)
pause = float(os.environ["HARNESS_KILL_PAUSE"])
real_replace, real_audio, real_sample = fileio.replace, store.RunStore._write_audio, store.RunStore.write_sample
def traced_replace(tmp, target):
    if str(target).endswith(".wav"):
        trace.write("tmp\\n"); time.sleep(pause)
    return real_replace(tmp, target)
def traced_audio(path, audio, rate):
    digest = real_audio(path, audio, rate)
    trace.write("renamed\\n"); time.sleep(pause)
    return digest
def traced_sample(self, record, audio, rate):
    real_sample(self, record, audio, rate)
    trace.write("committed\\n")
fileio.replace, store.RunStore._write_audio = traced_replace, staticmethod(traced_audio)
store.RunStore.write_sample = traced_sample
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _last_line(path: Path) -> str:
    lines = _lines(path)
    return lines[-1] if lines else "none"


def test_repeated_sigkill_then_resume_loses_and_duplicates_nothing(make_sweep, tmp_path):
    rng = random.Random(KILL_SEED)
    seeds = list(range(max(3, KILL_ROUNDS)))  # 2 batches of 2 samples per round, some left for the end
    config = make_sweep(schedulers=["ddim", "euler-ancestral"], steps=[4], seeds=seeds, batch_size=2)
    t0 = time.perf_counter()
    reference = run_sweep(config, tmp_path / "reference", progress=False)
    expected = _hashes(tmp_path / "reference")
    assert reference.report.done == len(expected) == 4 * len(seeds)
    per_batch = 2 * (time.perf_counter() - t0) / len(expected)  # generous: includes the pipeline load

    run_dir = tmp_path / "killed"
    started = time.perf_counter()
    rounds = []
    for round_index in range(KILL_ROUNDS):
        before = _count(run_dir)
        if before == len(expected):
            break
        mode = rng.choice(["startup", "plain", "plain", "write-window"])
        trace = tmp_path / f"round{round_index}.trace"
        args = ["run", config, "--run-dir", str(run_dir), "--no-progress"]
        command = [sys.executable, "-m", "harness", *args]  # exactly what a user runs
        if mode == "write-window":
            command = [sys.executable, "-c", _TRACED_RUN, *args]
        pause = rng.uniform(0.05, 0.3)
        log = open(tmp_path / f"round{round_index}.log", "w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={
            **os.environ, "PYTHONUNBUFFERED": "1", "HARNESS_KILL_TRACE": str(trace), "HARNESS_KILL_PAUSE": str(pause)})
        if mode == "startup":  # imports, lock, store recovery
            time.sleep(rng.uniform(0.0, 6.0))
        else:  # after a random number of new samples, at a random moment within a batch / a write
            share = max(1, (len(expected) - before) // (KILL_ROUNDS - round_index + 1))
            wait_for = rng.randint(1, share)
            if mode == "write-window":  # the wait_for-th write of this round has its tmp file complete

                def waiting() -> bool:
                    return _lines(trace).count("tmp") < wait_for
            else:  # the wait_for-th new sample of this round is committed

                def waiting() -> bool:
                    return _count(run_dir) < before + wait_for
            deadline = time.time() + 300
            while proc.poll() is None and waiting() and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 2 * pause if mode == "write-window" else per_batch))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        audit = _audit(run_dir) if (run_dir / "run.sqlite").exists() else None
        rounds.append({
            "mode": mode, "finished_first": finished, "stored_before": before, "stored_after": _count(run_dir),
            "killed_after": _last_line(trace) if mode == "write-window" else None,
            "tmp_left": len(audit["tmp_files"]) if audit else 0,
            "orphans_left": len(audit["orphan_files"]) if audit else 0,
            "rows_with_bad_file": len(audit["bad_files"]) if audit else 0,
        })
        assert rounds[-1]["rows_with_bad_file"] == 0, rounds[-1]  # even before any recovery
    resumed = run_sweep(config, run_dir, progress=False)  # the final, uninterrupted resume
    wall = time.perf_counter() - started
    final = _hashes(run_dir)
    audit = _audit(run_dir)
    figures = {
        "kill_rounds": len(rounds),
        "kills_while_running": sum(not r["finished_first"] and r["stored_after"] < len(expected) for r in rounds),
        "kills_during_startup": sum(r["mode"] == "startup" and r["stored_after"] == r["stored_before"]
                                    for r in rounds),
        "kills_after_tmp_before_rename": sum(r["killed_after"] == "tmp" for r in rounds),
        "kills_after_rename_before_commit": sum(r["killed_after"] == "renamed" for r in rounds),
        "tmp_files_left_by_kills": sum(r["tmp_left"] for r in rounds),
        "orphan_files_left_by_kills": sum(r["orphans_left"] for r in rounds),
        "samples": len(expected), "stored_by_final_resume": resumed.report.done,
        "lost": len(set(expected) - set(final)), "extra": len(set(final) - set(expected)),
        "duplicated": audit["duplicated"], "identical": final == expected,
        "orphan_files": len(audit["orphan_files"]), "tmp_files": len(audit["tmp_files"]),
        "wall_s": round(wall, 1), "seed": KILL_SEED,
    }
    print("\nkill-and-resume figures: " + json.dumps(figures))
    if os.environ.get("HARNESS_KILL_REPORT"):
        Path(os.environ["HARNESS_KILL_REPORT"]).write_text(json.dumps({**figures, "rounds": rounds}, indent=1))
    assert rounds and figures["kills_while_running"] >= 1, rounds
    assert figures["lost"] == figures["extra"] == figures["duplicated"] == 0
    assert final == expected
    assert audit["orphan_files"] == [] and audit["tmp_files"] == [] and audit["bad_files"] == []
    assert audit["integrity"] == "ok" and audit["rows"] == len(expected)


def test_disk_full_mid_run_leaves_no_row_pointing_at_a_partial_file(make_sweep, tmp_path, monkeypatch):
    import harness.store as store_module

    config = make_sweep(seeds=[0, 1, 2])  # 6 samples, 3 batches
    run_sweep(config, tmp_path / "reference", progress=False)
    real, calls = store_module.wavfile.write, []

    def fills_the_disk(fh, rate, data):
        calls.append(1)
        if len(calls) == 4:
            fh.write(b"RIFF\x00\x00 half a header")
            raise OSError(28, "No space left on device")
        return real(fh, rate, data)

    monkeypatch.setattr(store_module.wavfile, "write", fills_the_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run_sweep(config, tmp_path / "run", progress=False)
    partial = [p for p in (tmp_path / "run" / "audio").rglob("*") if p.is_file()]
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    rows = db.execute("SELECT audio_path, audio_sha256 FROM samples").fetchall()
    db.close()
    assert len(rows) == 3  # the rows before the failed write, each with its complete file
    assert all(sha256_file(tmp_path / "run" / path) == digest for path, digest in rows)
    assert sorted(str(p.relative_to(tmp_path / "run")) for p in partial) == sorted(p for p, _ in rows)
    monkeypatch.setattr(store_module.wavfile, "write", real)
    resumed = run_sweep(config, tmp_path / "run", progress=False)  # the lock was released
    assert (resumed.skipped, resumed.report.done) == (3, 3)
    assert _hashes(tmp_path / "run") == _hashes(tmp_path / "reference")
    assert _audit(tmp_path / "run")["tmp_files"] == []


def test_failing_cell_never_blocks_the_others_and_retry_failed_redoes_it(make_sweep, tmp_path, monkeypatch,
                                                                         capsys):
    import harness.generate.local as local
    from harness.cli import main

    real = local.generate_to_host

    def two_step_cell_fails(pipe, cond, seeds, steps, *args, **kwargs):
        if steps == 2:
            raise RuntimeError("simulated failure in the 2-step cell")
        return real(pipe, cond, seeds, steps, *args, **kwargs)

    config = make_sweep(steps=[2, 3])  # the failing cell comes first
    args = ["run", config, "--run-dir", str(tmp_path / "run"), "--no-progress"]
    monkeypatch.setattr(local, "generate_to_host", two_step_cell_fails)
    assert main(args) == 1  # samples failed: exit 1, and the other cell is complete
    rows = RunStore(tmp_path / "run").samples()
    by_steps = {s: [r for r in rows if r["steps"] == s] for s in (2, 3)}
    assert len(by_steps[2]) == len(by_steps[3]) == 4
    assert all(r["status"] == "failed" and "simulated failure in the 2-step cell" in r["error"] for r in by_steps[2])
    assert all(r["status"] == "ok" for r in by_steps[3])
    assert main(args) == 0 and "0 samples planned, 8 already stored" in capsys.readouterr().out
    monkeypatch.setattr(local, "generate_to_host", real)
    assert main(args + ["--retry-failed"]) == 0
    assert "4 samples planned, 4 already stored, 4 generated, 0 failed" in capsys.readouterr().out
    assert {r["status"] for r in RunStore(tmp_path / "run").samples()} == {"ok"}


def test_two_shards_and_merge_equal_a_single_run(make_sweep, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    config = make_sweep(schedulers=["ddim", "euler-ancestral"], seeds=[0, 1, 2], batch_size=2)
    single = run_sweep(config, tmp_path / "single", progress=False)
    monkeypatch.chdir(tmp_path)  # shards go to the default runs/t/shard-i-of-2
    for i in (1, 2):
        assert main(["run", config, "--shard", f"{i}/2", "--no-progress"]) == 0
        assert f"shard {i}/2: " in capsys.readouterr().out
    shards = [Path("runs/t/shard-1-of-2"), Path("runs/t/shard-2-of-2")]
    parts = [_hashes(s) for s in shards]
    assert all(parts) and not set(parts[0]) & set(parts[1])  # disjoint, neither empty
    assert main(["merge", "merged", *map(str, shards)]) == 0
    assert _hashes(Path("merged")) == _hashes(tmp_path / "single")
    assert len(_hashes(Path("merged"))) == single.report.done == 12
    audit = _audit(Path("merged"))
    assert audit["orphan_files"] == audit["tmp_files"] == audit["bad_files"] == []
    # resuming a shard redoes nothing: its part does not depend on what is stored
    assert run_sweep(config, shards[0], progress=False, shard=Shard(1, 2)).planned == 0
