"""`transcribe`: Whisper (tiny-whisper) transcripts of speech samples, cached by content, scored
as WER/CER rows that report and gate read as `wer:<model>` / `cer:<model>` (lower is better)."""

from __future__ import annotations

import shutil

import jiwer
import numpy as np
import pytest
import torch

from harness.generate.run import run_sweep
from harness.score.asr.transcribe import TranscriptCache, transcribe_run
from harness.score.asr.whisper import Transcript, WhisperTranscriber
from harness.score.metrics.wer import normalise
from harness.store import RunStore


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory, sweep_writer):
    folder = tmp_path_factory.mktemp("transcribe")
    config = sweep_writer(folder / "sweep.toml", checkpoints=["tiny-speech", "tiny-audio"], seeds=[0, 1],
                          prompts={"set": "smoke"})
    run_sweep(config, folder / "run", progress=False)
    result = transcribe_run(folder / "run", "tiny-whisper", device="cpu", cache_dir=folder / "cache", bootstrap=200)
    return folder, result


def test_rows_per_speech_cell_equal_jiwer_on_the_stored_transcripts(speech_run):
    folder, result = speech_run
    store = RunStore.read_only(folder / "run")
    speech_cells = {s["cell_id"] for s in store.samples() if s["checkpoint"] == "tiny-speech"}
    rows = {(r["cell_id"], r["metric"]): r for r in store.metrics()}
    assert {c for c, _ in rows} == speech_cells and len(result.skipped_cells) == 1  # the tiny-audio cell
    for cell in speech_cells:
        wer, cer = rows[(cell, "wer")], rows[(cell, "cer")]
        assert wer["embedder"] == "tiny-whisper" and wer["reference_id"] == "transcriptions"
        listing = wer["details"]["transcripts"]
        assert len(listing) == wer["n"] == 6  # 3 speech prompts x 2 seeds
        refs = [normalise(s) for s in _transcriptions(store, cell, listing)]
        hyps = [t["hypothesis"] for t in listing]
        assert [t["reference"] for t in listing] == refs
        assert wer["value"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
        assert cer["value"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
        assert [t["wer"] for t in listing] == sorted((t["wer"] for t in listing), reverse=True)  # worst first
        assert sorted(p[2] for p in wer["details"]["per_sample"]) == sorted(t["wer"] for t in listing)
        assert wer["details"]["identity"]["decoding"]["language"] == "en"


def _transcriptions(store, cell, listing):
    by_key = {(s["prompt_id"], s["seed"]): s["transcription"] for s in store.samples() if s["cell_id"] == cell}
    return [by_key[(t["prompt_id"], t["seed"])] for t in listing]


def test_transcripts_are_cached_by_audio_content(speech_run, tmp_path):
    folder, first = speech_run
    assert first.transcribed == 6 and first.cached == 0
    again = transcribe_run(folder / "run", "tiny-whisper", device="cpu", cache_dir=folder / "cache", bootstrap=0)
    assert again.transcribed == 0 and again.cached == 6
    assert all(r["ci_low"] is None for r in again.rows)  # --bootstrap 0: no intervals
    # A copy of the run (other paths, same audio) hits the same cache entries.
    shutil.copytree(folder / "run", tmp_path / "copy")
    copied = transcribe_run(tmp_path / "copy", "tiny-whisper", device="cpu", cache_dir=folder / "cache", bootstrap=0)
    assert copied.cached == 6


def test_cache_is_keyed_by_content_and_identity(tmp_path):
    cache = TranscriptCache(tmp_path)
    cache.put("tiny-whisper-aaaa", "ab" * 32, Transcript("hello", 0.1, ()))
    assert cache.get("tiny-whisper-aaaa", "ab" * 32) == Transcript("hello", 0.1, ())
    assert cache.get("tiny-whisper-bbbb", "ab" * 32) is None and cache.get("tiny-whisper-aaaa", "cd" * 32) is None


def test_silence_is_non_speech_without_a_model_call():
    asr = WhisperTranscriber("no/such-model", device="cpu")  # never loaded: silent clips skip the model
    out = asr.transcribe([np.zeros(16000, np.float32), np.full(100, 1e-5, np.float32)])
    assert out == [Transcript("", None, ("non_speech",))] * 2


def test_transcription_is_deterministic():
    asr = WhisperTranscriber("tiny-whisper", device="cpu")
    clip = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    first, second = asr.transcribe([clip]), asr.transcribe([clip])
    assert first == second and first[0].no_speech_prob is not None and 0 <= first[0].no_speech_prob <= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_transcripts_on_cuda_equal_cpu(speech_run, tmp_path, fp32_cuda):
    """transcribe --device cuda: tiny-whisper's greedy transcripts equal the CPU's, hence the same
    WER/CER rows; no-speech probabilities to 1e-4. On these clips the CPU's top two logits differ
    by at least 0.018 at every step, far above float32 round-off between the devices."""
    folder, cpu = speech_run
    shutil.copytree(folder / "run", tmp_path / "run")  # the module's run keeps its CPU rows
    # its own cache: transcripts are keyed by content and model identity, which holds no device
    cuda = transcribe_run(tmp_path / "run", "tiny-whisper", device="cuda", cache_dir=tmp_path / "cache", bootstrap=200)
    assert cuda.transcribed == cpu.transcribed == 6 and cuda.cached == 0
    assert len(cuda.rows) == len(cpu.rows) > 0
    for got, want in zip(cuda.rows, cpu.rows):
        assert (got["cell_id"], got["metric"], got["embedder_id"]) == (want["cell_id"], want["metric"], want["embedder_id"])
        assert (got["value"], got["ci_low"], got["ci_high"], got["n"]) == (want["value"], want["ci_low"], want["ci_high"], want["n"])
        a, b = got["details"]["transcripts"], want["details"]["transcripts"]
        assert [(t["prompt_id"], t["seed"], t["hypothesis"], t["flags"]) for t in a] == \
            [(t["prompt_id"], t["seed"], t["hypothesis"], t["flags"]) for t in b]
        assert [t["no_speech_prob"] for t in a] == pytest.approx([t["no_speech_prob"] for t in b], abs=1e-4)


def test_missing_model_is_a_one_line_error():
    from harness.score.asr.whisper import AsrError

    with pytest.raises(AsrError, match="hf download no/such-model"):
        WhisperTranscriber("no/such-model", device="cpu").transcribe([np.ones(16000, np.float32)])


def test_report_and_gate_see_wer_lower_is_better(speech_run):
    from harness.gate.summary import from_runs
    from harness.results import cell_frame, load_run, quality_columns

    folder, _ = speech_run
    frame = cell_frame([load_run(folder / "run")])
    assert {"wer:tiny-whisper", "cer:tiny-whisper"} <= set(quality_columns(frame))
    figures = [f for cell in from_runs([folder / "run"]).cells.values() for name, f in cell.figures.items()
               if name.startswith(("wer:", "cer:"))]
    assert len(figures) == 2 and all(f.better == "lower" and f.samples for f in figures)


def test_cli_transcribe(speech_run, capsys):
    from harness.cli import main

    folder, _ = speech_run
    code = main(["transcribe", str(folder / "run"), "--model", "tiny-whisper", "--device", "cpu",
                 "--cache-dir", str(folder / "cache"), "--no-progress", "--bootstrap", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "wer" in out and "tiny-whisper" in out and "from the cache" in out


def test_report_shows_wer_plot_and_worst_transcripts_with_players(speech_run, tmp_path):
    from harness.report.build import build_report

    folder, _ = speech_run
    result = build_report([folder / "run"], tmp_path / "report", formats="html,csv", listen=0)
    html = (tmp_path / "report" / "index.html").read_text()
    assert (tmp_path / "report" / "plots" / "wer_steps.png").is_file()
    assert "Speech: worst transcripts" in html and html.count("<audio") == 5  # listen=0: these players only
    store = RunStore.read_only(folder / "run")
    worst = next(m for m in store.metrics() if m["metric"] == "wer")["details"]["transcripts"][0]
    assert worst["reference"] in html and f"S{worst['substitutions']} D{worst['deletions']}" in html
    assert all(p.is_file() for p in result.audio)
    assert "wer:tiny-whisper" in (tmp_path / "report" / "cells.csv").read_text().splitlines()[0]
    assert "Speech: WER and CER" in html and "FAD/KAD reference" not in html  # no FAD scored here


def test_no_speech_probability_above_the_threshold_flags_non_speech(monkeypatch):
    import harness.score.asr.whisper as whisper

    asr = WhisperTranscriber("tiny-whisper", device="cpu")
    clip = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    heard = asr.transcribe([clip])[0]
    assert "non_speech" not in heard.flags
    monkeypatch.setattr(whisper, "NO_SPEECH_THRESHOLD", heard.no_speech_prob / 2)
    flagged = asr.transcribe([clip])[0]
    assert flagged.flags == ("non_speech",) and flagged.text == heard.text  # flagged, still scored


def test_clips_over_30_s_are_cut_and_flagged():
    asr = WhisperTranscriber("tiny-whisper", device="cpu")
    clip = np.random.default_rng(3).standard_normal(31 * 16000).astype(np.float32) * 0.1
    assert "truncated" in asr.transcribe([clip])[0].flags


def test_gate_fails_a_worse_wer_and_passes_a_better_one(speech_run, tmp_path):
    import json
    import sqlite3

    from harness.gate import gate
    from harness.gate.compare import FAILING

    folder, _ = speech_run
    better = tmp_path / "better"
    shutil.copytree(folder / "run", better)
    db = sqlite3.connect(better / "run.sqlite")
    for cell, details in db.execute("SELECT cell_id, details FROM metrics WHERE metric='wer'").fetchall():
        d = json.loads(details)
        d["per_sample"] = [[p, s, 0.5] for p, s, _ in d["per_sample"]]
        db.execute("UPDATE metrics SET value=0.5, ci_low=0.4, ci_high=0.6, details=? WHERE cell_id=? AND metric='wer'",
                   (json.dumps(d), cell))
    db.commit()
    db.close()
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nfigure = "wer:*"\nmax_regression = 0.02\n')
    worse = gate(folder / "run", better, policy)  # candidate WER 1 against a baseline of 0.5
    verdicts = [v for v in worse.verdicts if v.figure == "wer:tiny-whisper"]
    assert len(verdicts) == 1 and verdicts[0].status in FAILING and worse.exit_code == 1
    assert gate(better, folder / "run", policy).exit_code == 0


def test_run_without_speech_cells_is_a_one_line_error(tmp_path, make_sweep, capsys):
    from harness.cli import main

    run_sweep(make_sweep(seeds=[0], prompts={"set": "smoke", "limit": 1}), tmp_path / "run", progress=False)
    code = main(["transcribe", str(tmp_path / "run"), "--model", "tiny-whisper", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no samples of a speech checkpoint" in err and len(err.strip().splitlines()) == 1
