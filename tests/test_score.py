"""The score stage end to end on tiny runs: metric rows, cache reuse, baseline cells, errors."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from scipy.io import wavfile

from harness.fileio import sha256_file
from harness.cli import main
from harness.data.synthetic import write_synthetic_reference
from harness.generate.run import run_sweep
from harness.score.scoring import ScoreError, score_run
from harness.store import RunStore


def _check_ci(row) -> None:
    assert row["ci_low"] is not None and row["ci_low"] <= row["ci_high"], row
    ci = row["details"]["ci"]
    assert ci["unit"] == "prompts" and ci["n_resamples"] > 0
    inside = row["ci_low"] <= row["value"] <= row["ci_high"]
    assert ci["contains_value"] is inside
    if row["metric"] == "clap_score":
        assert inside  # a CI of a mean
    elif not inside:  # set metrics: percentile CI of an upward-biased statistic may sit above it
        assert "biases set metrics" in ci["note"]


def test_score_run_end_to_end(make_sweep, tmp_path, capsys):
    run = tmp_path / "run"
    result = run_sweep(make_sweep(schedulers=["ddim", "euler"]), run, progress=False)
    assert result.report.done == 8  # 2 cells x 2 prompts x 2 seeds
    cells = sorted({c.id for c in result.cells})
    write_synthetic_reference(tmp_path / "ref", 12)
    cache = tmp_path / "cache"

    scored = score_run(run, str(tmp_path / "ref"), "mel,tiny-clap", bootstrap=100, cache_dir=cache)
    rows = scored.rows
    assert sorted((r["cell_id"], r["embedder"], r["metric"]) for r in rows) == sorted(
        (c, e, m) for c in cells for e, ms in (("mel", ("fad", "kad")), ("tiny-clap", ("fad", "kad", "clap_score")))
        for m in ms
    )
    for r in rows:
        assert r["n"] == 4 and r["value"] is not None and np.isfinite(r["value"])
        _check_ci(r)
        d = r["details"]
        assert d["n_failed"] == 0 and d["embedder_identity"]["name"] == r["embedder"]
        assert r["embedder_id"].startswith(r["embedder"] + "-")
        if r["metric"] == "clap_score":
            assert r["reference"] == "prompts" and len(d["per_sample"]) == 4
        else:
            assert r["reference_id"] == scored.reference_id and d["reference"]["n"] == 12
            assert d["n_prompts"] == 2 and "rank_deficient" in d["caveats"]  # 4 clips, 128 / 16 dims
        if r["metric"] == "fad":  # one outlier score per scored sample; too few samples for FAD-inf
            assert len(d["per_sample_outlier"]) == 4 and all(s >= 0 for _, _, s in d["per_sample_outlier"])
            assert "needs >= 50" in d["fad_inf"]["skipped"]
    assert scored.computed == {"mel": 20, "tiny-clap": 20, "tiny-clap/text": 2}  # 8 samples + 12 refs
    fad_details = next(r["details"] for r in rows if r["metric"] == "fad")
    manifest = json.loads((run / fad_details["reference"]["manifest"]).read_text())
    assert manifest["identity"] == scored.reference_id and manifest["n_entries"] == 12

    store = RunStore(run)
    stored = store.metrics()
    store.close()
    assert len(stored) == len(rows) == 10
    assert {(r["metric"], r["value"]) for r in stored} == {(r["metric"], r["value"]) for r in rows}

    def strict(constant):
        raise AssertionError(f"{constant} is not JSON")

    db = sqlite3.connect(run / "run.sqlite")
    for (raw,) in db.execute("SELECT details FROM metrics"):
        json.loads(raw, parse_constant=strict)
    db.close()

    again = score_run(run, str(tmp_path / "ref"), "mel,tiny-clap", bootstrap=100, cache_dir=cache)
    assert again.computed_total == 0 and sum(again.cached.values()) == 44  # 20 + 20 clips, 2x2 texts
    assert [r["value"] for r in again.rows] == [r["value"] for r in rows]

    # FAD to a baseline cell of the same run, through the CLI (prefix of the cell id).
    base, other = cells
    code = main(["score", str(run), "--reference", f"cell:{base[:6]}", "--embedder", "mel",
                 "--cache-dir", str(cache), "--bootstrap", "50", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and f"cell {base} not scored: is the reference" in out
    store = RunStore(run)
    paired = [r for r in store.metrics() if r["reference"] == f"cell:{base}"]
    store.close()
    assert {(r["cell_id"], r["metric"]) for r in paired} == {(other, "fad"), (other, "kad")}
    for r in paired:
        assert r["n"] == 4 and r["details"]["paired"] and r["details"]["n_unmatched"] == 0
        _check_ci(r)

    code = main(["score", str(run), "--reference", str(tmp_path / "ref"), "--embedder", "mel,vggish9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    from harness.score.embed.registry import available

    assert f"unknown embedder 'vggish9'; valid: {', '.join(available())}" in err and "pann" in err


def test_failed_and_silent_samples_are_counted_not_scored(make_sweep, tmp_path):
    run = tmp_path / "run"
    result = run_sweep(make_sweep(), run, progress=False)
    cell = result.cells[0].id
    db = sqlite3.connect(run / "run.sqlite")
    with db:
        db.execute("UPDATE samples SET status='failed', error='CUDA OOM', audio_path=NULL "
                   "WHERE cell_id=? AND seed=1 AND prompt_id=(SELECT MIN(prompt_id) FROM samples)", (cell,))
        db.execute("UPDATE samples SET flags='[\"silent\"]' WHERE status='ok'")
    db.close()
    write_synthetic_reference(tmp_path / "ref", 6)
    scored = score_run(run, str(tmp_path / "ref"), ["mel"], bootstrap=20, cache_dir=tmp_path / "cache")
    for r in scored.rows:
        assert r["n"] == 3 and r["details"]["n_failed"] == 1
        assert r["details"]["flags"] == {"silent": 3} and "all_silent" in r["details"]["degenerate"]

    # Identical outputs (here: every file overwritten with one clip) are flagged, still scored.
    import shutil

    files = sorted((run / "audio" / cell).glob("*.wav"))
    db = sqlite3.connect(run / "run.sqlite")
    with db:  # as if generation had made them: rows record the new content (else score refuses them)
        for f in files[1:]:
            shutil.copyfile(files[0], f)
            db.execute("UPDATE samples SET audio_sha256=? WHERE audio_path=?",
                       (sha256_file(f), f.relative_to(run).as_posix()))
    db.close()
    same = score_run(run, str(tmp_path / "ref"), ["mel"], bootstrap=0, cache_dir=tmp_path / "cache")
    assert all("constant_embeddings" in r["details"]["degenerate"] for r in same.rows)
    assert all(r["ci_low"] is None and r["value"] is not None for r in same.rows)
    assert same.computed_total == 0  # content seen before: cache hits despite the rewritten files

    # A reference folder with too few usable clips: refused, with the quarantine written down.
    bad = tmp_path / "bad"
    bad.mkdir()
    wavfile.write(bad / "short.wav", 16000, np.ones(100, np.float32) * 0.1)
    (bad / "x.txt").write_text("?")
    with pytest.raises(ScoreError, match=r"0 usable clip\(s\).*2 quarantined, see .*reference-"):
        score_run(run, str(bad), ["mel"], cache_dir=tmp_path / "cache")
    with pytest.raises(ScoreError, match="no cell of this run"):
        score_run(run, "cell:ffff", ["mel"], cache_dir=tmp_path / "cache")


def test_fad_extras_match_an_independent_computation():
    from harness.score.metrics import fad_inf
    from harness.score.scoring import fad_extras

    rng = np.random.default_rng(0)
    x, y = rng.normal(0.2, 1.0, (60, 6)), rng.normal(0.0, 1.0, (90, 6))
    keys = [(f"p{i}", 0) for i in range(60)]
    extras = fad_extras(x, y, keys)
    mu, cov = y.mean(axis=0), np.cov(y, rowvar=False)
    d = x - mu
    expected = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d))  # full rank: inv = pinv
    got = np.array([s for _, _, s in extras["per_sample_outlier"]])
    assert [k for k, _, _ in extras["per_sample_outlier"]] == [k for k, _ in keys]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # stored rounded to 6 decimals
    assert extras["fad_inf"]["value"] == fad_inf(x, y, seed=0).value
    assert "skipped" in fad_extras(x[:10], y, keys[:10])["fad_inf"]


@pytest.mark.parametrize("command, module, function", [
    (["score", "RUN", "--reference", "REF"], "harness.score.scoring", "score_run"),
    (["transcribe", "RUN"], "harness.score.asr.transcribe", "transcribe_run"),
    (["compare", "RUN", "a", "b", "--reference", "REF"], "harness.score.compare", "compare_cells"),
])
def test_scoring_commands_set_torch_threads_before_they_score(monkeypatch, capsys, command, module, function):
    """--threads on score, transcribe and compare is applied before any model runs; 0 is refused."""
    import importlib

    import torch

    seen = []

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Stop

    monkeypatch.setattr(importlib.import_module(module), function, record)
    before = torch.get_num_threads()
    try:
        with pytest.raises(Stop):
            main([*command, "--threads", "2"])
    finally:
        torch.set_num_threads(before)
    assert seen == [2]
    assert main([*command, "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err and seen == [2]
