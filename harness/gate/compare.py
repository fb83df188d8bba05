"""Verdicts: a candidate summary against a baseline summary under a policy.

A figure fails only when its regression is larger than the rule allows AND (unless the rule
says ``significance = false``) a one-sided test at ``alpha = 1 - confidence`` says that the
candidate is worse than the baseline *moved by the allowance* (e.g. 10 % slower): the null
hypothesis is "the regression is at most what the policy allows", so noise alone, and even a
real change within the allowance, fails a pull request in at most alpha of cases. The test is
the strongest the data allow:

1. paired observations (same keys on both sides: per-sample CLAP scores of the same prompts and
   seeds, or the rounds of an interleaved A/B session): Wilcoxon signed-rank test on log ratios
   for latency-like figures, paired bootstrap of the mean difference for the rest;
2. a baseline saved from 3 or more runs: the candidate's value against the spread of the
   baseline's per-run values (one-sided t prediction test, on logs for latency-like figures),
   so drift between runs is not mistaken for a regression;
3. unpaired observations (per-call latencies): Mann-Whitney U;
4. confidence intervals only (FAD, KAD): normal approximation from the two intervals;
5. mean, standard deviation and n (pytest-benchmark without saved data): Welch's t-test;
6. nothing (one number, e.g. a memory peak): the threshold alone, and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import scipy.stats

from harness.gate.policy import Policy, Rule
from harness.gate.summary import Figure, Summary
from harness.metrics.bootstrap import paired_bootstrap

Status = Literal["pass", "improved", "regression", "missing", "incomparable"]
FAILING: tuple[Status, ...] = ("regression", "missing")


class GateError(ValueError):
    """The two summaries cannot be compared (e.g. different environments); exit 2."""


@dataclass
class Verdict:
    """The judgement of one figure of one cell."""

    cell: str
    label: str
    figure: str
    status: Status
    baseline: float | None = None
    candidate: float | None = None
    change: float | None = None  # signed, positive = worse; relative when the rule is
    allowed: str = ""
    test: str = ""
    p_value: float | None = None
    unit: str = ""


@dataclass
class GateResult:
    """All verdicts, plus what was compared and what was not gated."""

    verdicts: list[Verdict]
    environment_differences: list[str] = field(default_factory=list)
    ungated: int = 0
    new_cells: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 pass, 1 regression (or a baseline cell missing), 2 a figure that cannot be compared."""
        if any(v.status == "incomparable" for v in self.verdicts):
            return 2
        return 1 if any(v.status in FAILING for v in self.verdicts) else 0


def environment_differences(baseline: Summary, candidate: Summary) -> list[str]:
    """'key: baseline != candidate' for every environment key that differs."""
    b, c = baseline.environment_key(), candidate.environment_key()
    return [f"{k}: {b.get(k)} != {c.get(k)}" for k in sorted(set(b) | set(c)) if b.get(k) != c.get(k)]


def compare(baseline: Summary, candidate: Summary, policy: Policy, allow_env_mismatch: bool = False) -> GateResult:
    """Judge every gated figure of every baseline cell."""
    diffs = environment_differences(baseline, candidate)
    if diffs and not allow_env_mismatch:
        raise GateError(f"baseline and candidate were measured in different environments ({'; '.join(diffs)}); "
                        "save a baseline in this environment, or pass --allow-env-mismatch to compare anyway")
    result = GateResult([], diffs, new_cells=sorted(set(candidate.cells) - set(baseline.cells)))
    for key, base_cell in baseline.cells.items():
        cand_cell = candidate.cells.get(key)
        for name, base_fig in sorted(base_cell.figures.items()):
            rule = policy.rule_for(name)
            if rule is None:
                result.ungated += 1
            elif cand_cell is None or name not in cand_cell.figures:
                where = "cell" if cand_cell is None else "figure"
                result.verdicts.append(Verdict(key, base_cell.label, name, "missing", base_fig.value,
                                               allowed=rule.describe(), test=f"{where} not in candidate"))
            else:
                result.verdicts.append(judge(key, base_cell.label, name, base_fig, cand_cell.figures[name],
                                             rule, policy.alpha))
    return result


def judge(cell: str, label: str, name: str, base: Figure, cand: Figure, rule: Rule, alpha: float) -> Verdict:
    """Verdict on one figure: regression beyond the allowance and significant, or not."""
    verdict = Verdict(cell, label, name, "incomparable", base.value, cand.value, allowed=rule.describe(),
                      unit=base.unit)
    better = rule.better or base.better
    problem = _incomparable(base, cand, better)
    if problem:
        verdict.test = problem
        return verdict
    worse = (cand.value - base.value) * (1 if better == "lower" else -1)
    verdict.change = _relative(worse, base.value) if rule.relative is not None else worse
    limit = rule.relative if rule.relative is not None else rule.absolute
    verdict.test, verdict.p_value = significance(allowance(base, rule, better), cand, better)
    significant = verdict.p_value is None or verdict.p_value < alpha
    if verdict.change > limit and (significant or not rule.significance):
        verdict.status = "regression"
    elif verdict.change < 0 and _better_beyond_doubt(base, cand, better, alpha):
        verdict.status = "improved"
    else:
        verdict.status = "pass"
    return verdict


def allowance(base: Figure, rule: Rule, better: str) -> Figure:
    """The baseline moved by the allowed regression: the boundary the candidate is tested against."""
    worse_sign = 1.0 if better == "lower" else -1.0
    factor, delta = 1.0, 0.0
    if rule.relative is not None and base.scale == "ratio":  # latency-like: a multiplicative allowance
        factor = 1.0 + worse_sign * rule.relative
    elif rule.relative is not None:
        delta = worse_sign * rule.relative * abs(base.value)
    else:
        delta = worse_sign * rule.absolute

    def move(x: float | None) -> float | None:
        return None if x is None else x * factor + delta

    return replace(base, value=move(base.value), ci_low=move(base.ci_low), ci_high=move(base.ci_high),
                   std=None if base.std is None else base.std * factor,
                   samples=None if base.samples is None else [move(x) for x in base.samples],
                   run_values=None if base.run_values is None else [move(x) for x in base.run_values])


def _better_beyond_doubt(base: Figure, cand: Figure, better: str, alpha: float) -> bool:
    _, p_worse = significance(base, cand, better)
    return p_worse is not None and p_worse > 1 - alpha


def _incomparable(base: Figure, cand: Figure, better: str | None) -> str:
    if better is None:
        return "no direction known for this figure: set better = \"lower\" or \"higher\" in its rule"
    if base.value is None or cand.value is None:
        return "no value on one side"
    if base.reference_id != cand.reference_id:
        return f"scored against different references ({base.reference_id} vs {cand.reference_id}); score both against the same"
    return ""


def _relative(worse: float, base: float) -> float:
    if base == 0:
        return 0.0 if worse == 0 else math.copysign(math.inf, worse)
    return worse / abs(base)


def significance(base: Figure, cand: Figure, better: str) -> tuple[str, float | None]:
    """(test description, one-sided p-value that the candidate is worse than ``base``), or (reason, None)."""
    alternative = "greater" if better == "lower" else "less"  # candidate minus baseline, if worse
    paired = _pairs(base, cand)
    if paired is not None:
        return _paired_test(*paired, base.scale, alternative)
    if base.run_values is not None and len(base.run_values) >= 3 and np.ptp(base.run_values) > 0:
        return _prediction_test(np.asarray(base.run_values), cand.value, base.scale, alternative)
    if _enough(base.samples) and _enough(cand.samples):
        b, c = np.asarray(base.samples), np.asarray(cand.samples)
        if np.ptp(np.concatenate([b, c])) == 0:
            return f"Mann-Whitney U (n={b.size}/{c.size}, all equal)", 1.0
        p = scipy.stats.mannwhitneyu(c, b, alternative=alternative).pvalue
        return f"Mann-Whitney U (n={b.size}/{c.size})", float(p)
    if _has_ci(base) and _has_ci(cand):
        return _ci_test(base, cand, alternative)
    if base.std is not None and cand.std is not None and (base.n or 0) > 1 and (cand.n or 0) > 1:
        p = scipy.stats.ttest_ind_from_stats(cand.value, cand.std, cand.n, base.value, base.std, base.n,
                                             equal_var=False, alternative=alternative).pvalue
        return f"Welch t (n={base.n}/{cand.n})", float(p) if np.isfinite(p) else 1.0
    return "no uncertainty data: threshold alone", None


def _enough(samples: list[float] | None) -> bool:
    return samples is not None and len(samples) >= 2


def _has_ci(f: Figure) -> bool:
    return f.ci_low is not None and f.ci_high is not None


def _pairs(base: Figure, cand: Figure) -> tuple[np.ndarray, np.ndarray] | None:
    if not (base.keys and cand.keys and _enough(base.samples) and _enough(cand.samples)):
        return None
    b = dict(zip(base.keys, base.samples))
    c = dict(zip(cand.keys, cand.samples))
    common = sorted(set(b) & set(c))
    if len(common) < 2:
        return None
    return np.array([b[k] for k in common]), np.array([c[k] for k in common])


def _paired_test(b: np.ndarray, c: np.ndarray, scale: str, alternative: str) -> tuple[str, float]:
    if scale == "ratio" and np.all(b > 0) and np.all(c > 0):
        d = np.log(c) - np.log(b)
        if np.all(d == 0):
            return f"Wilcoxon signed-rank on log ratios (n={d.size}, all equal)", 1.0
        p = scipy.stats.wilcoxon(d, alternative=alternative).pvalue
        return f"Wilcoxon signed-rank on log ratios (n={d.size}, median ratio {np.exp(np.median(d)):.3f})", float(p)
    res = paired_bootstrap(c, b, n_resamples=2999, method="percentile")
    # The two-sided bootstrap p halves to a one-sided one when the shift points the tested way.
    bad = res.mean_diff > 0 if alternative == "greater" else res.mean_diff < 0
    p = res.p_value / 2 if bad else 1 - res.p_value / 2
    return f"paired bootstrap (n={res.n}, mean diff {res.mean_diff:+.4g})", float(min(1.0, p))


def _prediction_test(runs: np.ndarray, value: float, scale: str, alternative: str) -> tuple[str, float]:
    # Is the candidate beyond what one more baseline run would plausibly give? t with k-1 df.
    if scale == "ratio" and np.all(runs > 0) and value > 0:
        runs, value = np.log(runs), math.log(value)
    k = runs.size
    t = (value - runs.mean()) / (runs.std(ddof=1) * math.sqrt(1 + 1 / k))
    p = scipy.stats.t.sf(t, k - 1) if alternative == "greater" else scipy.stats.t.cdf(t, k - 1)
    return f"prediction t vs {k} baseline runs", float(p)


def _ci_test(base: Figure, cand: Figure, alternative: str) -> tuple[str, float]:
    # Each interval gives a standard error (normal approximation at its own confidence).
    def se(f: Figure) -> float:
        z = scipy.stats.norm.ppf(0.5 + (f.confidence or 0.95) / 2)
        return (f.ci_high - f.ci_low) / (2 * z)

    diff = cand.value - base.value if alternative == "greater" else base.value - cand.value
    spread = math.hypot(se(base), se(cand))
    if spread == 0:
        p = 0.0 if diff > 0 else 1.0  # exact figures: any change is real
    else:
        p = float(scipy.stats.norm.sf(diff / spread))
    return f"normal approx. from the CIs (n={base.n}/{cand.n})", p


def summarize_counts(result: GateResult) -> dict[str, Any]:
    """Counts of verdicts by status."""
    counts: dict[str, Any] = {}
    for v in result.verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return counts
