"""End-to-end sweeps on the tiny checkpoints: store contents, resume, failures, kill and resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from harness.generate.sampling import HostAudio
from harness.generate.run import run_sweep
from harness.store import RunStore, StoreError


def _hashes(run_dir) -> dict[tuple, str]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT cell_id, prompt_id, seed, audio_sha256 FROM samples WHERE status='ok'")
    out = {(c, p, s): h for c, p, s, h in rows}
    db.close()
    return out


def test_sweep_stores_every_sample_and_resume_does_nothing(make_sweep, tmp_path):
    config = make_sweep(schedulers=["ddim", "euler"], steps=[2, 3])
    first = run_sweep(config, tmp_path / "run", progress=False)
    assert (first.planned, first.skipped, first.report.done, first.report.failed) == (16, 0, 16, 0)
    store = RunStore(tmp_path / "run")
    rows = store.samples()
    assert len(rows) == 16 and {r["status"] for r in rows} == {"ok"}
    assert all((tmp_path / "run" / r["audio_path"]).is_file() for r in rows)
    assert len({r["cell_id"] for r in rows}) == 4
    assert store.get_meta("environment")["versions"]["diffusers"]
    store.close()
    again = run_sweep(config, tmp_path / "run", progress=False)
    assert (again.planned, again.skipped, again.report.done) == (0, 16, 0)


def test_extending_seeds_reuses_stored_samples(make_sweep, tmp_path):
    run_sweep(make_sweep(seeds=[0]), tmp_path / "run", progress=False)
    before = _hashes(tmp_path / "run")
    more = run_sweep(make_sweep(seeds=[0, 1]), tmp_path / "run", progress=False)
    assert (more.planned, more.skipped) == (2, 2)
    after = _hashes(tmp_path / "run")
    assert all(after[k] == v for k, v in before.items())


def test_changed_setting_gets_new_cells(make_sweep, tmp_path):
    run_sweep(make_sweep(), tmp_path / "run", progress=False)
    changed = run_sweep(make_sweep(negative_prompts=["noise"]), tmp_path / "run", progress=False)
    assert changed.skipped == 0 and changed.report.done == 4
    assert len({k[0] for k in _hashes(tmp_path / "run")}) == 2


def test_batch_size_does_not_change_audio(make_sweep, tmp_path):
    one = run_sweep(make_sweep(batch_size=1), tmp_path / "a", progress=False)
    four = run_sweep(make_sweep(batch_size=4), tmp_path / "b", progress=False)
    assert one.report.done == four.report.done == 4
    a, b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    import soundfile as sf

    for ra, rb in zip(a.samples(), b.samples()):
        assert (ra["prompt_id"], ra["seed"]) == (rb["prompt_id"], rb["seed"])
        wa, _ = sf.read(tmp_path / "a" / ra["audio_path"])
        wb, _ = sf.read(tmp_path / "b" / rb["audio_path"])
        assert np.abs(wa - wb).max() <= 1e-5


def test_failing_sample_is_stored_and_sweep_goes_on(make_sweep, tmp_path, monkeypatch):
    import harness.generate.local as local

    real = local.generate_to_host

    def flaky(pipe, cond, seeds, *args, **kwargs):
        if 1 in seeds:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(pipe, cond, seeds, *args, **kwargs)

    monkeypatch.setattr(local, "generate_to_host", flaky)
    result = run_sweep(make_sweep(), tmp_path / "run", progress=False)
    assert (result.report.done, result.report.failed) == (2, 2)
    failed = [r for r in RunStore(tmp_path / "run").samples() if r["status"] == "failed"]
    assert {r["seed"] for r in failed} == {1}
    assert all("CUDA out of memory (simulated)" in r["error"] and r["audio_path"] is None for r in failed)
    # resume skips failures unless asked; --retry-failed redoes them
    assert run_sweep(make_sweep(), tmp_path / "run", progress=False).planned == 0
    monkeypatch.setattr(local, "generate_to_host", real)
    retried = run_sweep(make_sweep(), tmp_path / "run", retry_failed=True, progress=False)
    assert (retried.planned, retried.report.done) == (2, 2)
    assert {r["status"] for r in RunStore(tmp_path / "run").samples()} == {"ok"}


def test_nan_output_is_a_failed_flagged_sample(make_sweep, tmp_path, monkeypatch):
    import harness.generate.local as local

    real = local.generate_to_host

    def nan_for_seed_zero(pipe, cond, seeds, *args, **kwargs):
        audio = real(pipe, cond, seeds, *args, **kwargs).numpy().copy()
        audio[[i for i, s in enumerate(seeds) if s == 0]] = np.nan
        return HostAudio(torch.from_numpy(audio), audio.shape[-1])

    monkeypatch.setattr(local, "generate_to_host", nan_for_seed_zero)
    run_sweep(make_sweep(), tmp_path / "run", progress=False)
    rows = RunStore(tmp_path / "run").samples()
    bad = [r for r in rows if r["seed"] == 0]
    assert all(r["status"] == "failed" and "NaN" in r["error"] and '"nan_inf"' in r["flags"] for r in bad)
    assert all(r["status"] == "ok" for r in rows if r["seed"] == 1)


def test_unloadable_checkpoint_is_reported_not_stored(make_sweep, tmp_path):
    config = make_sweep(checkpoints=["tiny-audio", "cvssp/audioldm2-music"])
    result = run_sweep(config, tmp_path / "run", progress=False)
    assert result.report.done == 4
    (error,) = result.report.cell_errors.values()
    assert "cvssp/audioldm2-music" in error and "hf download" in error
    assert all(r["checkpoint"] == "tiny-audio" for r in RunStore(tmp_path / "run").samples())


def test_changed_prompt_text_is_refused(make_sweep, tmp_path):
    run_sweep(make_sweep(), tmp_path / "run", progress=False)
    prompts = tmp_path / "changed.jsonl"
    prompts.write_text('{"id": "sfx-dog-bark", "text": "a cat meows"}\n')
    with pytest.raises(StoreError, match="prompt text changed for ids sfx-dog-bark"):
        run_sweep(make_sweep(prompts={"set": str(prompts)}), tmp_path / "run", progress=False)


def test_speech_checkpoint_uses_prompts_with_transcription(make_sweep, tmp_path):
    result = run_sweep(make_sweep(checkpoints=["tiny-speech"], seeds=[0]), tmp_path / "run", progress=False)
    rows = RunStore(tmp_path / "run").samples()
    assert result.report.done == 2 and all(r["transcription"] for r in rows)


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def test_sigkill_then_resume_gives_the_uninterrupted_result(make_sweep, tmp_path):
    # Enough work (24 samples, 12 steps) that the kill lands mid-run even on a fast, idle machine.
    config = make_sweep(schedulers=["ddim", "euler-ancestral"], seeds=[0, 1, 2, 3, 4, 5], steps=[12], batch_size=2)
    reference = run_sweep(config, tmp_path / "reference", progress=False)
    assert reference.report.done == 24
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", config, "--run-dir", str(run_dir),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_safe_hashes(run_dir)) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _safe_hashes(run_dir)
    assert 5 <= len(partial) < 24, "the kill must land mid-run"
    resumed = run_sweep(config, run_dir, progress=False)
    assert resumed.skipped == len(partial)
    assert _hashes(run_dir) == _hashes(tmp_path / "reference")


def _safe_hashes(run_dir):
    try:
        return _hashes(run_dir)
    except sqlite3.Error:
        return {}


def test_second_writer_is_refused(make_sweep, tmp_path):
    from harness.store import acquire_lock

    lock = acquire_lock(tmp_path / "run")
    try:
        result = _cli("run", make_sweep(), "--run-dir", str(tmp_path / "run"))
        assert result.returncode == 2
        assert f"(pid {os.getpid()}) is writing to" in result.stderr
    finally:
        lock.release()


def test_cli_bad_config_is_one_line_exit_2(make_sweep):
    result = _cli("run", make_sweep(steps=[0]))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "steps" in result.stderr and "Traceback" not in result.stderr


def test_cli_run_prints_summary_and_folder(make_sweep, tmp_path):
    result = _cli("run", make_sweep(seeds=[0]), "--run-dir", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "run folder: " + str((tmp_path / "run").resolve()) in result.stdout
    assert "2 generated, 0 failed" in result.stdout


@pytest.mark.parametrize(("command", "needle"), [
    (["schedulers"], "dpmsolver++"), (["checkpoints", "list"], "anhnct/audioldm2_ljspeech"),
    (["prompts", "smoke"], "sfx-dog-bark"), (["--help"], "gpu-validate"),
    (["checkpoints", "info", "--like", "cvssp/audioldm2"], "346.9M"),
])
def test_cli_listings(command, needle):
    result = _cli(*command)
    assert result.returncode == 0, result.stderr
    assert needle in result.stdout
