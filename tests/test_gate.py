"""The gate: policy validation, significance tests against hand-computed cases, the false-alarm
rate under the null, and end to end on tiny runs with injected regressions."""

from __future__ import annotations

import json
import time
from dataclasses import replace
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import scipy.stats

from harness.measure.bench import bench_sweep
from harness.cli import main
from harness.gate import gate
from harness.gate.compare import GateError, allowance, compare, judge, significance
from harness.gate.output import junit, markdown
from harness.gate.policy import Policy, PolicyError, Rule, load_policy
from harness.gate.summary import CellSummary, Figure, Summary, from_runs, load, save
from harness.score.scoring import score_run

ENV = {"cpu": "x86_64", "versions": {"torch": "2.13.0", "diffusers": "0.42.1", "transformers": "5.24.0"}}


def _policy(tmp_path, text: str):
    path = tmp_path / "gate.toml"
    path.write_text(text)
    return path


def _latency(values, keys=None) -> Figure:
    ms = [float(v) for v in values]
    return Figure(float(np.median(ms)), "lower", "ms", "ratio", len(ms), samples=ms, keys=keys)


def _summary(figures: dict[str, Figure], env=ENV) -> Summary:
    return Summary("test", env, {"cell-a": CellSummary("tiny/ddim", figures)})


# --- policy -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('[[rule]]\nfigure = "x"\nmax_regression = "ten"\n', "percentage like"),
    ('[[rule]]\nfigure = "x"\nmax_regression = -1\n', ">= 0"),
    ('[[rule]]\nfigure = "x"\nmax_regression = 1\nbogus = 1\n', "unknown key"),
    ('confidence = 0.95\n', "no [[rule]]"),
    ('confidence = 1.5\n[[rule]]\nfigure = "x"\nmax_regression = 1\n', "confidence"),
    ('[[rule]]\nfigure = "x"\nmax_regression = 1\nbetter = "up"\n', "better"),
    # issue 17: no NaN allowance (it passes everything), no coercion
    ('[[rule]]\nfigure = "x"\nmax_regression = nan\n', "rule[0].max_regression: nan is not a finite number"),
    ('[[rule]]\nfigure = "x"\nmax_regression = inf\n', "not a finite number"),
    ('confidence = nan\n[[rule]]\nfigure = "x"\nmax_regression = 1\n', "confidence: nan is not a finite"),
    ('[[rule]]\nfigure = "x"\nmax_regression = 1\nsignificance = "yes"\n', "significance: Input should be a valid boolean"),
    ('[[rule]]\nfigure = "x"\nmax_regression = true\n', "max_regression"),
    ('[[rule]]\nfigure = 3\nmax_regression = 1\n', "rule[0].figure: Input should be a valid string"),
    ('rule = ' + '[' * 3000 + ']' * 3000 + '\n', "nested deeper"),
])
def test_bad_policy_is_one_line_error(tmp_path, text, expected):
    with pytest.raises(PolicyError, match="gate.toml") as err:
        load_policy(_policy(tmp_path, text))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_first_matching_rule_wins_and_amounts_parse():
    policy = Policy(rule=[Rule(figure="latency_ms:total:*", max_regression="10%"),
                          Rule(figure="latency_ms:*", max_regression=5.0)])
    assert policy.rule_for("latency_ms:total:p50").relative == pytest.approx(0.10)
    assert policy.rule_for("latency_ms:encode:p50").absolute == 5.0
    assert policy.rule_for("fad:mel") is None


# --- significance against independent computations -------------------------------------------

def test_ci_test_matches_the_normal_approximation_by_hand():
    base = Figure(10.0, "lower", n=8, ci_low=9.0, ci_high=11.0, confidence=0.95)
    cand = Figure(12.0, "lower", n=8, ci_low=11.0, ci_high=13.0, confidence=0.95)
    se = 1.0 / scipy.stats.norm.ppf(0.975)  # half-width / z
    p = significance(base, cand, "lower").p
    assert p == pytest.approx(scipy.stats.norm.sf(2.0 / np.sqrt(2 * se**2)), rel=1e-12)
    # Against the allowance (0.5 absolute): is the candidate worse than baseline + 0.5?
    p = significance(allowance(base, Rule(figure="*", max_regression=0.5), "lower"), cand, "lower").p
    assert p == pytest.approx(scipy.stats.norm.sf(1.5 / np.sqrt(2 * se**2)), rel=1e-12)


def test_unpaired_and_paired_tests_match_scipy():
    rng = np.random.default_rng(0)
    b, c = rng.normal(100, 5, 12), rng.normal(115, 5, 12)
    p = significance(_latency(b), _latency(c), "lower").p
    assert p == pytest.approx(scipy.stats.mannwhitneyu(c, b, alternative="greater").pvalue)
    ten = Rule(figure="*", max_regression="10%")  # latency: the allowance scales the baseline
    p = significance(allowance(_latency(b), ten, "lower"), _latency(c), "lower").p
    assert p == pytest.approx(scipy.stats.mannwhitneyu(c, 1.1 * b, alternative="greater").pvalue)
    keys = [f"round-{i}" for i in range(12)]
    p = significance(allowance(_latency(b, keys), ten, "lower"), _latency(c, keys), "lower").p
    assert p == pytest.approx(scipy.stats.wilcoxon(np.log(c) - np.log(1.1 * b), alternative="greater").pvalue)


def test_welch_from_summary_statistics_matches_scipy():
    base = Figure(1.0, "lower", n=10, std=0.1)
    cand = Figure(1.2, "lower", n=10, std=0.1)
    p = significance(base, cand, "lower").p
    assert p == pytest.approx(scipy.stats.ttest_ind_from_stats(1.2, 0.1, 10, 1.0, 0.1, 10, equal_var=False,
                                                               alternative="greater").pvalue)
    exact = (Figure(1.0, "lower", n=5, std=0.0), Figure(1.2, "lower", n=5, std=0.0))
    assert significance(*exact, "lower").p == 0.0 and significance(*reversed(exact), "lower").p == 1.0


# --- verdicts ---------------------------------------------------------------------------------

def _judge(base, cand, rule, interval=True):
    # Simulations skip the interval (a bisection over the test): it does not change the verdict.
    return judge("c", "label", "latency_ms:total:p50", base, cand, rule, 0.05, interval)


def test_large_significant_slowdown_fails_small_ones_pass_noisy_ones_are_inconclusive():
    rule = Rule(figure="*", max_regression="10%")
    rng = np.random.default_rng(1)
    base = _latency(rng.normal(100, 2, 10))
    fail = _judge(base, _latency(rng.normal(130, 2, 10)), rule)
    assert fail.status == "regression" and fail.interval[0] > 0.10  # the whole interval beyond the allowance
    ok = _judge(base, _latency(rng.normal(105, 2, 10)), rule)
    assert ok.status == "pass" and ok.interval[1] < 0.10 and ok.p_within < 0.05  # real, but shown within
    noisy_base = _latency([100, 60, 140, 80, 120, 90])
    noisy_cand = _latency([120, 70, 170, 95, 145, 105])  # about +20 %, far from significant either way
    noisy = _judge(noisy_base, noisy_cand, rule)
    assert noisy.status == "inconclusive" and noisy.change > 0.10 and noisy.p_value > 0.05 and noisy.p_within > 0.05
    low, high = noisy.interval
    assert low < 0.10 < high and noisy.interval_level == pytest.approx(0.90)
    assert "more timed calls per side" in noisy.needed
    forced = _judge(noisy_base, noisy_cand, Rule(figure="*", max_regression="10%", significance=False))
    assert forced.status == "regression" and forced.p_value is None and "significance = false" in forced.test
    assert _judge(base, _latency(rng.normal(70, 2, 10)), rule).status == "improved"


def test_interval_of_a_ci_figure_is_the_normal_closed_form():
    """FAD-like figures with CIs only: the interval is diff +- z(alpha) * hypot(se_b, se_c)."""
    def fig(value, se):
        z = scipy.stats.norm.ppf(0.975)
        return Figure(value, "lower", ci_low=value - z * se, ci_high=value + z * se, confidence=0.95, n=50)

    base, cand = fig(2.0, 0.1), fig(2.3, 0.2)
    verdict = judge("c", "l", "fad:mel", base, cand, Rule(figure="*", max_regression=0.1), 0.05)
    half = scipy.stats.norm.ppf(0.95) * np.hypot(0.1, 0.2)
    assert verdict.interval == pytest.approx((0.3 - half, 0.3 + half), abs=1e-6)
    assert verdict.status == "inconclusive"  # 0.3 - 0.368 < 0.1 < 0.3 + 0.368
    assert "more samples" in verdict.needed or "more paired" in verdict.needed or "more" in verdict.needed


def test_interval_of_paired_rounds_is_the_walsh_average_bound():
    """A/B rounds: the Wilcoxon interval of the log ratio is bounded by Walsh averages (Hodges-Lehmann),
    with the critical count taken from the exact null distribution, enumerated here by brute force."""
    import itertools

    rng = np.random.default_rng(7)
    n = 8
    b = 100 * rng.lognormal(0, 0.1, n)
    c = b * np.exp(0.2 + rng.normal(0, 0.1, n))
    keys = [f"round-{i}" for i in range(n)]
    verdict = _judge(_latency(b, keys), _latency(c, keys), Rule(figure="*", max_regression="10%"))
    d = np.log(c) - np.log(b)
    walsh = np.sort([(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)])
    ranks = np.arange(1, n + 1)
    t_plus = np.array([ranks[np.array(signs, bool)].sum() for signs in itertools.product([0, 1], repeat=n)])
    tail = lambda k: np.mean(t_plus >= k)  # noqa: E731 - P(T+ >= k) under the null
    crit = min(k for k in range(t_plus.max() + 2) if tail(k) < 0.05)  # reject when #(W > theta) >= crit
    m = walsh.size
    low, high = np.exp(walsh[m - crit]) - 1, np.exp(walsh[crit - 1]) - 1
    assert verdict.interval == pytest.approx((low, high), abs=1e-6)


def test_too_few_observations_to_ever_decide_is_inconclusive_not_passed():
    rule = Rule(figure="*", max_regression="10%")
    few = _judge(_latency([100, 101, 102]), _latency([300, 301, 302]), rule)  # 3 calls a side: p >= 1/20
    assert few.status == "inconclusive" and "too few observations" in few.needed and "--repeats" in few.needed
    keys = [f"round-{i}" for i in range(4)]
    rounds = _judge(_latency([100] * 4, keys), _latency([200, 201, 202, 203], keys), rule)  # p >= 1/16
    assert rounds.status == "inconclusive" and "--rounds" in rounds.needed
    same = _judge(_latency([100, 101, 102]), _latency([100, 101, 102]), rule)  # no change, but nor any evidence
    assert same.status == "inconclusive"


def test_paired_clap_drop_fails_and_higher_is_better():
    rng = np.random.default_rng(2)
    keys = [f"p{i}|0" for i in range(16)]
    base_scores = rng.normal(0.30, 0.05, 16)
    base = Figure(float(base_scores.mean()), "higher", samples=list(base_scores), keys=keys)
    worse = base_scores - 0.05 + rng.normal(0, 0.005, 16)
    cand = Figure(float(worse.mean()), "higher", samples=list(worse), keys=keys)
    rule = Rule(figure="clap_score:*", max_regression=0.02)
    verdict = judge("c", "l", "clap_score:clap", base, cand, rule, 0.05)
    assert verdict.status == "regression" and verdict.change == pytest.approx(0.05, abs=0.01)
    assert "paired bootstrap" in verdict.test
    assert judge("c", "l", "clap_score:clap", cand, base, rule, 0.05).status == "improved"


def test_false_alarm_rate_under_the_null_and_power():
    """Identical distributions: the gate must almost never fail; a real 60 % slowdown: almost always."""
    rng = np.random.default_rng(3)
    rule = Rule(figure="*", max_regression="10%")

    def draw(scale):  # right-skewed timings with a 15 % spread, as on a shared runner
        return _latency(scale * rng.lognormal(0.0, 0.15, 10))

    null = sum(_judge(draw(100), draw(100), rule, False).status == "regression" for _ in range(400))
    within = sum(_judge(draw(100), draw(110), rule, False).status == "regression" for _ in range(400))
    power = sum(_judge(draw(100), draw(160), rule, False).status == "regression" for _ in range(200))
    assert null / 400 <= 0.01  # tested against the 10 % allowance: far below alpha = 0.05
    assert within / 400 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 400)  # at the boundary: alpha, as designed
    assert power / 200 >= 0.9


def test_prediction_test_against_several_baseline_runs_matches_a_hand_computation():
    runs = [100.0, 105.0, 110.0, 95.0]
    base = Figure(float(np.median(runs)), "lower", "ms", "ratio", run_values=runs)
    test = significance(base, Figure(130.0, "lower", "ms", "ratio"), "lower")
    desc, p = test.name, test.p
    logs = np.log(runs)
    t = (np.log(130.0) - logs.mean()) / (logs.std(ddof=1) * np.sqrt(1 + 1 / 4))
    assert "4 baseline runs" in desc and p == pytest.approx(scipy.stats.t.sf(t, 3), rel=1e-12)


def test_a_baseline_of_several_runs_absorbs_run_to_run_drift():
    """Each run has its own speed (shared machine); calls within a run vary less than runs do."""
    rng = np.random.default_rng(5)
    rule = Rule(figure="*", max_regression="10%")

    def run(scale):
        drift = rng.lognormal(0.0, 0.10)  # the machine's state during this run
        return _latency(scale * drift * rng.lognormal(0.0, 0.03, 10))

    def pooled(k):
        figs = [run(100) for _ in range(k)]
        values = [f.value for f in figs]
        return Figure(float(np.median(values)), "lower", "ms", "ratio", run_values=values,
                      samples=[x for f in figs for x in f.samples])

    single = sum(_judge(run(100), run(100), rule, False).status == "regression" for _ in range(300))
    several = sum(_judge(pooled(5), run(100), rule, False).status == "regression" for _ in range(300))
    caught = sum(_judge(pooled(5), run(200), rule, False).status == "regression" for _ in range(300))
    assert single / 300 > 0.1  # per-call tests mistake drift for regressions...
    assert several / 300 <= 0.05  # ...a 5-run baseline does not
    assert caught / 300 >= 0.8  # and still catches a doubling


def test_bonferroni_divides_alpha_by_the_number_of_gated_figures():
    keys = [f"round-{i}" for i in range(8)]
    base = _latency([100, 100, 100, 100, 100, 100, 100, 100], keys)
    cand = _latency([130, 125, 128, 131, 140, 95, 129, 127], keys)  # one-sided Wilcoxon p = 2/256 vs +10 %
    figures = {f"latency_ms:stage{i}:p50": (base, cand) for i in range(4)}
    b = _summary({k: v[0] for k, v in figures.items()})
    c = _summary({k: v[1] for k, v in figures.items()})
    plain = Policy(rule=[Rule(figure="*", max_regression="10%")])
    corrected = Policy(correction="bonferroni", rule=[Rule(figure="*", max_regression="10%")])
    assert compare(b, c, plain).exit_code == 1
    p = compare(b, c, plain).verdicts[0].p_value
    assert 0.05 / 4 < p < 0.05 and compare(b, c, corrected).exit_code == 0


def test_missing_cells_fail_different_references_cannot_compare():
    policy = Policy(rule=[Rule(figure="*", max_regression="10%")])
    base = _summary({"latency_ms:total:p50": _latency([1, 2, 3])})
    empty = Summary("empty", ENV)
    result = compare(base, empty, policy)
    assert [v.status for v in result.verdicts] == ["missing"] and result.exit_code == 1
    ref_a = _summary({"fad:mel": Figure(1.0, "lower", reference_id="aaa")})
    ref_b = _summary({"fad:mel": Figure(1.0, "lower", reference_id="bbb")})
    result = compare(ref_a, ref_b, policy)
    assert result.verdicts[0].status == "incomparable" and result.exit_code == 2
    assert "different references" in result.verdicts[0].test


def test_environment_mismatch_is_an_error_unless_allowed():
    policy = Policy(rule=[Rule(figure="*", max_regression="10%")])
    other = {**ENV, "gpu": "NVIDIA H100 80GB HBM3"}
    base, cand = _summary({"x": _latency([1, 2])}), _summary({"x": _latency([1, 2])}, env=other)
    with pytest.raises(GateError, match="different environments.*device.*--allow-env-mismatch"):
        compare(base, cand, policy)
    result = compare(base, cand, policy, allow_env_mismatch=True)
    assert result.exit_code == 0 and "device" in result.environment_differences[0]
    assert "compared across environments" in markdown(result)


def test_unmatched_figures_are_not_gated_and_direction_can_come_from_the_rule():
    policy = Policy(rule=[Rule(figure="extra:ratio", max_regression=0.01, better="lower")])
    base = _summary({"extra:ratio": Figure(1.00, None), "extra:other": Figure(5.0, None)})
    cand = _summary({"extra:ratio": Figure(1.05, None), "extra:other": Figure(50.0, None)})
    result = compare(base, cand, policy)
    assert result.ungated == 1 and [v.status for v in result.verdicts] == ["regression"]
    no_direction = compare(base, cand, Policy(rule=[Rule(figure="extra:ratio", max_regression=0.01)]))
    assert no_direction.verdicts[0].status == "incomparable" and "better" in no_direction.verdicts[0].test


def test_outputs_markdown_and_junit(tmp_path):
    policy = Policy(rule=[Rule(figure="*", max_regression="10%")])
    base = _summary({"latency_ms:total:p50": _latency(range(100, 110)), "fad:mel": Figure(1.0, "lower")})
    cand = _summary({"latency_ms:total:p50": _latency(range(200, 210)), "fad:mel": Figure(1.0, "lower")})
    result = compare(base, cand, policy)
    text = markdown(result)
    assert text.startswith("### audioldm2-harness gate: FAIL") and "**REGRESSION**" in text
    assert text.index("**REGRESSION**") < text.index("<details>")  # failures above the fold
    root = ET.parse(junit(result, tmp_path / "gate.xml")).getroot()
    assert root.get("tests") == "2" and root.get("failures") == "1" and root.get("errors") == "0"
    failed = [c.get("name") for c in root if c.find("failure") is not None]
    assert failed == ["latency_ms:total:p50"]


def test_benchmark_json_is_summarized_and_gated(tmp_path):
    def bench_file(path, data, extra):
        stats = {"median": float(np.median(data)), "mean": float(np.mean(data)), "stddev": float(np.std(data, ddof=1)),
                 "rounds": len(data), "data": data}
        payload = {"machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_version": "3.11.7"},
                   "benchmarks": [{"name": "test_x", "fullname": "benchmarks/t.py::test_x", "stats": stats,
                                   "extra_info": {"ratio_median": extra, "label": "not a number"}}]}
        path.write_text(json.dumps(payload))
        return path

    rng = np.random.default_rng(4)
    base = bench_file(tmp_path / "base.json", list(rng.normal(1.0, 0.02, 10)), 1.0)
    slow = bench_file(tmp_path / "slow.json", list(rng.normal(1.5, 0.02, 10)), 1.3)
    policy = _policy(tmp_path, '[[rule]]\nfigure = "benchmark:*"\nmax_regression = "10%"\n'
                               '[[rule]]\nfigure = "extra:ratio_median"\nmax_regression = 0.05\nbetter = "lower"\n')
    summary = load(base)
    assert set(summary.cells["benchmarks/t.py::test_x"].figures) == {
        "benchmark:median_s", "benchmark:mean_s", "extra:ratio_median"}
    assert gate(base, base, policy).exit_code == 0
    result = gate(slow, base, policy)
    assert result.exit_code == 1
    assert {v.figure for v in result.verdicts if v.status == "regression"} == {
        "benchmark:median_s", "benchmark:mean_s", "extra:ratio_median"}
    tests = {v.figure: v.test for v in result.verdicts}
    assert "Mann-Whitney" in tests["benchmark:median_s"] and "Welch" in tests["benchmark:mean_s"]


def test_a_non_baseline_json_is_a_clear_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not an audioldm2-harness baseline.*baseline save"):
        load(path)


# --- malformed gate inputs (issue 17): one line and exit 2, never a traceback or a pass -------

def _bench_payload(median=1.0, n=5) -> dict:
    stats = {"median": median, "mean": median, "stddev": 0.01, "rounds": n, "data": [median] * n}
    return {"machine_info": {"cpu": {"brand_raw": "T"}, "python_version": "3.11"},
            "benchmarks": [{"name": "t", "fullname": "b.py::t", "stats": stats}]}


def _baseline_payload(value=1.0) -> dict:
    fig = {"value": value, "better": "lower", "unit": "s", "scale": "ratio"}
    return {"schema": 1, "kind": "audioldm2-harness baseline", "source": "x",
            "environment": {"cpu": "T", "versions": {"python": "3.11"}, "pytest_benchmark": True},
            "cells": {"b.py::t": {"label": "t", "figures": {"benchmark:median_s": fig}}}}


def _without(d: dict, *path):
    d = json.loads(json.dumps(d))
    node = d
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return d


def _with(d: dict, value, *path):
    d = json.loads(json.dumps(d))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


MALFORMED = [
    (_without(_bench_payload(), "benchmarks", 0, "stats"), "benchmarks[0].stats"),
    (_with(_bench_payload(), None, "machine_info"), "machine_info"),
    (_with(_bench_payload(), "fast", "benchmarks", 0, "stats", "median"), "benchmarks[0].stats.median"),
    (_with(_bench_payload(), "5", "benchmarks", 0, "stats", "rounds"), "benchmarks[0].stats.rounds"),
    (_with(_bench_payload(), [], "benchmarks"), "'benchmarks' is empty"),
    (_with(_bench_payload(), 2**70, "benchmarks", 0, "stats", "rounds"), "64-bit range"),
    (_without(_baseline_payload(), "cells"), "missing required key 'cells'"),
    (_without(_baseline_payload(), "environment"), "missing required key 'environment'"),
    (_with(_baseline_payload(), {}, "cells"), "holds no figures"),
    (_with(_baseline_payload(), "1.0", "cells", "b.py::t", "figures", "benchmark:median_s", "value"),
     "cells.b.py::t.figures.benchmark:median_s.value"),
    (_with(_baseline_payload(), True, "cells", "b.py::t", "figures", "benchmark:median_s", "value"), "valid number"),
    (_with(_baseline_payload(), "up", "cells", "b.py::t", "figures", "benchmark:median_s", "better"), "better"),
    (_with(_baseline_payload(), 1, "cells", "b.py::t", "figures", "benchmark:median_s", "bogus"), "unknown key"),
    (_with(_baseline_payload(), 7, "environment", "versions"), "environment.versions"),
]


@pytest.mark.parametrize("payload, expected", MALFORMED)
def test_malformed_baselines_and_benchmark_files_are_one_line_errors(tmp_path, capsys, payload, expected):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps(payload))
    good.write_text(json.dumps(_bench_payload()))
    policy = _policy(tmp_path, '[[rule]]\nfigure = "benchmark:*"\nmax_regression = "10%"\n')
    for args in ([str(good), "--baseline", str(bad)], [str(bad), "--baseline", str(good)]):
        assert main(["gate", *args, "--policy", str(policy)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.json: " in err and expected in err, err


def test_unreadable_json_deep_or_binary_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json: nested deeper than a JSON reader"):
        load(deep)
    deep.write_text('{"benchmarks": ' + "[" * 40 + "]" * 40 + "}")
    with pytest.raises(ValueError, match=r"deep.json: benchmarks(\[0\])+: nested deeper than 32"):
        load(deep)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ValueError, match="bin.json: not UTF-8"):
        load(binary)


@pytest.mark.parametrize("where", ["candidate", "baseline"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_figures_cannot_be_compared_never_pass(tmp_path, capsys, where, bad):
    files = {"baseline": _bench_payload(), "candidate": _bench_payload()}
    files[where] = _bench_payload(median=bad)
    for name, payload in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))  # json writes NaN / Infinity
    policy = _policy(tmp_path, '[[rule]]\nfigure = "benchmark:*"\nmax_regression = "10%"\n')
    code = main(["gate", str(tmp_path / "candidate.json"), "--baseline", str(tmp_path / "baseline.json"),
                 "--policy", str(policy)])
    out = capsys.readouterr().out
    assert code == 2 and "ERROR: cannot compare" in out
    assert f"the {where}'s value = {bad}: not a finite number" in out


def test_nan_observations_cannot_be_compared():
    base = _latency([10, 11, 12, 10, 11])
    cand = replace(_latency([10, 11, float("nan"), 10, 11]), value=11.0)  # a median that ignored the NaN
    verdict = _judge(base, cand, Rule(figure="*", max_regression="10%"))
    assert verdict.status == "incomparable" and "samples holds NaN or inf" in verdict.test


def test_a_baseline_with_no_figures_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="empty-run: holds no figures"):
        save(Summary("empty-run", ENV, {"c": CellSummary("x")}), tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


def test_a_gate_that_judges_nothing_exits_2(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_bench_payload()))
    policy = _policy(tmp_path, '[[rule]]\nfigure = "latency_ms:*"\nmax_regression = "10%"\n')
    assert main(["gate", str(good), "--baseline", str(good), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no figure was gated" in err and "benchmark:median_s" in err


# --- end to end on tiny runs -------------------------------------------------------------------

QUALITY_POLICY = """
confidence = 0.95
[[rule]]
figure = "fad:*"
max_regression = "10%"
[[rule]]
figure = "failed_fraction"
max_regression = 0.0
significance = false
"""


@pytest.fixture(scope="module")
def quality_runs(tmp_path_factory, sweep_writer, base_same_noisy_runs):
    """A tiny run, an identical rerun, and a rerun whose audio is degraded by added noise."""
    root = tmp_path_factory.mktemp("gate")
    sweep = sweep_writer(root / "sweep.toml", prompts={"set": "smoke", "limit": 3})
    runs = base_same_noisy_runs(sweep, root)
    # The accepted outputs are the reference: the usual set-up of a model-quality regression test.
    cell_dir = next((runs["base"] / "audio").iterdir())
    for run in runs.values():
        score_run(run, str(cell_dir), ["mel"], metrics=["fad"], bootstrap=200, cache_dir=root / "cache")
    return runs, _policy(root, QUALITY_POLICY)


def test_identical_runs_pass_and_degraded_audio_fails(quality_runs, tmp_path):
    runs, policy = quality_runs
    assert main(["baseline", "save", str(runs["base"]), "--out", str(tmp_path / "base.json")]) == 0
    same = gate(runs["same"], tmp_path / "base.json", policy)
    # FAD against the base's own audio is ~1e-15: a relative allowance of it is no allowance at all,
    # and its bootstrap CI cannot show the change is within it. Not a pass: inconclusive (warning, exit 0).
    fad = next(v for v in same.verdicts if v.figure == "fad:mel")
    assert fad.status == "inconclusive" and fad.change == 0 and same.exit_code == 0
    strict = _policy(tmp_path, QUALITY_POLICY.replace("confidence = 0.95", 'confidence = 0.95\ninconclusive = "fail"'))
    assert gate(runs["same"], tmp_path / "base.json", strict).exit_code == 3
    absolute = _policy(tmp_path, QUALITY_POLICY.replace('max_regression = "10%"', "max_regression = 5.0"))
    shown = gate(runs["same"], tmp_path / "base.json", absolute)
    assert shown.exit_code == 0 and {v.status for v in shown.verdicts} == {"pass"}
    noisy = gate(runs["noisy"], tmp_path / "base.json", policy)
    fad = next(v for v in noisy.verdicts if v.figure == "fad:mel")
    assert noisy.exit_code == 1 and fad.status == "regression" and fad.p_value < 0.05
    code = main(["gate", str(runs["noisy"]), "--baseline", str(tmp_path / "base.json"), "--policy", str(policy),
                 "--junit", str(tmp_path / "g.xml"), "--markdown", str(tmp_path / "g.md")])
    assert code == 1 and "FAIL" in (tmp_path / "g.md").read_text()
    assert ET.parse(tmp_path / "g.xml").getroot().get("failures") == "1"


def test_baseline_file_round_trips(quality_runs, tmp_path):
    runs, _ = quality_runs
    summary = from_runs([runs["base"]])
    several = from_runs([runs["base"], runs["same"]])  # same cell twice: per-run latencies kept
    lat = several.cells[next(iter(several.cells))].figures["latency_ms:total:p50"]
    assert len(lat.run_values) == 2 and lat.value == pytest.approx(np.median(lat.run_values))
    assert load(save(several, tmp_path / "s.json")).cells == several.cells
    again = load(save(summary, tmp_path / "b.json"))
    assert again.environment_key() == summary.environment_key()
    assert again.cells.keys() == summary.cells.keys()
    for key, cell in summary.cells.items():
        assert again.cells[key].figures == cell.figures


def test_gate_cli_usage_errors_exit_2(quality_runs, tmp_path, capsys):
    runs, policy = quality_runs
    assert main(["gate", str(runs["same"]), "--baseline", str(tmp_path / "nope.json"), "--policy", str(policy)]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = _policy(tmp_path, '[[rule]]\nfigure = "x"\nmax_regression = "lots"\n')
    assert main(["gate", str(runs["same"]), "--baseline", str(runs["base"]), "--policy", str(bad)]) == 2


def test_injected_slowdown_fails_the_latency_gate(make_sweep, tmp_path, monkeypatch):
    import harness.measure.stages as measure

    sweep = make_sweep(steps=[2], latency={"warmup": 1, "repeats": 6, "memory": False})
    bench_sweep(sweep, tmp_path / "base", progress=False)
    original = measure.generate

    def slower(*args, **kwargs):
        time.sleep(0.25)  # a regression no scheduler noise on this machine can hide
        return original(*args, **kwargs)

    monkeypatch.setattr(measure, "generate", slower)
    bench_sweep(sweep, tmp_path / "slow", progress=False)
    policy = _policy(tmp_path, '[[rule]]\nfigure = "latency_ms:total:p50"\nmax_regression = "10%"\n')
    result = gate(tmp_path / "slow", tmp_path / "base", policy)
    assert [v.status for v in result.verdicts] == ["regression"] and result.exit_code == 1
    assert "Mann-Whitney U (n=6/6)" in result.verdicts[0].test
    # a regression seen only in per-call times of one run says what that test cannot see
    from harness.gate.compare import DRIFT_NOTE
    from harness.gate.output import markdown

    assert result.notes == [DRIFT_NOTE] and f"> {DRIFT_NOTE}" in markdown(result)
    assert gate(tmp_path / "base", tmp_path / "base", policy).notes == []  # no regression, no note


def test_interleaved_ab_session_flags_the_slower_configuration(make_sweep, tmp_path, capsys):
    fast = make_sweep(steps=[2], prompts={"set": "smoke", "limit": 1}, seeds=[0])
    slow = make_sweep(steps=[12], prompts={"set": "smoke", "limit": 1}, seeds=[0])
    policy = _policy(tmp_path, '[[rule]]\nfigure = "latency_ms:total:p50"\nmax_regression = "10%"\n')
    code = main(["gate-ab", fast, slow, "--policy", str(policy), "--rounds", "6", "--no-progress",
                 "--junit", str(tmp_path / "ab.xml")])
    out = capsys.readouterr().out
    assert code == 1 and "Wilcoxon signed-rank on log ratios (n=6" in out
    assert ET.parse(tmp_path / "ab.xml").getroot().get("failures") == "1"


# --- the use-case files shipped in benchmarks/ ---------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["ci-latency", "quality", "pytest-benchmark"])
def test_shipped_policies_load(name):
    policy = load_policy(REPO / "benchmarks" / "gates" / f"{name}.toml")
    # Names the summaries produce (summary.py): a rule that matches none of them is a typo.
    produced = ["latency_ms:total:p50", "latency_ms:denoise:p50", "memory_mib:total:rss_peak",
                "memory_mib:total:allocated_peak", "failed_fraction", "flagged_fraction", "fad:mel",
                "kad:clap", "clap_score:clap", "wer:whisper-large-v3", "cer:whisper-large-v3",
                "benchmark:median_s", "benchmark:mean_s"]
    import fnmatch

    unmatched = [r.figure for r in policy.rule if not fnmatch.filter(produced, r.figure)]
    assert policy.rule and not unmatched


@pytest.mark.parametrize("name, n_cells", [("ci-gate", 1), ("quality-regression", 1), ("scheduler-study", 28),
                                           ("smoke", 4), ("resume-demo", 6), ("gate-study", 1),
                                           ("speech-smoke", 4)])
def test_shipped_sweeps_expand(name, n_cells):
    from harness.generate.run import prepare

    _, cells, _ = prepare(REPO / "benchmarks" / "sweeps" / f"{name}.toml")
    assert len(cells) == n_cells


def test_sequential_gate_ab_adds_rounds_until_decided(make_sweep, tmp_path, capsys):
    """3 rounds can never decide (Wilcoxon p >= 1/8); the session adds rounds and then fails the slower side."""
    fast = make_sweep(steps=[2], prompts={"set": "smoke", "limit": 1}, seeds=[0], threads=1)
    slow = make_sweep(steps=[12], prompts={"set": "smoke", "limit": 1}, seeds=[0])
    policy = _policy(tmp_path, '[[rule]]\nfigure = "latency_ms:total:p50"\nmax_regression = "10%"\n')
    code = main(["gate-ab", fast, slow, "--policy", str(policy), "--rounds", "3", "--max-rounds", "9",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "sequential A/B" in out and "decided at look 3 of 3 (9 rounds" in out
    assert main(["gate-ab", fast, slow, "--policy", str(policy), "--rounds", "3", "--max-rounds", "2"]) == 2


def test_markdown_never_says_pass_while_a_figure_is_inconclusive(tmp_path):
    noisy_base = _latency([100, 60, 140, 80, 120, 90])
    noisy_cand = _latency([120, 70, 170, 95, 145, 105])  # +20 %: neither within 10 % nor beyond, shown
    result = compare(_summary({"latency_ms:total:p50": noisy_base}), _summary({"latency_ms:total:p50": noisy_cand}),
                     Policy(rule=[Rule(figure="*", max_regression="10%")]))
    text = markdown(result)
    assert result.exit_code == 0 and "INCONCLUSIVE" in text.splitlines()[0] and "PASS" not in text.splitlines()[0]
    assert "90% CI" in text and "more timed calls per side" in text
    strict = Policy(inconclusive="fail", rule=[Rule(figure="*", max_regression="10%")])
    failing = compare(_summary({"latency_ms:total:p50": noisy_base}), _summary({"latency_ms:total:p50": noisy_cand}),
                      strict)
    assert failing.exit_code == 3
    junit(failing, tmp_path / "j.xml")
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "1"
    junit(result, tmp_path / "w.xml")
    assert ET.parse(tmp_path / "w.xml").getroot().get("skipped") == "1"


def test_a_quality_figure_is_matched_by_identity_when_its_name_differs(tmp_path):
    """A run scored plainly and under a protocol names its two KL figures kl_softmax:pann#<id>;
    a candidate scored only plainly names its one kl_softmax:pann. The gate matches the plain
    pair by stem, embedder id and reference, and calls only the protocol figure missing."""
    from harness.gate.compare import compare
    from harness.gate.policy import load_policy

    def kl(value, embedder_id):
        samples = [value + 0.001 * i for i in range(8)]
        return Figure(value, "lower", "", "difference", 8, samples=samples, keys=[str(i) for i in range(8)],
                      reference_id="ref1", embedder_id=embedder_id)

    base = _summary({"kl_softmax:pann#aaaa": kl(0.5, "pann-aaaa"), "kl_softmax:pann#bbbb": kl(0.7, "pann-bbbb")})
    policy = load_policy(_policy(tmp_path, '[[rule]]\nfigure = "kl_softmax:*"\nmax_regression = "10%"\n'))
    result = compare(base, _summary({"kl_softmax:pann": kl(0.5, "pann-aaaa")}), policy)
    assert {v.figure: v.status for v in result.verdicts} == {"kl_softmax:pann#aaaa": "pass",
                                                            "kl_softmax:pann#bbbb": "missing"}
    # the plain name with another embedder is neither: both baseline figures are missing
    other = compare(base, _summary({"kl_softmax:pann": kl(0.5, "pann-cccc")}), policy)
    assert {v.status for v in other.verdicts} == {"missing"}
