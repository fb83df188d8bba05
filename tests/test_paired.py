"""Paired comparison of two cells: values agree with what score stored, differences are
antisymmetric, and bad requests are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.data.synthetic import write_synthetic_reference
from harness.score.compare import compare_cells
from harness.generate.run import run_sweep
from harness.score.scoring import ScoreError, score_run
from harness.store import RunStore


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_audio_path, sweep_writer):
    root = tmp_path_factory.mktemp("paired")
    sweep = sweep_writer(root / "sweep.toml", schedulers=["ddim", "euler"], prompts={"set": "smoke", "limit": 3})
    result = run_sweep(sweep, root / "run", progress=False)
    write_synthetic_reference(root / "ref", 8)
    score_run(root / "run", str(root / "ref"), "mel,tiny-clap", bootstrap=20, cache_dir=root / "cache")
    return root, sorted(c.id for c in result.cells)


def _stored(run, cell, metric, embedder):
    store = RunStore.read_only(run)
    try:
        return next(m for m in store.metrics(cell) if m["metric"] == metric and m["embedder"] == embedder)
    finally:
        store.close()


def test_comparison_agrees_with_the_scored_figures(scored_run):
    root, (a, b) = scored_run
    result = compare_cells(root / "run", a[:6], b[:6], str(root / "ref"), "mel,tiny-clap", permutations=99,
                           bootstrap=500, cache_dir=root / "cache")
    assert result.n_pairs == 6 and result.path.is_file()
    rows = {(r.embedder, r.metric): r for r in result.rows}
    assert set(rows) == {("mel", "fad"), ("mel", "kad"), ("tiny-clap", "fad"), ("tiny-clap", "kad"),
                         ("tiny-clap", "clap_score")}
    for (embedder, metric), r in rows.items():
        assert r.value_a == pytest.approx(_stored(root / "run", a, metric, embedder)["value"], rel=1e-9)
        assert r.value_b == pytest.approx(_stored(root / "run", b, metric, embedder)["value"], rel=1e-9)
        assert r.diff == pytest.approx(r.value_a - r.value_b, rel=1e-9, abs=1e-12) and 0 < r.p_value <= 1
    per_a = {(p, s): v for p, s, v in _stored(root / "run", a, "clap_score", "tiny-clap")["details"]["per_sample"]}
    per_b = {(p, s): v for p, s, v in _stored(root / "run", b, "clap_score", "tiny-clap")["details"]["per_sample"]}
    clap = rows[("tiny-clap", "clap_score")]
    assert clap.diff == pytest.approx(np.mean([per_a[k] - per_b[k] for k in per_a]), abs=1e-5)  # stored rounded
    assert clap.ci_low <= clap.diff <= clap.ci_high
    saved = json.loads(result.path.read_text())
    assert saved["cell_a"] == a and len(saved["rows"]) == 5

    swapped = compare_cells(root / "run", b, a, str(root / "ref"), "mel", permutations=99, cache_dir=root / "cache")
    fad = next(r for r in swapped.rows if r.metric == "fad")
    assert fad.diff == pytest.approx(-rows[("mel", "fad")].diff, rel=1e-12)


def test_bad_requests_are_clear_errors(scored_run, capsys):
    root, (a, b) = scored_run
    with pytest.raises(ScoreError, match="same cell"):
        compare_cells(root / "run", a, a, str(root / "ref"))
    with pytest.raises(ScoreError):
        compare_cells(root / "run", a, "ffff", str(root / "ref"))
    assert main(["compare", str(root / "run"), a, "ffff", "--reference", str(root / "ref")]) == 2
    assert "ffff" in capsys.readouterr().err
    code = main(["compare", str(root / "run"), a, b, "--reference", f"cell:{b}", "--permutations", "49",
                 "--cache-dir", str(root / "cache")])
    assert code == 0 and "paired permutation" in capsys.readouterr().out
