"""``score --protocol audioldm-eval`` on a tiny run with a paired synthetic reference: every
figure equals an independent computation (audioldm_eval's formulas re-typed in torch/scipy on
the same embedder outputs), unmatched files and prompts are listed, an unpaired reference is a
one-line error, and a gate on kl_softmax fails on degraded audio and passes on a rerun."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from harness.cli import main
from harness.generate.run import run_sweep
from harness.score.embed.audio import Clip
from harness.score.embed.pann import TinyPannEmbedder
from harness.score.embed.vggish import TinyVggishEmbedder
from harness.score.scoring import ScoreError, score_run
from harness.store import RunStore

TINY = {"pann": "tiny-pann", "vggish": "tiny-vggish", "clap": "tiny-clap"}


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory, tiny_audio_path, sweep_writer, named_reference_writer):
    root = tmp_path_factory.mktemp("protocol")
    sweep = sweep_writer(root / "sweep.toml", prompts={"set": "smoke", "limit": 5})
    run_sweep(sweep, root / "run", progress=False)
    store = RunStore.read_only(root / "run")
    samples = [s for s in store.samples() if s["status"] == "ok"]
    store.close()
    prompts = sorted({s["prompt_id"] for s in samples})
    # The first prompt has no reference clip; one clip (distinct audio: copies count once) matches no prompt.
    named_reference_writer(root / "ref", [*prompts[1:], "not_a_prompt"])
    result = score_run(root / "run", str(root / "ref"), protocol="audioldm-eval", substitute=TINY, pair_by="stem",
                       bootstrap=50, cache_dir=root / "cache")
    return root, samples, prompts, result


def _fd_scipy(x, y):  # audioldm_eval/metrics/fid.py
    mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_protocol_figures_equal_independent_computations(protocol_run):
    root, samples, prompts, result = protocol_run
    rows = {(r["metric"], r["embedder"]): r for r in result.rows}
    assert set(rows) == {("fad", "tiny-pann"), ("fad", "tiny-vggish"), ("kl_softmax", "tiny-pann"),
                         ("kl_sigmoid", "tiny-pann"), ("inception_score", "tiny-pann"), ("clap_score", "tiny-clap")}
    labels = {k: r["details"]["protocol"]["label"] for k, r in rows.items()}
    assert labels[("fad", "tiny-pann")] == "FD" and labels[("kl_softmax", "tiny-pann")] == "KL"
    for r in rows.values():
        proto = r["details"]["protocol"]
        assert proto["name"] == "audioldm-eval" and proto["version"] == "1" and proto["substituted_by"] == r["embedder"]
        assert r["value"] is not None and r["ci_low"] is not None and r["ci_low"] <= r["ci_high"]

    pann, vggish = TinyPannEmbedder(frontend="audioldm-eval"), TinyVggishEmbedder(frontend="audioldm-eval")
    gen = [Clip.from_file(root / "run" / s["audio_path"]).samples for s in samples]
    ref_names = sorted(p.name for p in (root / "ref").iterdir())
    ref = {n: Clip.from_file(root / "ref" / n).samples for n in ref_names}
    g_emb, g_extra = pann.embed_audio_outputs(gen)
    r_emb, r_extra = pann.embed_audio_outputs(list(ref.values()))
    assert rows[("fad", "tiny-pann")]["value"] == pytest.approx(
        _fd_scipy(np.concatenate(g_emb).astype(np.float64), np.concatenate(r_emb).astype(np.float64)), rel=1e-6)
    frames = lambda clips: np.concatenate(vggish.embed_audio(clips)).astype(np.float64)  # noqa: E731
    assert rows[("fad", "tiny-vggish")]["value"] == pytest.approx(_fd_scipy(frames(gen), frames(list(ref.values()))),
                                                                  rel=1e-6)

    # KL: each sample against its prompt's reference clip (audioldm_eval's kl.py, float64 here).
    ref_logits = dict(zip(ref_names, r_extra["logits"]))
    paired = [(torch.from_numpy(g.astype(np.float64)), torch.from_numpy(ref_logits[f"{s['prompt_id']}.wav"]
                                                                        .astype(np.float64)))
              for g, s in zip(g_extra["logits"], samples) if s["prompt_id"] != prompts[0]]
    f1, f2 = torch.cat([p[0] for p in paired]), torch.cat([p[1] for p in paired])
    soft = torch.nn.functional.kl_div((f1.softmax(1) + 1e-6).log(), f2.softmax(1), reduction="sum") / len(f1)
    sig = torch.nn.functional.kl_div((f1.sigmoid() + 1e-6).log(), f2.sigmoid(), reduction="sum") / len(f1)
    assert rows[("kl_softmax", "tiny-pann")]["value"] == pytest.approx(float(soft), rel=1e-5)
    assert rows[("kl_sigmoid", "tiny-pann")]["value"] == pytest.approx(float(sig), rel=1e-5)
    kl = rows[("kl_softmax", "tiny-pann")]
    assert kl["n"] == len(paired) == len(samples) - 2 and kl["details"]["n_unmatched"] == 2
    assert kl["details"]["unmatched_prompts"] == [prompts[0]]

    logits = torch.from_numpy(np.concatenate(g_extra["logits"]).astype(np.float64))
    logits = logits[np.random.RandomState(2020).permutation(len(logits))]
    p, log_p, n = logits.softmax(1), logits.log_softmax(1), len(logits)
    splits = [(p[i * n // 10:(i + 1) * n // 10] * (log_p[i * n // 10:(i + 1) * n // 10]
               - p[i * n // 10:(i + 1) * n // 10].mean(0, keepdim=True).log())).sum(1).mean().exp().item()
              for i in range(10)]
    assert rows[("inception_score", "tiny-pann")]["value"] == pytest.approx(np.mean(splits), rel=1e-6)
    assert rows[("inception_score", "tiny-pann")]["details"]["std"] == pytest.approx(np.std(splits), rel=1e-5)


def test_unmatched_files_and_prompts_are_in_the_quarantine_report(protocol_run):
    root, _, prompts, result = protocol_run
    report = json.loads(result.reference_report.read_text())
    pairing = report["pairing"]
    assert pairing["rule"] == "stem" and pairing["unmatched_files"] == ["not_a_prompt.wav"]
    assert pairing["unmatched_prompts"] == [prompts[0]] and pairing["n_matched"] == len(prompts) - 1
    assert report["n_entries"] == len(prompts)  # unpaired metrics (FD, FAD) use every usable file
    assert result.pairing == pairing and result.protocol == "audioldm-eval@1"


def test_unpaired_reference_and_bad_protocols_are_one_line_errors(protocol_run, capsys):
    root, *_ = protocol_run
    with pytest.raises(ScoreError, match=r"protocol audioldm-eval@1 needs a paired reference for kl_sigmoid, "
                                         r"kl_softmax but folder:.* is unpaired; pass --pair-by"):
        score_run(root / "run", str(root / "ref"), protocol="audioldm-eval", substitute=TINY, cache_dir=root / "cache")
    with pytest.raises(ScoreError, match="kl_softmax needs an embedder with logits"):
        score_run(root / "run", str(root / "ref"), "mel", metrics="kl_softmax", pair_by="stem", cache_dir=root / "cache")
    code = main(["score", str(root / "run"), "--reference", str(root / "ref"), "--protocol", "audioldm-eval2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("unknown protocol 'audioldm-eval2'; valid: audioldm-eval, "
                                      "stable-audio-metrics, stable-audio-metrics-musiccaps")
    code = main(["score", str(root / "run"), "--reference", str(root / "ref"), "--protocol", "audioldm-eval",
                 "--pair-by", "stem", "--cache-dir", str(root / "cache"), "--bootstrap", "20", "--no-progress",
                 *[a for k, v in TINY.items() for a in ("--protocol-embedder", f"{k}={v}")]])
    out = capsys.readouterr().out
    assert code == 0 and "kl_softmax (KL)" in out and "protocol audioldm-eval@1" in out
    assert "1 reference file(s) without a prompt" in out


KL_POLICY = """
confidence = 0.95
[[rule]]
figure = "kl_softmax:*"
max_regression = "10%"
"""


def test_gate_on_kl_softmax_fails_on_degraded_audio_and_passes_on_a_rerun(tmp_path, sweep_writer,
                                                                          base_same_noisy_runs,
                                                                          named_reference_writer):
    from harness.gate.compare import compare
    from harness.gate.policy import load_policy
    from harness.gate.summary import from_runs

    sweep = sweep_writer(tmp_path / "sweep.toml", prompts={"set": "smoke", "limit": 5})
    runs = base_same_noisy_runs(sweep, tmp_path)
    store = RunStore.read_only(runs["base"])
    prompts = sorted({s["prompt_id"] for s in store.samples()})
    store.close()
    named_reference_writer(tmp_path / "ref", prompts)
    for run in runs.values():
        score_run(run, str(tmp_path / "ref"), "tiny-pann", metrics="kl_softmax", pair_by="stem", bootstrap=50,
                  cache_dir=tmp_path / "cache")
    policy_path = tmp_path / "kl.toml"
    policy_path.write_text(KL_POLICY)
    policy = load_policy(policy_path)
    base = from_runs([runs["base"]])
    same = compare(base, from_runs([runs["same"]]), policy)
    assert same.exit_code == 0 and [v.status for v in same.verdicts if v.figure.startswith("kl")] == ["pass"]
    worse = compare(base, from_runs([runs["noisy"]]), policy)
    kl = next(v for v in worse.verdicts if v.figure == "kl_softmax:tiny-pann")
    assert worse.exit_code == 1 and kl.status == "regression", kl


def test_report_prints_the_protocol_beside_its_figures(protocol_run, tmp_path):
    from harness.report.build import build_report

    root, *_ = protocol_run
    build_report([root / "run"], tmp_path / "report", formats="md,html", listen=0)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Protocol audioldm-eval@1: " in md and "KL = kl_softmax:tiny-pann" in md and "FD = fad:tiny-pann" in md
    assert "Inception Score (tiny-pann)" in md and "Protocol audioldm-eval@1" in (tmp_path / "report" / "index.html").read_text()


def test_stable_audio_metrics_protocol_equals_its_formulas(protocol_run):
    # The same run and paired folder under stable-audio-metrics' settings: FD_openl3 pools the
    # OpenL3 frames of all clips, KL_passt is KL(generated || reference) of window-averaged logits.
    from harness.score.embed.openl3 import TinyOpenL3Embedder
    from harness.score.embed.passt import TinyPasstEmbedder
    from harness.score.metrics.stable_audio import fd_openl3, kl_passt

    root, samples, prompts, _ = protocol_run
    result = score_run(root / "run", str(root / "ref"), protocol="stable-audio-metrics", pair_by="stem",
                       substitute={"openl3": "tiny-openl3", "passt": "tiny-passt", "clap": "tiny-clap"},
                       bootstrap=20, cache_dir=root / "cache")
    rows = {r["details"]["protocol"]["label"]: r for r in result.rows}
    assert set(rows) == {"FD_openl3", "KL_passt", "CLAP"} and result.protocol == "stable-audio-metrics@1"
    ref_names = sorted(p.name for p in (root / "ref").iterdir())
    gen = [Clip.from_file(root / "run" / s["audio_path"]) for s in samples]
    ref = {n: Clip.from_file(root / "ref" / n) for n in ref_names}
    openl3 = TinyOpenL3Embedder(content_type="env", channels=2)
    fd = fd_openl3(openl3.embed_audio([openl3.audio_of(c) for c in gen]),
                   openl3.embed_audio([openl3.audio_of(c) for c in ref.values()]))
    assert rows["FD_openl3"]["value"] == pytest.approx(fd.value, rel=1e-6)
    passt = TinyPasstEmbedder()
    _, g_extra = passt.embed_audio_outputs([passt.audio_of(c) for c in gen])
    _, r_extra = passt.embed_audio_outputs([passt.audio_of(c) for c in ref.values()])
    ref_logits = dict(zip(ref_names, r_extra["logits"]))
    paired = [(g, ref_logits[f"{s['prompt_id']}.wav"]) for g, s in zip(g_extra["logits"], samples)
              if s["prompt_id"] != prompts[0]]
    assert rows["KL_passt"]["value"] == pytest.approx(kl_passt([g for g, _ in paired], [r for _, r in paired]),
                                                      rel=1e-6)
    assert rows["KL_passt"]["details"]["direction"] == "KL(generated || reference)"
    assert rows["KL_passt"]["n"] == len(paired)
