"""Paired comparison of two cells: values agree with what score stored (FAD, KAD, CLAP score, and
KL / IS on a reference paired with the prompts), differences are antisymmetric, a noisy copy of a
cell is told apart and an identical one is not, and bad requests are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.data.synthetic import write_synthetic_reference
from harness.score.compare import compare_cells
from harness.score.metrics import paired_bootstrap
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
    with pytest.raises(ScoreError, match="clap_score needs an embedder with a text encoder"):
        compare_cells(root / "run", a, b, str(root / "ref"), "mel", metrics="clap_score")
    assert main(["compare", str(root / "run"), a, "ffff", "--reference", str(root / "ref")]) == 2
    assert "ffff" in capsys.readouterr().err
    code = main(["compare", str(root / "run"), a, b, "--reference", f"cell:{b}", "--permutations", "49",
                 "--cache-dir", str(root / "cache")])
    assert code == 0 and "paired permutation" in capsys.readouterr().out


# --- KL and IS: a tiny-pann run with a reference paired with its prompts --------------------------

BASE_G, SAME_G, NOISY_G = 3.5, 4.0, 4.5


@pytest.fixture(scope="module")
def kl_run(tmp_path_factory, tiny_audio_path, sweep_writer, named_reference_writer):
    """Three cells of one run: base, an identical copy (same audio) and a noisy copy (base audio plus
    Gaussian noise, sd 0.3, as ``base_same_noisy_runs``); 5 prompts x 4 seeds (IS needs >= 10 per
    cell). The reference pairs 4 of the 5 prompts by stem, plus one file that matches none."""
    import torch

    import harness.generate.local as local
    from harness.generate.sampling import HostAudio

    root = tmp_path_factory.mktemp("paired-kl")
    sweep = sweep_writer(root / "sweep.toml", guidance_scales=[BASE_G, SAME_G, NOISY_G], seeds=[0, 1, 2, 3],
                         prompts={"set": "smoke", "limit": 5})
    original = local.generate_to_host

    def copies(pipe, cond, seeds, steps, guidance_scale, *args, **kwargs):
        # The guidance value only names the cell: every cell renders the base cell's audio.
        audio = original(pipe, cond, seeds, steps, BASE_G, *args, **kwargs).numpy()
        if guidance_scale == NOISY_G:
            audio = audio + np.random.default_rng(0).normal(0, 0.3, audio.shape).astype(audio.dtype)
        return HostAudio(torch.from_numpy(audio), audio.shape[-1])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local, "generate_to_host", copies)
        result = run_sweep(sweep, root / "run", progress=False)
    cells = {c.guidance_scale: c.id for c in result.cells}
    store = RunStore.read_only(root / "run")
    prompts = sorted({s["prompt_id"] for s in store.samples()})
    store.close()
    named_reference_writer(root / "ref", [*prompts[1:], "not_a_prompt"])
    score_run(root / "run", str(root / "ref"), "tiny-pann", metrics="kl_softmax,kl_sigmoid,inception_score",
              pair_by="stem", bootstrap=20, cache_dir=root / "cache")
    return root, cells[BASE_G], cells[SAME_G], cells[NOISY_G], prompts


def _kl_compare(root, a, b, **kwargs):
    kwargs.setdefault("metrics", "kl_softmax,kl_sigmoid,inception_score")
    kwargs.setdefault("pair_by", "stem")
    result = compare_cells(root / "run", a, b, str(root / "ref"), "tiny-pann", permutations=99, bootstrap=500,
                           cache_dir=root / "cache", **kwargs)
    return result, {r.metric: r for r in result.rows}


def test_kl_and_is_comparisons_are_score_figures_with_paired_tests(kl_run):
    root, base, _, noisy, prompts = kl_run
    result, rows = _kl_compare(root, base, noisy)
    assert set(rows) == {"kl_softmax", "kl_sigmoid", "inception_score"} and result.n_pairs == 20
    for metric, r in rows.items():
        assert r.value_a == pytest.approx(_stored(root / "run", base, metric, "tiny-pann")["value"], rel=1e-9)
        assert r.value_b == pytest.approx(_stored(root / "run", noisy, metric, "tiny-pann")["value"], rel=1e-9)
        assert r.diff == pytest.approx(r.value_a - r.value_b, rel=1e-9, abs=1e-12)
    # KL: the 16 pairs whose prompt has a reference clip; a paired bootstrap of score's per-sample values.
    assert result.notes == [f"{m} on tiny-pann: 16 of 20 pairs (1 prompt(s) without a reference clip)"
                            for m in ("kl_softmax", "kl_sigmoid")]
    for metric in ("kl_softmax", "kl_sigmoid"):
        r = rows[metric]
        per = [{(p, s): v for p, s, v in _stored(root / "run", c, metric, "tiny-pann")["details"]["per_sample"]}
               for c in (base, noisy)]
        assert sorted(per[0]) == sorted(per[1]) and len(per[0]) == r.n == 16
        assert prompts[0] not in {p for p, _ in per[0]}
        keys = sorted(per[0])
        by_hand = paired_bootstrap([per[0][k] for k in keys], [per[1][k] for k in keys], n_resamples=500, seed=0)
        assert r.diff == pytest.approx(by_hand.mean_diff, abs=1e-5)  # stored per-sample values are rounded
        assert (r.ci_low, r.ci_high) == pytest.approx((by_hand.low, by_hand.high), abs=1e-4)
        assert r.p_value == pytest.approx(by_hand.p_value) and r.test == f"paired bootstrap ({by_hand.method})"
    # A noisy copy of a cell is told apart from it.
    assert rows["kl_softmax"].p_value < 0.01 and not rows["kl_softmax"].ci_low <= 0 <= rows["kl_softmax"].ci_high
    assert rows["inception_score"].n == 20 and rows["inception_score"].test.startswith("paired permutation")
    saved = json.loads(result.path.read_text())
    assert saved["pair_by"] == "stem" and {r["metric"] for r in saved["rows"]} == set(rows)


def test_identical_cells_differ_by_nothing(kl_run):
    root, base, same, _, _ = kl_run
    _, rows = _kl_compare(root, base, same, metrics=None)  # default: every metric tiny-pann can feed
    assert set(rows) == {"fad", "kad", "kl_softmax", "kl_sigmoid", "inception_score"}
    for r in rows.values():
        assert r.value_a == r.value_b and r.diff == 0 and r.p_value == 1, r


def test_kl_needs_a_pairing(kl_run, capsys):
    root, base, noisy = kl_run[0], kl_run[1], kl_run[3]
    # Not asked for: skipped with one line; the rest is tested.
    result, rows = _kl_compare(root, base, noisy, metrics=None, pair_by=None)
    assert set(rows) == {"fad", "kad", "inception_score"}
    assert len(result.notes) == 1 and result.notes[0].startswith("kl_sigmoid, kl_softmax skipped: folder:")
    assert "pass --pair-by stem|audiocaps:CSV|manifest:CSV" in result.notes[0]
    # Asked for: an error, one line (exit 2 from the CLI).
    with pytest.raises(ScoreError, match=r"needs a paired reference for kl_softmax but folder:.* is unpaired; "
                                         r"pass --pair-by"):
        _kl_compare(root, base, noisy, metrics="kl_softmax", pair_by=None)
    args = ["compare", str(root / "run"), base, noisy, "--reference", str(root / "ref"), "--embedder", "tiny-pann",
            "--cache-dir", str(root / "cache"), "--no-progress"]
    assert main([*args, "--metrics", "fad,kl_softmax"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pair-by" in err
    assert main([*args, "--metrics", "kl_softmax", "--pair-by", "stem", "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "kl_softmax" in out and "paired bootstrap" in out and "paired by stem" in out
    with pytest.raises(ScoreError, match="kl_softmax needs an embedder with logits"):
        compare_cells(root / "run", base, noisy, str(root / "ref"), "mel", metrics="kl_softmax", pair_by="stem",
                      cache_dir=root / "cache")


def test_inception_score_on_too_few_pairs_is_skipped_by_default(scored_run):
    root, (a, b) = scored_run  # 6 pairs; IS needs 10 per cell
    result = compare_cells(root / "run", a, b, str(root / "ref"), "tiny-pann", permutations=19,
                           cache_dir=root / "cache")
    assert {r.metric for r in result.rows} == {"fad", "kad"}
    assert any(n.startswith("inception_score on tiny-pann skipped: inception_score needs >= 10") for n in result.notes)
    with pytest.raises(ScoreError, match="inception_score on tiny-pann: inception_score needs >= 10"):
        compare_cells(root / "run", a, b, str(root / "ref"), "tiny-pann", metrics="inception_score",
                      cache_dir=root / "cache")


def test_kl_against_a_baseline_cell_pairs_by_prompt_and_seed(kl_run):
    root, base, same, noisy, _ = kl_run
    result = compare_cells(root / "run", base, noisy, f"cell:{same}", "tiny-pann", metrics="kl_softmax",
                           bootstrap=200, cache_dir=root / "cache")
    (kl,) = result.rows
    # base's clips are the baseline's own: KL(p || p + 1e-6) ~ 0 on every one of the 20 pairs.
    assert kl.n == 20 and kl.value_a == pytest.approx(0, abs=1e-4) and kl.value_b > 100 * abs(kl.value_a)
    assert kl.p_value < 0.01 and not result.notes
